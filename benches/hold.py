#!/usr/bin/env python3
"""Hold 100,000 (or 1,000,000) idle WebSocket connections on this machine with the heartbeat
running.

One process may not have that many descriptors where the hard RLIMIT_NOFILE is lower and
cannot be raised (20,000 on the machine of BENCHMARKS.md). So this runs as many `wsloop serve`
processes as the limit needs, all on one port with --reuse-port (the kernel spreads the
connections among them, as in deploy/wsloop.service), and as many `wsloop-bench idle`
processes, each from its own four 127.0.x.y source addresses. Each server also listens on a
port of its own, on which its /metrics is scraped every 2 s: the connections held, summed over
the servers, and heartbeat timeouts. RSS per connection is read from /proc/PID/status.

    python3 benches/hold.py                        # 100,000 connections, ping every 5 s, 30 s
    python3 benches/hold.py --connections 20000 --hold 10s --processes 2

Builds nothing: run `cargo build --release` first. Only 127.0.0.0/8 is ever a target.
Prints one JSON object on stdout (also written to --out) and exits 1 unless every connection
was held through the hold with no heartbeat timeout and no client error. Besides the server
RSS per connection it reports the kernel's memory per connection (Slab and sockets' buffer
pages from /proc/meminfo and /proc/net/sockstat, before and at the peak: both ends of every
connection are on this machine), the set-up rate, and the servers' CPU while only the
heartbeat runs.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import re
import resource
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (the same process handling, bench runner and server flags)

LISTENING_LINE = re.compile(r"listening on ws://(127\.\d+\.\d+\.\d+):(\d+)/")


def kernel_memory() -> dict:
    """The kernel's memory that grows with sockets: slab (socket, inode, file, TCP structs)
    and the pages the TCP stack holds for socket buffers."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        if key in ("MemAvailable", "Slab", "SUnreclaim", "SReclaimable"):
            info[key + "_kb"] = int(value.split()[0])
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            parts = line.split()[1:]
            tcp = dict(zip(parts[::2], map(int, parts[1::2])))
            info["tcp_inuse"] = tcp.get("inuse", 0)
            info["tcp_mem_kb"] = tcp.get("mem", 0) * 4
    return info


def timeline_point(sample: dict, start: float) -> dict:
    """One 2-second sample, summed over the servers, in a few fields: what was open, what
    closed and why, what was refused, and the servers' CPU time so far."""
    def labelled(prefix: str) -> dict:
        return {k[len(prefix):].split('"')[1]: int(v) for k, v in sample.items()
                if k.startswith(prefix) and v}
    return {
        "t": round(sample["t"] - start, 1),
        "open": int(sample.get("wsloop_open_connections", 0)),
        "tcp": int(sample.get("wsloop_tcp_connections", 0)),
        "accepted": int(sample.get("wsloop_accepted_total", 0)),
        "heartbeat_timeouts": int(sample.get("wsloop_heartbeat_timeouts_total", 0)),
        "closes": labelled("wsloop_closes_total{"),
        "rejections": labelled("wsloop_handshake_rejections_total{"),
        "server_cpu_s": round(sample["cpu_ticks"] / compare.os.sysconf("SC_CLK_TCK"), 1),
    }


def start_server(cmd: list, logdir: Path, index: int) -> tuple:
    """Starts one server; returns (process, shared port, metrics port)."""
    server = compare.Server(f"serve-{index}", cmd, [], logdir)
    lines = LISTENING_LINE.findall(server.out_path.read_text())
    deadline = time.monotonic() + 10
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
        lines = LISTENING_LINE.findall(server.out_path.read_text())
    if len(lines) < 2:
        server.stop()
        raise RuntimeError(f"server {index} did not print both listening lines")
    return server, int(lines[0][1]), int(lines[1][1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=100_000)
    p.add_argument("--processes", type=int, default=0,
                   help="server (and client) processes; default: as few as the limit allows")
    p.add_argument("--hold", type=compare.parse_duration, default=compare.parse_duration("30s"))
    p.add_argument("--ping-interval", default="5s")
    p.add_argument("--settle", type=compare.parse_duration, default=None,
                   help="from the clients' start to the hold, which all of them measure together "
                        "(--window-start); every set-up must be over by then (default: 1 s "
                        "per 4,000 connections, at least 2 s)")
    p.add_argument("--out", type=Path, default=compare.RESULTS / "hold.json")
    args = p.parse_args()

    settle = args.settle if args.settle is not None else max(2.0, args.connections / 4000)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_process = hard - compare.FD_SPARE
    processes = args.processes or math.ceil(args.connections * 1.1 / per_process)
    share = [args.connections // processes + (i < args.connections % processes)
             for i in range(processes)]
    compare.log(f"{args.connections:,} connections over {processes} server and {processes} "
                f"client processes (descriptor hard limit {hard:,})")

    atexit.register(compare.cleanup)
    signal.signal(signal.SIGTERM, compare.on_signal)
    signal.signal(signal.SIGINT, compare.on_signal)
    logdir = Path(compare.tempfile.mkdtemp(prefix="wsloop-hold-"))
    pin = compare.shutil.which("taskset") is not None and (compare.os.cpu_count() or 1) >= 2
    server_prefix = ["taskset", "-c", "1"] if pin else []
    client_prefix = ["taskset", "-c", "0"] if pin else []

    heartbeat = ["--reuse-port", "--ping-interval", args.ping_interval, "--ping-timeout",
                 "10s"]
    servers = []
    port = 0
    for i in range(processes):
        # The shared port, then a private one for this process's /metrics.
        cmd = server_prefix + compare.serve_cmd(heartbeat)
        cmd[cmd.index("--listen") + 1] = f"127.0.0.1:{port}"
        cmd += ["--listen", "127.0.0.1:0"]
        server, shared, private = start_server(cmd, logdir, i)
        port = port or shared
        servers.append((server, private))
    rss_before = [compare.rss_kb(s.pid) for s, _ in servers]
    kernel_before = kernel_memory()

    samples: list[dict] = []
    halt = threading.Event()

    def poll() -> None:
        while not halt.wait(2.0):
            total: dict[str, float] = {"t": time.monotonic()}
            try:
                per = [compare.scrape_metrics(private) for _, private in servers]
            except (OSError, ValueError):
                continue
            for m in per:
                for k, v in m.items():
                    total[k] = total.get(k, 0) + v
            total["per_server"] = [m.get("wsloop_open_connections", 0) for m in per]
            total["rss_kb"] = [compare.rss_kb(s.pid) for s, _ in servers]
            total["cpu_ticks"] = sum(compare.cpu_ticks(s.pid) for s, _ in servers)
            total["kernel"] = kernel_memory()
            samples.append(total)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()

    results: list[dict] = [{} for _ in range(processes)]

    def client(i: int) -> None:
        sources = ",".join(f"127.0.{i + 1}.{j}" for j in range(1, 5))
        # Server i holds about as many connections as client i opens (the kernel spreads
        # them evenly), so client i's RSS figure is server i's.
        bench = ["idle", "--url", f"ws://127.0.0.1:{port}/ws", "--connections", str(share[i]),
                 "--server-pid", str(servers[i][0].pid),
                 "--source-addrs", sources, "--concurrency", "100",
                 "--duration", compare.fmt_duration(args.hold),
                 # One window for all: they close together, in one storm, instead of some
                 # closing while others still hold and answer pings.
                 "--window-start", f"{window_start:.3f}",
                 # In a storm of set-ups on two cores a handshake may wait its turn for
                 # long: the set-up rate is reported, not a reason to give up.
                 "--connect-timeout", "120s",
                 "--setup-timeout", "600s",
                 # Closing a million connections at once is a storm of its own.
                 "--close-timeout", "300s"]
        results[i] = compare.run_bench(bench, client_prefix, timeout=args.hold + settle + 1200)

    clients = [threading.Thread(target=client, args=(i,)) for i in range(processes)]
    window_start = time.time() + settle
    clients_started = time.monotonic()
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    halt.set()
    poller.join()
    alive = [s.proc.poll() is None for s, _ in servers]
    for s, _ in servers:
        s.stop()

    timeline = [timeline_point(s, clients_started) for s in samples]
    summary = compare.heartbeat_summary(samples, args.connections)
    peak = max(samples, key=lambda s: s.get("wsloop_open_connections", 0), default={})
    # Every connection open: from the clients' start to the first sample that saw them all
    # (to within the 2 s between samples).
    held = [s for s in samples if s.get("wsloop_open_connections", 0) >= args.connections]
    setup_s = round(held[0]["t"] - clients_started, 1) if held else None
    # While every connection is held, the servers do nothing but the heartbeat.
    heartbeat_cpu = None
    if len(held) >= 2:
        secs = held[-1]["t"] - held[0]["t"]
        cpu_s = (held[-1]["cpu_ticks"] - held[0]["cpu_ticks"]) / compare.os.sysconf("SC_CLK_TCK")
        pings = args.connections * secs / compare.parse_duration(args.ping_interval)
        heartbeat_cpu = {"window_s": round(secs, 1), "server_cpu_s": round(cpu_s, 2),
                         "cores": round(cpu_s / secs, 3) if secs else None,
                         "us_per_ping": round(cpu_s * 1e6 / pings, 2) if pings else None}
    kernel_peak = peak.get("kernel", kernel_before)
    kernel_per_connection = {
        key: round((kernel_peak.get(key, 0) - kernel_before.get(key, 0)) * 1024
                   / max(1, args.connections), 1)
        for key in ("Slab_kb", "SUnreclaim_kb", "tcp_mem_kb")}
    kernel_per_connection["MemAvailable_drop"] = round(
        (kernel_before.get("MemAvailable_kb", 0) - kernel_peak.get("MemAvailable_kb", 0)) * 1024
        / max(1, args.connections), 1)
    rss_peak = peak.get("rss_kb", rss_before)
    errors = sum(int((r.get("report") or {}).get("errors", 0)) for r in results)
    held = summary.get("max_connections_seen", 0) >= args.connections
    timeouts = summary.get("heartbeat_timeouts") or 0
    out = {
        "command": " ".join(["python3", "benches/hold.py"] + sys.argv[1:]),
        "machine": compare.machine(),
        "connections": args.connections,
        "processes": processes,
        "descriptor_hard_limit": hard,
        "ping_interval": args.ping_interval,
        "hold_s": args.hold,
        "settle_s": settle,
        "summary": summary,
        "connections_per_server_at_peak": peak.get("per_server"),
        "server_rss_kb_before": rss_before,
        "server_rss_kb_at_peak": rss_peak,
        "rss_per_connection_bytes": round((sum(rss_peak) - sum(rss_before)) * 1024
                                          / max(1, args.connections), 1),
        "setup_s": setup_s,
        "setup_per_s": round(args.connections / setup_s) if setup_s else None,
        "heartbeat_cpu": heartbeat_cpu,
        "kernel_before": kernel_before,
        "kernel_at_peak": kernel_peak,
        "kernel_bytes_per_connection": kernel_per_connection,
        "servers_alive_at_end": alive,
        "timeline": timeline,
        "client_exits": [r.get("exit") for r in results],
        "client_reports": [r.get("report") for r in results],
        "client_stderr_tail": [r.get("stderr", "")[-400:] for r in results],
        "ok": held and timeouts == 0 and errors == 0 and all(alive)
        and all(r.get("exit") == 0 for r in results),
        "errors": errors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    compare.log(f"held {summary.get('max_connections_seen', 0):,.0f} at most "
                f"(goal {args.connections:,}), all held {summary.get('held_all_s')} s, "
                f"heartbeat timeouts {timeouts:.0f} "
                f"({summary.get('heartbeat_timeouts_while_held', 0):.0f} while all were held), "
                f"RSS/connection "
                f"{out['rss_per_connection_bytes']} B, client exits {out['client_exits']}")
    compare.log(f"wrote {args.out}")
    print(json.dumps({k: out[k] for k in ("connections", "processes", "summary",
                                          "rss_per_connection_bytes", "setup_per_s",
                                          "heartbeat_cpu", "kernel_bytes_per_connection",
                                          "ok")}))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
