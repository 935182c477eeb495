#!/usr/bin/env python3
"""wss:// side by side (BENCHMARKS.md, "TLS"): wsloop's own TLS against plain ws://, a
tokio-rustls + tokio-tungstenite peer, and nginx terminating TLS in front of wsloop.

Runs with the machinery of compare.py (fresh server per run on 127.0.0.1 port 0, servers in
alternation with the order rotated each round, `wsloop-bench ... --json --server-pid PIDS`,
server and client pinned to CPUs 1 and 0, a wait for a quiet machine before each scenario,
medians with their spread). The certificate is an ECDSA P-256 one made by `openssl` for the
run; the load generator does not check it (`--insecure`: its checking costs the client, not
the server). For "nginx TLS -> wsloop", benches/tls_front.py runs nginx as one process in
front of a plain `wsloop echo`, and server CPU and memory are the sum of both processes.

- secho16, secho4k: echo of 16 B and 4 KiB, 100 connections x 1 in flight: server CPU per
  message.
- sconnect: a storm of connections, 100 at a time: TCP + TLS + WebSocket handshakes per
  second and server CPU per handshake (each connection closes after its upgrade).
- sidle: 5,000 idle connections: server RSS per connection.

    python3 benches/compare_tls.py                  # everything, 3 rounds (about 10 minutes)
    python3 benches/compare_tls.py --rounds 1 --duration 2s --scenarios secho16

Writes benches/results/tls.json and prints the markdown tables. Python 3.11, standard library
only; needs openssl and nginx (`/usr/sbin/nginx`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as c  # noqa: E402  (the shared machinery, next to this file)

ALL = "secho16,secho4k,sconnect,sidle"
FRONT = c.ROOT / "benches" / "tls_front.py"


def certificate() -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for 127.0.0.1, made for this run."""
    d = Path(tempfile.mkdtemp(prefix="wsloop-compare-tls-"))
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def servers(cert: Path, key: Path) -> dict[str, list]:
    echo = [c.WSLOOP, "echo", "--listen", "127.0.0.1:0", "--log-level", "warn",
            "--max-connections-per-address", "1000000", "--max-connections", "1000000",
            "--handshakes-per-second", "unlimited"]
    tls = ["--tls-cert", cert, "--tls-key", key]
    return {
        "wsloop ws://": echo,
        "wsloop wss://": echo + tls,
        "tungstenite ws://": [c.PEER_BIN / "tungstenite-echo"],
        "tungstenite wss:// (tokio-rustls)": [c.PEER_BIN / "tungstenite-tls-echo"] + tls,
        "nginx TLS -> wsloop ws://": [sys.executable, FRONT, cert, key, "--"] + echo,
    }


def scenario(args, every: dict[str, list], sid: str, kind: str, title: str,
             bench: list[str], names=None) -> dict:
    chosen = {n: cmd for n, cmd in every.items() if names is None or n in names}
    timing = ["--duration", c.fmt_duration(args.duration), "--warmup",
              c.fmt_duration(args.warmup)]
    return {"id": sid, "title": title, "kind": kind, "unit": "msg", "path": "/",
            "servers": chosen,
            "extra": {n: ["--insecure"] for n in chosen if "TLS" in n or "wss" in n},
            "bench": bench + ([] if kind == "idle" else timing)}


def markdown(result: dict) -> str:
    lines = []
    columns = {
        "echo": [("server µs/msg (min–max)", "server_cpu_us_per_msg", 2),
                 ("msgs/s", "messages_per_s", 0), ("p99 µs", "latency_p99_us", 0)],
        "connect": [("handshakes/s", "handshakes_per_s", 0),
                    ("server µs/handshake (min–max)", "server_cpu_us_per_handshake", 1),
                    ("p99 µs", "latency_p99_us", 0)],
        "idle": [("server RSS per connection (min–max)", "rss_per_connection_bytes", 0)],
    }
    for s in result["scenarios"]:
        cols = columns[s["kind"]]
        lines.append(f"| {s['title']} | " + " | ".join(h for h, _, _ in cols)
                     + " | vs wsloop ws:// | clean runs |")
        lines.append("| --- |" + " ---: |" * (len(cols) + 2))
        base = s["medians"].get("wsloop ws://", {}).get(cols[0][1] if s["kind"] != "echo"
                                                       else "server_cpu_us_per_msg")
        for name, e in s["medians"].items():
            cells = []
            for _, key, digits in cols:
                cells.append(c.rng(e, key, digits) if "(min" in _ else c.fmt(e.get(key), digits))
            mine = e.get(cols[0][1])
            ratio = f"{mine / base:.2f}x" if mine and base else "-"
            lines.append(f"| {name} | " + " | ".join(cells)
                         + f" | {ratio} | {e['clean_runs']}/{e['runs']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = c.suite_arguments(__doc__, ALL, c.RESULTS / "tls.json")
    args = p.parse_args()
    if not shutil.which("openssl"):
        p.error("openssl is needed to make the run's certificate")
    cert, key = certificate()
    every = servers(cert, key)
    mine = ["wsloop ws://", "wsloop wss://"]
    suite = [
        scenario(args, every, "secho16", "echo", "echo 16 B, 100 connections x 1",
                 ["echo", "--connections", "100", "--in-flight", "1", "--size", "16"]),
        scenario(args, every, "secho4k", "echo", "echo 4 KiB, 100 connections x 1",
                 ["echo", "--connections", "100", "--in-flight", "1", "--size", "4096"]),
        scenario(args, every, "sconnect", "connect", "handshakes, 100 at a time",
                 ["connect", "--concurrency", "100"]),
        scenario(args, every, "sidle", "idle", "idle, 5,000 connections",
                 ["idle", "--connections", "5000", "--source-count", "4", "--concurrency",
                  "200", "--duration", "3s", "--warmup", "2s", "--setup-timeout", "120s",
                  "--close-timeout", "20s"],
                 names=mine + ["tungstenite wss:// (tokio-rustls)"]),
    ]
    unknown = set(args.scenarios.split(",")) - {s["id"] for s in suite}
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)} (known: {ALL})")
    try:
        print(markdown(c.run_suite(args, suite, "compare_tls.py")))
    finally:
        shutil.rmtree(cert.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
