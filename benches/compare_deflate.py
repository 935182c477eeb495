#!/usr/bin/env python3
"""permessage-deflate side by side (BENCHMARKS.md, "Compression"): compression on and off.

Runs with the machinery of compare.py (fresh server per run on 127.0.0.1 port 0, servers in
alternation with the order rotated each round, `wsloop-bench ... --json --server-pid PID`,
server and client pinned to CPUs 1 and 0, a wait for a quiet machine before each scenario,
medians with their spread):

- zecho16, zecho4k, zecho64k: echo of JSON-like text (`--json-text`), 100 connections x 1 in
  flight, on wsloop echo, Node ws (benches/peers/node/ws-echo.js) and Python websockets
  (tests/interop/server.py), each with compression off and on (`--deflate` for the client;
  every server with its own defaults: wsloop and the client compress from 64 bytes at level
  6, ws from 1 KiB, websockets everything with 4 KiB windows, all with context takeover;
  and wsloop at level 1): server CPU per message and bytes on the wire per message each way.
- zidle, zidle-warm: server RSS per idle connection on wsloop echo, 5,000 connections:
  without permessage-deflate, negotiated without context takeover (both ways), and with it;
  zidle-warm holds each connection after one 200-byte echo, so that what context takeover
  keeps (an inflater and a compressor) is in the figure.
- zbroadcast: wsloop serve, 1 publisher (chat, 512-byte content) to 10,000 subscribers that
  all negotiated permessage-deflate: without it; with `--deflate-no-context-takeover` (one
  compression per broadcast, shared by every receiver); with context takeover (one
  compression per receiver). /metrics `wsloop_broadcast_encodes_total` counts the
  compressions.

    python3 benches/compare_deflate.py                 # everything, 3 rounds (about 40 min)
    python3 benches/compare_deflate.py --rounds 1 --duration 2s --scenarios zecho4k

Writes benches/results/deflate.json and prints the markdown tables. Python 3.11, standard
library only; needs node with benches/peers/node installed (`npm ci`) and Python websockets.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as c  # noqa: E402  (the shared machinery, next to this file)

PYTHON_PEER = c.ROOT / "tests" / "interop" / "server.py"
ALL = "zecho16,zecho4k,zecho64k,zidle,zidle-warm,zbroadcast"


def echo_scenario(args, size: int, label: str) -> dict:
    echo = [c.WSLOOP, "echo", "--listen", "127.0.0.1:0", "--log-level", "warn",
            "--max-connections-per-address", "1000000"]
    node = ["node", c.NODE_DIR / "ws-echo.js"]
    python = [sys.executable, PYTHON_PEER]
    servers = {
        "wsloop": echo,
        "wsloop deflate": echo + ["--deflate"],
        "wsloop deflate level 1": echo + ["--deflate", "--deflate-level", "1"],
        "node ws": node,
        "node ws deflate": node + ["--deflate"],
        "python websockets": python + ["off"],
        "python websockets deflate": python + ["default"],
    }
    timing = ["--duration", c.fmt_duration(args.duration), "--warmup",
              c.fmt_duration(args.warmup)]
    return {"id": f"zecho{label}", "title": f"echo {label} JSON-like, 100 connections x 1",
            "kind": "echo", "unit": "msg", "path": "/", "servers": servers,
            "extra": {name: ["--deflate"] for name in servers if " deflate" in name},
            "bench": ["echo", "--connections", "100", "--in-flight", "1", "--size", str(size),
                      "--json-text"] + timing}


def idle_scenario(warm: bool) -> dict:
    echo = [c.WSLOOP, "echo", "--listen", "127.0.0.1:0", "--log-level", "warn",
            "--max-connections-per-address", "1000000", "--max-connections", "1000000"]
    servers = {
        "wsloop, no deflate": echo,
        "wsloop deflate, no context takeover": echo + ["--deflate",
                                                       "--deflate-no-context-takeover"],
        "wsloop deflate, context takeover": echo + ["--deflate"],
    }
    first = ["--first-message", "200"] if warm else []
    return {"id": "zidle-warm" if warm else "zidle",
            "title": "idle, 5,000 connections" + (", each after one 200-byte echo"
                                                  if warm else ""),
            "kind": "idle", "path": "/", "servers": servers,
            "extra": {"wsloop deflate, no context takeover":
                      ["--deflate", "--deflate-no-context-takeover"],
                      "wsloop deflate, context takeover": ["--deflate"]},
            "bench": ["idle", "--connections", "5000", "--source-count", "4",
                      "--concurrency", "200", "--duration", "3s", "--warmup", "2s",
                      "--setup-timeout", "120s", "--close-timeout", "20s"] + first}


def broadcast_scenario(args) -> dict:
    servers = {
        "wsloop serve, no deflate": c.serve_cmd([]),
        "wsloop serve deflate, shared (no context takeover)":
            c.serve_cmd(["--deflate", "--deflate-no-context-takeover"]),
        "wsloop serve deflate, per receiver (context takeover)": c.serve_cmd(["--deflate"]),
    }
    timing = ["--duration", c.fmt_duration(args.duration), "--warmup",
              c.fmt_duration(args.warmup)]
    return {"id": "zbroadcast", "title": "broadcast: 1 publisher (chat, 512 B) to 10,000 "
                                         "subscribers",
            "kind": "broadcast", "unit": "frame", "path": "/ws", "servers": servers,
            "extra": {name: ["--via", "chat"] + (["--deflate"] if "deflate" in name else [])
                      for name in servers},
            "bench": ["broadcast", "--publishers", "1", "--subscribers", "10000",
                      "--in-flight", "1", "--size", "512", "--source-count", "4",
                      "--concurrency", "200", "--setup-timeout", "180s"] + timing}


def markdown(result: dict) -> str:
    lines = []
    for s in result["scenarios"]:
        m = s["medians"]
        if s["kind"] == "echo":
            lines += [f"| {s['title']} | server µs/msg (min–max) | vs off | msgs/s "
                      "| wire B/msg in / out | saved | clean runs |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
            for name, e in m.items():
                off = m.get(name.split(" deflate")[0], {})
                cpu, base = e.get("server_cpu_us_per_msg"), off.get("server_cpu_us_per_msg")
                ratio = f"{cpu / base:.2f}x" if cpu and base and " deflate" in name else ""
                w_in, w_off = e.get("wire_bytes_in_per_msg"), off.get("wire_bytes_in_per_msg")
                saved = (f"{100 * (1 - w_in / w_off):.0f}%" if w_in and w_off
                         and " deflate" in name else "")
                lines.append(f"| {name} | {c.rng(e, 'server_cpu_us_per_msg', 2)} | {ratio} | "
                             f"{c.fmt(e.get('messages_per_s'), 0)} | "
                             f"{c.fmt(w_in, 0)} / {c.fmt(e.get('wire_bytes_out_per_msg'), 0)} "
                             f"| {saved} | {e['clean_runs']}/{e['runs']} |")
        elif s["kind"] == "idle":
            lines += [f"| {s['title']} | server RSS per connection (min–max) | clean runs |",
                      "| --- | ---: | ---: |"]
            for name, e in m.items():
                lines.append(f"| {name} | {c.rng(e, 'rss_per_connection_bytes', 0)} B | "
                             f"{e['clean_runs']}/{e['runs']} |")
        else:
            lines += [f"| {s['title']} | delivered frames/s | server µs/frame (min–max) | "
                      "wire B/frame in | encodes per message received | clean runs |",
                      "| --- | ---: | ---: | ---: | ---: | ---: |"]
            for name, e in m.items():
                per = "-"
                for sm in e.get("server_metrics", [])[-1:]:
                    got = sm.get("wsloop_messages_received_total")
                    enc = sm.get("wsloop_broadcast_encodes_total")
                    if got and enc is not None:
                        per = f"{enc / got:,.1f}"
                lines.append(f"| {name} | {c.fmt(e.get('delivered_per_s'), 0)} | "
                             f"{c.rng(e, 'server_cpu_us_per_frame', 3)} | "
                             f"{c.fmt(e.get('wire_bytes_in_per_frame'), 0)} | {per} | "
                             f"{e['clean_runs']}/{e['runs']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = c.suite_arguments(__doc__, ALL, c.RESULTS / "deflate.json")
    args = p.parse_args()
    every = [echo_scenario(args, 16, "16"), echo_scenario(args, 4096, "4k"),
             echo_scenario(args, 65536, "64k"), idle_scenario(False), idle_scenario(True),
             broadcast_scenario(args)]
    unknown = set(args.scenarios.split(",")) - {s["id"] for s in every}
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)} (known: {ALL})")
    if not shutil.which("node"):
        p.error("node is needed for the Node ws peer")
    print(markdown(c.run_suite(args, every, "compare_deflate.py")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
