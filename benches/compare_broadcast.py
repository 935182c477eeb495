#!/usr/bin/env python3
"""Broadcast at the kernel's pace, and echo latency under a steady load, side by side
(BENCHMARKS.md, "Broadcast at the kernel's pace"; issue 17).

Runs with the machinery of compare.py (fresh server per run on 127.0.0.1 port 0, servers in
alternation with the order rotated each round, `wsloop-bench ... --json --server-pid PID`,
server and client pinned to CPUs 1 and 0, a wait for a quiet machine before each scenario,
medians with their spread):

- bcast1, bcast16: one publisher, 1 and 16 messages in flight, 64-byte content, to 10,000
  subscribers, on `wsloop broadcast`, `wsloop serve` (the chat path, `--via chat`: every
  connection; and the publish path, `--via publish`: a channel's subscribers), the
  raw-broadcast ceiling (benches/peers: a mio loop writing one pre-encoded buffer to every
  socket, no WebSocket rules) and tokio-tungstenite's broadcast peer. Server CPU per delivered
  frame, delivered frames/s, publish-to-receive p50 / p99 / p99.9, and the client's CPU share
  (a client near one core was the bound, not the server).
- chatroom: 100 publishers at 10 messages/s each (`--rate 10`, spread over the interval, at
  most 4 unacknowledged each) to the same 10,000 subscribers: 10.1 million deliveries per
  second offered, more than one core delivers, so the in-flight bound holds the publishers
  back and the latency is the queue's.
- latency: echo of 16 bytes on 10,000 connections at 1 message per second each (`echo
  --rate 1`), on wsloop echo, fastwebsockets and Node ws: round-trip p50 / p99 / p99.9.

    python3 benches/compare_broadcast.py                     # everything, 3 rounds
    python3 benches/compare_broadcast.py --rounds 1 --duration 2s --scenarios bcast16

Writes benches/results/broadcast.json and prints the markdown tables; benches/guard.py reads
its medians as the baseline. Python 3.11, standard library only.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as c  # noqa: E402  (the shared machinery, next to this file)

ALL = "bcast1,bcast16,chatroom,latency"
SUBSCRIBERS = 10_000
# Opening 10,000 connections from four source addresses, 200 at a time.
SETUP = ["--source-count", "4", "--concurrency", "200", "--setup-timeout", "120s"]
# The ceiling every broadcast server is judged against.
CEILING = "raw-broadcast"


def broadcast_servers() -> tuple[dict, dict, dict]:
    """The broadcast servers, the path each serves, and the load generator's flags for each."""
    plain = [c.WSLOOP, "broadcast", "--listen", "127.0.0.1:0", "--log-level", "warn",
             "--max-connections", "1000000", "--max-connections-per-address", "1000000"]
    servers = {
        "wsloop broadcast": plain,
        "wsloop serve (chat)": c.serve_cmd([]),
        "wsloop serve (publish)": c.serve_cmd([]),
        CEILING: [c.PEER_BIN / "raw-broadcast"],
        "tokio-tungstenite": [c.PEER_BIN / "tungstenite-broadcast"],
    }
    paths = {name: "/ws" if "serve" in name else "/" for name in servers}
    extra = {name: ["--protocol", "raw"] for name in servers if "serve" not in name}
    extra["wsloop serve (chat)"] = ["--via", "chat"]
    extra["wsloop serve (publish)"] = ["--via", "publish"]
    return servers, paths, extra


def scenarios(args, node_ok: bool) -> list[dict]:
    timing = ["--duration", c.fmt_duration(args.duration), "--warmup",
              c.fmt_duration(args.warmup)]
    servers, paths, extra = broadcast_servers()
    out = []
    for in_flight in (1, 16):
        out.append({
            "id": f"bcast{in_flight}", "kind": "broadcast", "unit": "frame",
            "title": f"broadcast: 1 publisher, {in_flight} in flight, to {SUBSCRIBERS:,} "
                     "subscribers, 64 B",
            "servers": servers, "paths": paths, "extra": extra,
            "bench": ["broadcast", "--publishers", "1", "--subscribers", str(SUBSCRIBERS),
                      "--in-flight", str(in_flight), "--size", "64"] + SETUP + timing})
    out.append({
        "id": "chatroom", "kind": "broadcast", "unit": "frame",
        "title": f"chat room: 100 publishers at 10 msg/s each, to {SUBSCRIBERS:,} subscribers",
        "servers": servers, "paths": paths, "extra": extra,
        "bench": ["broadcast", "--publishers", "100", "--subscribers", str(SUBSCRIBERS),
                  "--in-flight", "4", "--rate", "10", "--size", "64"] + SETUP + timing})
    echo = {
        "wsloop": [c.WSLOOP, "echo", "--listen", "127.0.0.1:0", "--log-level", "warn",
                   "--max-connections", "1000000", "--max-connections-per-address", "1000000"],
        "fastwebsockets": [c.PEER_BIN / "fastwebsockets-echo"],
    }
    if node_ok:
        echo["node ws"] = ["node", c.NODE_DIR / "ws-echo.js"]
    out.append({
        "id": "latency", "kind": "echo", "unit": "msg", "path": "/", "servers": echo,
        "title": "echo 16 B, 10,000 connections at 1 msg/s each",
        "bench": ["echo", "--connections", str(SUBSCRIBERS), "--rate", "1", "--in-flight", "1",
                  "--size", "16"] + SETUP + timing})
    return out


def bound(e: dict, window: str) -> str:
    """Which side was the bound: the one whose CPU share of the window is near one core."""
    share = {who: e.get(f"{who}_cpu_share") for who in ("server", "client")}
    busy = [who for who, v in share.items() if v is not None and v >= 0.85]
    cells = " / ".join("-" if v is None else f"{v:.0%}" for v in share.values())
    return f"{cells} ({' and '.join(busy) or 'neither'}{window})"


def markdown(result: dict) -> str:
    lines = []
    for s in result["scenarios"]:
        if s["kind"] == "broadcast":
            base = s["medians"].get(CEILING, {}).get("server_cpu_us_per_frame")
            lines += [f"| {s['title']} | delivered frames/s | server µs/frame (min–max) | vs "
                      f"{CEILING} | publish→receive p50 / p99 / p99.9 µs | server / client CPU "
                      "(bound) | clean runs |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
            for name, e in s["medians"].items():
                cpu = e.get("server_cpu_us_per_frame")
                vs = f"{cpu / base:.2f}x" if cpu and base else "-"
                lines.append(
                    f"| {name} | {c.fmt(e.get('delivered_per_s'), 0)} | "
                    f"{c.rng(e, 'server_cpu_us_per_frame', 3)} | {vs} | "
                    f"{c.fmt(e.get('latency_p50_us'), 0)} / {c.fmt(e.get('latency_p99_us'), 0)}"
                    f" / {c.fmt(e.get('latency_p999_us'), 0)} | {bound(e, '')} | "
                    f"{e['clean_runs']}/{e['runs']} |")
        else:
            lines += [f"| {s['title']} | round trip p50 / p99 / p99.9 µs | max µs | msgs/s | "
                      "server µs/msg | clean runs |",
                      "| --- | ---: | ---: | ---: | ---: | ---: |"]
            for name, e in s["medians"].items():
                lines.append(
                    f"| {name} | {c.fmt(e.get('latency_p50_us'), 0)} / "
                    f"{c.fmt(e.get('latency_p99_us'), 0)} / "
                    f"{c.fmt(e.get('latency_p999_us'), 0)} | "
                    f"{c.fmt(e.get('latency_max_us'), 0)} | "
                    f"{c.fmt(e.get('messages_per_s'), 0)} | "
                    f"{c.rng(e, 'server_cpu_us_per_msg', 2)} | "
                    f"{e['clean_runs']}/{e['runs']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = c.suite_arguments(__doc__, ALL, c.RESULTS / "broadcast.json")
    p.add_argument("--no-node", action="store_true")
    args = p.parse_args()
    node_ok = not args.no_node and shutil.which("node") is not None
    every = scenarios(args, node_ok)
    unknown = set(args.scenarios.split(",")) - {s["id"] for s in every}
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}: {ALL}")
    result = c.run_suite(args, every, "compare_broadcast.py")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
