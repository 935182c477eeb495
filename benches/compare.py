#!/usr/bin/env python3
"""Side-by-side benchmark of wsloop and its peer servers (benches/README.md, BENCHMARKS.md).

Builds everything, then for each scenario runs every server in alternation for --rounds
rounds, each run on a fresh server process bound to 127.0.0.1 port 0 (the port is taken from
its `listening on` line), driven by `wsloop-bench ... --json --server-pid PID`, then killed.
Reports the median per server and scenario.

    python3 benches/compare.py                  # everything, 3 rounds (about 30 minutes)
    python3 benches/compare.py --rounds 1 --duration 2s --scenarios echo16 --no-micro
    python3 benches/compare.py --list           # scenario names

Outputs: benches/results/latest.json (every run's report, the medians, the machine),
benches/results/summary.svg (bar charts), and a markdown table on stdout.

Measuring waits for a quiet machine before each scenario (1-minute load average below
--quiet-load and no cargo/rustc/test process, polled every 20 s for up to --quiet-wait), and
pins the server to CPU 1 and the client to CPU 0 with `taskset` when it exists and there are
two CPUs or more. Only 127.0.0.0/8 is ever a target. Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benches" / "peers"
NODE_DIR = PEERS / "node"
WSLOOP = ROOT / "target" / "release" / "wsloop"
# The load generator (benches/load), built by the same `cargo build --release`.
WSLOOP_BENCH = ROOT / "target" / "release" / "wsloop-bench"
PEER_BIN = PEERS / "target" / "release"
RESULTS = ROOT / "benches" / "results"

LISTENING = re.compile(r"listening on (?:(wss?)://)?(127\.\d+\.\d+\.\d+):(\d+)")
# A server made of several processes (a TLS proxy in front of wsloop) names them all: its CPU
# and memory are their sum (`wsloop-bench --server-pid A,B`).
SERVER_PIDS = re.compile(r"server pids: ([\d,]+)")
# The heartbeat scenario's goal; fewer when the descriptor limit does not allow it.
HEARTBEAT_GOAL = 100_000
# Descriptors a process keeps beyond its sockets (the bench reserves 64).
FD_SPARE = 200

ALL_SCENARIOS = "echo16,echo4k,pipelined,idle10k,heartbeat,broadcast"

# Every process this script started and has not reaped yet: killed on any exit.
LIVE: dict[int, subprocess.Popen] = {}


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def cleanup() -> None:
    for pid, proc in list(LIVE.items()):
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        LIVE.pop(pid, None)


def on_signal(signum, _frame) -> None:
    cleanup()
    sys.exit(128 + signum)


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (e.g. 500ms, 5s, 2m)")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def fmt_duration(seconds: float) -> str:
    return f"{int(round(seconds * 1000))}ms"


# ---------------------------------------------------------------------------------------
# Machine, build, quiet

def run_text(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> dict:
    cpuinfo: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            cpuinfo.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    lscpu: dict[str, str] = {}
    for line in run_text(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        lscpu[key.strip()] = value.strip()
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpuinfo.get("model name", ""),
        "cpu_family_model": f"family {cpuinfo.get('cpu family', '?')} model "
                            f"{cpuinfo.get('model', '?')}",
        "cpu_mhz": cpuinfo.get("cpu MHz"),
        "l3": lscpu.get("L3 cache"),
        "hypervisor": lscpu.get("Hypervisor vendor"),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "rustc": run_text(["rustc", "--version"]),
        "node": run_text(["node", "--version"]) if shutil.which("node") else None,
        "python": platform.python_version(),
        "nofile_limit": [soft, hard],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
    }


def build(node_ok: bool) -> None:
    log("== build")
    # The workspace's default members: the server and the load generator.
    subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release"], cwd=PEERS, check=True)
    subprocess.run(["cargo", "bench", "--bench", "codec", "--bench", "alloc", "--no-run"],
                   cwd=ROOT, check=True)
    if node_ok:
        # npm's chatter goes to stderr: stdout is the table.
        r = subprocess.run(["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund"],
                           cwd=NODE_DIR, stdout=sys.stderr)
        if r.returncode != 0:
            log("npm ci failed: the node ws peer is left out")


def busy_processes() -> list[str]:
    """Other builds or tests: processes named cargo/rustc, or test binaries of a target dir.

    Names are taken from /proc/PID/comm rather than `pgrep -f`, whose pattern would also match
    any process that merely mentions ~/.cargo in its arguments or environment.
    """
    busy = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if comm in ("cargo", "rustc", "cargo-fuzz", "rustdoc") or re.search(
            r"/target/[^ ]*/deps/", cmdline
        ):
            busy.append(f"{entry.name} {cmdline[:100]}")
    return busy


def wait_quiet(args, phase: str) -> dict:
    """Waits for a quiet machine; returns what was seen (for the record)."""
    start = time.monotonic()
    while True:
        load1 = os.getloadavg()[0]
        busy = busy_processes()
        waited = time.monotonic() - start
        if load1 < args.quiet_load and not busy:
            log(f"== {phase}: quiet (load {load1:.2f}) after {waited:.0f} s")
            return {"quiet": True, "load1": round(load1, 2), "waited_s": round(waited)}
        if waited >= args.quiet_wait:
            log(f"== {phase}: NOT quiet after {waited:.0f} s (load {load1:.2f}, {len(busy)} "
                f"build/test processes); measuring anyway")
            return {"quiet": False, "load1": round(load1, 2), "waited_s": round(waited),
                    "busy": busy[:10]}
        log(f"   {phase}: waiting for quiet: load {load1:.2f}, build/test processes: "
            f"{len(busy)} {busy[:2]}")
        time.sleep(20)


# ---------------------------------------------------------------------------------------
# Servers

def rss_kb(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError(f"no VmRSS for {pid}")


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (os.sysconf("SC_CLK_TCK") per second)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def scrape_metrics(port: int) -> dict[str, float]:
    """wsloop serve's /metrics on 127.0.0.1:PORT: each series by its name, with its labels
    as written (`wsloop_closes_total{code="1006"}`)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(wsloop_[a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


class Server:
    """A server process started fresh for one run."""

    def __init__(self, name: str, cmd: list, prefix: list[str], logdir: Path):
        self.name = name
        safe = re.sub(r"[^A-Za-z0-9]+", "-", name)
        self.out_path = logdir / f"{safe}.{time.monotonic_ns()}.out"
        self.err_path = logdir / f"{safe}.{time.monotonic_ns()}.err"
        full = prefix + [str(c) for c in cmd]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=ROOT, start_new_session=True)
        LIVE[self.proc.pid] = self.proc
        self.pid = self.proc.pid
        self.pids = [self.pid]
        self.scheme = "ws"
        self.port = self._wait_listening()

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            out = self.out_path.read_text(errors="replace")
            m = LISTENING.search(out)
            if m:
                self.scheme = m.group(1) or "ws"
                pids = SERVER_PIDS.search(out)
                if pids:
                    self.pids = [int(p) for p in pids.group(1).split(",")]
                if not m.group(2).startswith("127."):
                    raise RuntimeError(f"{self.name} listens outside 127.0.0.0/8")
                return int(m.group(3))
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} did not print its listening line: "
                           f"{self.err_path.read_text(errors='replace')[-500:]}")

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def metrics(self) -> dict[str, float]:
        return scrape_metrics(self.port)

    def stop(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        LIVE.pop(proc.pid, None)


def echo_servers(node_ok: bool) -> dict[str, list]:
    servers = {
        "wsloop": [WSLOOP, "echo", "--listen", "127.0.0.1:0", "--log-level", "warn",
                   "--max-connections", "1000000", "--max-connections-per-address", "1000000"],
        "raw-echo (bytes)": [PEER_BIN / "raw-echo", "--mode", "bytes"],
        "raw-echo (frames)": [PEER_BIN / "raw-echo", "--mode", "frames"],
        "fastwebsockets": [PEER_BIN / "fastwebsockets-echo"],
        "tokio-tungstenite": [PEER_BIN / "tungstenite-echo"],
    }
    if node_ok:
        servers["node ws"] = ["node", NODE_DIR / "ws-echo.js"]
    return servers


def serve_cmd(extra: list[str]) -> list:
    return [WSLOOP, "serve", "--listen", "127.0.0.1:0", "--log-level", "warn",
            "--max-messages-per-second", "1000000", "--handshakes-per-second", "1000000",
            "--max-connections", "1000000", "--max-connections-per-address", "1000000"] + extra


# ---------------------------------------------------------------------------------------
# Scenarios

def scenarios(args, node_ok: bool, heartbeat_n: int) -> list[dict]:
    d, w = fmt_duration(args.duration), fmt_duration(args.warmup)
    timing = ["--duration", d, "--warmup", w]
    echo = echo_servers(node_ok)
    # The bare TCP echo sends the client's masked frames back as they came.
    reflect = {"raw-echo (bytes)": ["--accept-masked"]}
    return [
        {"id": "echo16", "title": "echo 16 B, 100 connections x 1 in flight",
         "extra": reflect,
         "kind": "echo", "servers": echo, "path": "/", "unit": "msg",
         "bench": ["echo", "--connections", "100", "--in-flight", "1", "--size", "16"] + timing},
        {"id": "echo4k", "title": "echo 4 KiB, 100 connections x 1 in flight",
         "extra": reflect,
         "kind": "echo", "servers": echo, "path": "/", "unit": "msg",
         "bench": ["echo", "--connections", "100", "--in-flight", "1", "--size", "4096"]
         + timing},
        {"id": "pipelined", "title": "echo 16 B pipelined, 100 connections x 16 in flight",
         "extra": reflect,
         "kind": "echo", "servers": echo, "path": "/", "unit": "msg",
         "bench": ["echo", "--connections", "100", "--in-flight", "16", "--size", "16"]
         + timing},
        {"id": "idle10k", "title": "idle, 10,000 connections: server RSS per connection",
         "extra": reflect,
         "kind": "idle", "servers": echo, "path": "/",
         "bench": ["idle", "--connections", "10000", "--source-count", "4",
                   "--concurrency", "200", "--duration", "3s", "--warmup", "2s",
                   "--setup-timeout", "120s", "--close-timeout", "20s"]},
        {"id": "heartbeat", "title": f"idle, {heartbeat_n:,} connections on wsloop serve "
                                     "with heartbeat (ping every 5 s)",
         "kind": "heartbeat", "rounds": 1, "path": "/ws",
         "servers": {"wsloop serve": serve_cmd(["--ping-interval", "5s",
                                                "--ping-timeout", "10s"])},
         "bench": ["idle", "--connections", str(heartbeat_n), "--source-count", "8",
                   "--concurrency", "200", "--duration", fmt_duration(args.hold),
                   "--warmup", "2s", "--setup-timeout", "300s", "--close-timeout", "30s"]},
        {"id": "broadcast", "title": "broadcast: 1 publisher, 1 message in flight, "
                                     "to 10,000 subscribers",
         "kind": "broadcast", "unit": "frame",
         "servers": {"wsloop serve": serve_cmd([]),
                     "tokio-tungstenite": [PEER_BIN / "tungstenite-broadcast"]},
         "paths": {"wsloop serve": "/ws", "tokio-tungstenite": "/"},
         "extra": {"wsloop serve": ["--via", "chat"],
                   "tokio-tungstenite": ["--protocol", "raw"]},
         "bench": ["broadcast", "--publishers", "1", "--subscribers", "10000",
                   "--in-flight", "1", "--size", "64", "--source-count", "4",
                   "--concurrency", "200", "--setup-timeout", "120s"] + timing},
    ]


def run_bench(bench_args: list[str], client_prefix: list[str], timeout: float) -> dict:
    cmd = client_prefix + [str(WSLOOP_BENCH)] + bench_args + ["--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)
    LIVE[proc.pid] = proc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n(killed after {timeout:.0f} s)"
    finally:
        LIVE.pop(proc.pid, None)
    report = None
    for line in reversed(out.splitlines()):
        try:
            report = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    return {"exit": proc.returncode, "report": report, "stderr": err[-3000:],
            "command": " ".join(cmd)}


class MetricsPoller(threading.Thread):
    """Scrapes wsloop serve's /metrics every 2 s while a run holds its connections."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server = server
        self.samples: list[dict] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(2.0):
            try:
                m = self.server.metrics()
            except (OSError, ValueError):
                continue
            m["t"] = time.monotonic()
            self.samples.append(m)


def heartbeat_summary(samples: list[dict], n: int) -> dict:
    held = [s for s in samples if s.get("wsloop_open_connections", 0) >= n]
    out = {
        "max_connections_seen": max((s.get("wsloop_open_connections", 0) for s in samples),
                                    default=0),
        "heartbeat_timeouts": max((s.get("wsloop_heartbeat_timeouts_total", 0)
                                   for s in samples), default=None),
        "held_all_s": 0.0,
    }
    if len(held) >= 2:
        a, b = held[0], held[-1]
        secs = b["t"] - a["t"]
        sent = b.get("wsloop_bytes_sent_total", 0) - a.get("wsloop_bytes_sent_total", 0)
        received = (b.get("wsloop_bytes_received_total", 0)
                    - a.get("wsloop_bytes_received_total", 0))
        out.update({
            "held_all_s": round(secs, 1),
            # Timeouts up to the last sample that saw every connection open: those after it
            # came while the connections closed.
            "heartbeat_timeouts_while_held": b.get("wsloop_heartbeat_timeouts_total", 0),
            # With nothing else going on, what the server sends while every connection is
            # held is pings, and what it receives is pongs.
            "bytes_sent_while_held": sent,
            "bytes_received_while_held": received,
            "bytes_sent_per_connection_per_s": round(sent / n / secs, 3) if secs else None,
        })
    return out


def measure(args, scen: dict, server_prefix: list[str], client_prefix: list[str],
            logdir: Path) -> list[dict]:
    names = list(scen["servers"])
    rounds = scen.get("rounds", args.rounds)
    runs = []
    for r in range(rounds):
        # Alternate, and rotate the order each round so that no server always goes first.
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            path = scen.get("paths", {}).get(name, scen["path"] if "path" in scen else "/")
            rec = {"scenario": scen["id"], "server": name, "round": r + 1}
            server = None
            poller = None
            try:
                server = Server(name, scen["servers"][name], server_prefix, logdir)
                bench = list(scen["bench"]) + scen.get("extra", {}).get(name, [])
                bench[1:1] = ["--url", server.url(path), "--server-pid",
                               ",".join(str(p) for p in server.pids)]
                if scen["kind"] == "heartbeat":
                    poller = MetricsPoller(server)
                    poller.start()
                res = run_bench(bench, client_prefix, timeout=args.run_timeout)
                rec.update(res)
                if poller:
                    poller.halt.set()
                    poller.join()
                    n = int(bench[bench.index("--connections") + 1])
                    rec["heartbeat"] = heartbeat_summary(poller.samples, n)
                alive = server.proc.poll() is None
                rec["server_alive_at_end"] = alive
                if alive and scen["kind"] == "broadcast" and name.startswith("wsloop"):
                    # The server's own count of frame encodings against messages received:
                    # one encoding per broadcast, whatever the number of receivers.
                    try:
                        m = server.metrics()
                        rec["server_metrics"] = {k: m.get(k) for k in (
                            "wsloop_messages_received_total", "wsloop_broadcast_encodes_total",
                            "wsloop_messages_sent_total")}
                    except (OSError, ValueError) as e:
                        rec["server_metrics"] = {"error": str(e)}
            except Exception as e:  # a run that could not be made is recorded, not fatal
                rec.update({"exit": None, "report": None, "stderr": str(e)})
            finally:
                if poller:
                    poller.halt.set()
                if server:
                    server.stop()
            rec["clean"] = bool(rec.get("report") and rec["report"].get("clean")
                                and rec.get("exit") == 0)
            log(f"   {scen['id']:9} round {r + 1} {name:20} {short(scen, rec)}")
            if not rec["clean"]:
                log("      not clean: " + (rec.get("stderr") or "").strip()[-600:])
            runs.append(rec)
            time.sleep(args.pause)
    return runs


def short(scen: dict, rec: dict) -> str:
    rep = rec.get("report") or {}
    if not rep:
        return "FAILED"
    k = scen["kind"]
    if k == "echo":
        return (f"{fmt(rep.get('server_cpu_us_per_msg'), 3)} µs/msg  "
                f"{fmt(rep.get('messages_per_s'), 0)} msg/s")
    if k in ("idle", "heartbeat"):
        extra = ""
        if "heartbeat" in rec:
            extra = f"  {rec['heartbeat']}"
        return f"{fmt(rep.get('rss_per_connection_bytes'), 1)} B/conn{extra}"
    if k == "broadcast":
        return (f"{fmt(rep.get('delivered_per_s'), 0)} frames/s  "
                f"{fmt(rep.get('server_cpu_us_per_frame'), 3)} µs/frame")
    return ""


def fmt(v, digits: int) -> str:
    if v is None:
        return "-"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


# ---------------------------------------------------------------------------------------
# Medians

KEYS = {
    "echo": ["server_cpu_us_per_msg", "messages_per_s", "client_cpu_us_per_msg",
             ("latency", "p50_us"), ("latency", "p99_us"), ("latency", "p999_us"),
             ("latency", "max_us"), "wire_bytes_in_per_msg", "wire_bytes_out_per_msg",
             "server_cpu_share", "client_cpu_share"],
    "idle": ["rss_per_connection_bytes", "rss_before_kb", "rss_after_kb"],
    "connect": ["handshakes_per_s", "server_cpu_us_per_handshake", "client_cpu_us_per_handshake",
                ("latency", "p50_us"), ("latency", "p99_us")],
    "heartbeat": ["rss_per_connection_bytes", "rss_before_kb", "rss_after_kb"],
    "broadcast": ["delivered_per_s", "server_cpu_us_per_frame", "client_cpu_us_per_frame",
                  ("latency", "p50_us"), ("latency", "p99_us"), ("latency", "p999_us"),
                  "wire_bytes_in_per_frame", "server_cpu_share", "client_cpu_share"],
}


def get(report: dict, key):
    if isinstance(key, str) and key.endswith("_cpu_share"):
        # CPU seconds over the measured window: near 1.0, that side was the bound.
        cpu, seconds = report.get(key.replace("_share", "_s")), report.get("duration_s")
        ok = isinstance(cpu, (int, float)) and isinstance(seconds, (int, float)) and seconds
        return cpu / seconds if ok else None
    if isinstance(key, tuple):
        v = report
        for k in key:
            v = (v or {}).get(k)
        return v
    return report.get(key)


def medians(scen: dict, runs: list[dict]) -> dict:
    """Per server: the median and min–max of each figure of its kind (or of `scen["keys"]`)."""
    keys = scen.get("keys") or KEYS[scen["kind"]]
    out = {}
    for name in scen["servers"]:
        mine = [r for r in runs if r["server"] == name and r.get("report")]
        entry = {"runs": len([r for r in runs if r["server"] == name]),
                 "clean_runs": len([r for r in mine if r["clean"]])}
        for key in keys:
            vals = [get(r["report"], key) for r in mine]
            vals = [v for v in vals if isinstance(v, (int, float))]
            label = key if isinstance(key, str) else "_".join(key)
            if vals:
                entry[label] = statistics.median(vals)
                entry[label + "_min"] = min(vals)
                entry[label + "_max"] = max(vals)
        hb = [r["heartbeat"] for r in runs if r["server"] == name and "heartbeat" in r]
        if hb:
            entry["heartbeat"] = hb[-1]
        sm = [r["server_metrics"] for r in runs if r["server"] == name and "server_metrics" in r]
        if sm:
            entry["server_metrics"] = sm
        out[name] = entry
    return out


# ---------------------------------------------------------------------------------------
# Side suites (compare_deflate.py, compare_tls.py): their own scenarios, this machinery


def suite_arguments(description: str, scenarios: str, out: Path) -> argparse.ArgumentParser:
    """The command line every side suite shares."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=parse_duration, default=parse_duration("5s"))
    p.add_argument("--warmup", type=parse_duration, default=parse_duration("1s"))
    p.add_argument("--scenarios", default=scenarios)
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--quiet-load", type=float, default=0.6)
    p.add_argument("--quiet-wait", type=parse_duration, default=parse_duration("15m"))
    p.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    p.add_argument("--run-timeout", type=float, default=600)
    p.add_argument("--out", type=Path, default=out)
    p.add_argument("--merge", action="store_true",
                   help="keep the scenarios of --out that this run does not measure")
    return p


def run_suite(args, every: list[dict], script: str, measure_fn=measure, peers=True) -> dict:
    """Runs the wanted scenarios of `every` (servers in alternation, pinned, after a wait for
    a quiet machine), writes `args.out` and returns the result. `measure_fn` runs one
    scenario's rounds (as `measure` does); `peers`: the scenarios need benches/peers and the
    Node peer built."""
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not args.no_build:
        log("== build")
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
        if peers:
            subprocess.run(["cargo", "build", "--release"], cwd=PEERS, check=True)
            subprocess.run(["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund"],
                           cwd=NODE_DIR, stdout=sys.stderr, check=True)
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    server_prefix = ["taskset", "-c", "1"] if pin else []
    client_prefix = ["taskset", "-c", "0"] if pin else []
    result = {"machine": machine(), "pinned": pin, "rounds": args.rounds,
              "command": " ".join(["python3", f"benches/{script}"] + sys.argv[1:]),
              "scenarios": []}
    logdir = Path(tempfile.mkdtemp(prefix="wsloop-suite-"))
    log(f"server logs in {logdir}")
    wanted = args.scenarios.split(",")
    try:
        for scen in every:
            if scen["id"] not in wanted:
                continue
            quiet = wait_quiet(args, scen["id"])
            runs = measure_fn(args, scen, server_prefix, client_prefix, logdir)
            result["scenarios"].append({
                "id": scen["id"], "title": scen["title"], "kind": scen["kind"],
                "bench": scen["bench"], "extra": scen.get("extra", {}),
                "servers": {k: [str(x) for x in v] for k, v in scen["servers"].items()},
                "rounds": args.rounds, "quiet": quiet, "runs": runs,
                # When and at which commit: a merged file mixes runs.
                "date": result["machine"]["date"], "commit": result["machine"].get("commit"),
                "medians": medians(scen, runs)})
    finally:
        cleanup()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        written = result
        if args.merge and args.out.exists():
            written = merged(json.loads(args.out.read_text()), result,
                             [scen["id"] for scen in every])
        args.out.write_text(json.dumps(written, indent=1) + "\n")
        log(f"wrote {args.out}")
    return result


# ---------------------------------------------------------------------------------------
# Micro-benchmarks

CRITERION_NAME = re.compile(r"^([A-Za-z0-9_]+/[^\s]+)")
CRITERION_TIME = re.compile(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]")
CRITERION_THRPT = re.compile(r"thrpt:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]")


def parse_criterion(text: str) -> dict:
    results: dict[str, dict] = {}
    name = None
    for line in text.splitlines():
        m = CRITERION_NAME.match(line)
        if m and not line.startswith(("Benchmarking", "Found", "Gnuplot")):
            name = m.group(1)
        if name is None:
            continue
        t = CRITERION_TIME.search(line)
        if t:
            results.setdefault(name, {})["time"] = f"{t.group(1)} {t.group(2)}"
        p = CRITERION_THRPT.search(line)
        if p:
            results.setdefault(name, {})["thrpt"] = f"{p.group(1)} {p.group(2)}"
    return results


def micro(args) -> dict:
    out = {}
    codec_cmd = ["cargo", "bench", "--bench", "codec", "--", "--warm-up-time", "1",
                 "--measurement-time", "2", "--noplot"]
    alloc_cmd = ["cargo", "bench", "--bench", "alloc"]
    for key, cmd in (("codec", codec_cmd), ("alloc", alloc_cmd)):
        log("== micro: " + " ".join(cmd))
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
        out[key] = {"command": " ".join(cmd), "exit": r.returncode,
                    "stdout": r.stdout[-20000:], "stderr_tail": r.stderr[-2000:]}
        if key == "codec":
            out[key]["results"] = parse_criterion(r.stdout)
    return out


# ---------------------------------------------------------------------------------------
# Output

def us(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def rng(e: dict, key: str, digits: int) -> str:
    v = e.get(key)
    if v is None:
        return "-"
    lo, hi = e.get(key + "_min"), e.get(key + "_max")
    if lo is None or hi is None or lo == hi:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def markdown(result: dict) -> str:
    lines = []
    by_id = {s["id"]: s for s in result["scenarios"]}
    echo_ids = [i for i in ("echo16", "echo4k", "pipelined") if i in by_id]
    if echo_ids:
        lines += ["| scenario | server | server µs/msg (min–max) | msgs/s | vs raw-echo (bytes) "
                  "| vs raw-echo (frames) | RTT p50 / p99 µs | client µs/msg | clean runs |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for i in echo_ids:
            s = by_id[i]

            def vs(ceiling: str, cpu) -> str:
                base = s["medians"].get(ceiling, {}).get("server_cpu_us_per_msg")
                return f"{cpu / base:.2f}x" if cpu and base else "-"

            for name, e in s["medians"].items():
                cpu = e.get("server_cpu_us_per_msg")
                lines.append(
                    f"| {s['title']} | {name} | {rng(e, 'server_cpu_us_per_msg', 2)} | "
                    f"{fmt(e.get('messages_per_s'), 0)} | {vs('raw-echo (bytes)', cpu)} | "
                    f"{vs('raw-echo (frames)', cpu)} | "
                    f"{fmt(e.get('latency_p50_us'), 1)} / {fmt(e.get('latency_p99_us'), 1)} | "
                    f"{us(e.get('client_cpu_us_per_msg'))} | "
                    f"{e['clean_runs']}/{e['runs']} |")
        lines.append("")
    for i in ("idle10k", "heartbeat"):
        if i not in by_id:
            continue
        s = by_id[i]
        lines += [f"| {s['title']} | server RSS per connection (min–max) | RSS before → with all "
                  "open | clean runs |", "| --- | ---: | ---: | ---: |"]
        for name, e in s["medians"].items():
            b = e.get("rss_per_connection_bytes")
            lo, hi = e.get("rss_per_connection_bytes_min"), e.get("rss_per_connection_bytes_max")
            cell = "-" if b is None else f"{b / 1024:.2f} KiB ({b:,.0f} B)"
            if lo is not None and hi is not None and lo != hi:
                cell += f" ({lo / 1024:.2f}–{hi / 1024:.2f})"
            lines.append(f"| {name} | {cell} | {fmt(e.get('rss_before_kb'), 0)} kB → "
                         f"{fmt(e.get('rss_after_kb'), 0)} kB | {e['clean_runs']}/{e['runs']} |")
            if "heartbeat" in e:
                h = e["heartbeat"]
                lines.append(f"| (heartbeat) | {h.get('max_connections_seen', 0):,.0f} open at "
                             f"most; all held {h.get('held_all_s')} s | heartbeat timeouts "
                             f"{fmt(h.get('heartbeat_timeouts'), 0)}; sent while held "
                             f"{fmt(h.get('bytes_sent_while_held'), 0)} B, received "
                             f"{fmt(h.get('bytes_received_while_held'), 0)} B | |")
        lines.append("")
    if "broadcast" in by_id:
        s = by_id["broadcast"]
        lines += ["| broadcast, 1 publisher → 10,000 subscribers | delivered frames/s "
                  "| server µs/frame (min–max) | publish→receive p50 / p99 µs | clean runs |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for name, e in s["medians"].items():
            lines.append(f"| {name} | {fmt(e.get('delivered_per_s'), 0)} | "
                         f"{rng(e, 'server_cpu_us_per_frame', 3)} | "
                         f"{fmt(e.get('latency_p50_us'), 0)} / {fmt(e.get('latency_p99_us'), 0)} "
                         f"| {e['clean_runs']}/{e['runs']} |")
        lines.append("")
    return "\n".join(lines)


def svg(result: dict) -> str:
    """Bar charts of the medians, one panel per figure, with the issue's target as a dashed
    line where it is relative to the raw-echo ceiling or absolute."""
    by_id = {s["id"]: s for s in result["scenarios"]}
    # The ceiling: a raw TCP echo on mio, no WebSocket at all.
    ceiling = "raw-echo (bytes)"

    def raw(i: str, key: str):
        return by_id[i]["medians"].get(ceiling, {}).get(key) if i in by_id else None

    panels = []
    for i, key, label, scale, unit, target in (
        ("echo16", "server_cpu_us_per_msg", "echo 16 B, 100×1: server CPU per message", 1, "µs",
         (1.1, "≤ 1.1 × raw TCP echo")),
        ("echo4k", "server_cpu_us_per_msg", "echo 4 KiB, 100×1: server CPU per message", 1,
         "µs", (1.1, "≤ 1.1 × raw TCP echo")),
        ("pipelined", "messages_per_s", "echo 16 B, 100×16 pipelined: messages/s (millions)",
         1e-6, "M/s", (0.9, "≥ 0.9 × raw TCP echo")),
        ("pipelined", "server_cpu_us_per_msg", "echo 16 B, 100×16 pipelined: server CPU per "
         "message", 1, "µs", None),
        ("idle10k", "rss_per_connection_bytes", "idle, 10,000 connections: server RSS per "
         "connection", 1 / 1000, "kB", "1 kB"),
        ("broadcast", "server_cpu_us_per_frame", "broadcast to 10,000: server CPU per "
         "delivered frame", 1, "µs", None),
        ("broadcast", "delivered_per_s", "broadcast to 10,000: delivered frames/s (thousands)",
         1e-3, "k/s", None),
    ):
        if i not in by_id:
            continue
        bars = [(name, e[key] * scale) for name, e in by_id[i]["medians"].items()
                if e.get(key) is not None]
        ref = None
        if isinstance(target, tuple) and raw(i, key) is not None:
            ref = (raw(i, key) * scale * target[0], target[1])
        elif target == "1 kB":
            ref = (1.0, "target ≤ 1 kB")
        if bars:
            panels.append((label, unit, bars, ref))
    width, left, bar_h, gap, title_h = 760, 170, 20, 6, 30
    span = width - left - 120
    colors = {"wsloop": "#d9480f", "wsloop serve": "#d9480f"}
    y = 40
    body = []
    for label, unit, bars, ref in panels:
        body.append(f'<text x="10" y="{y + 16}" class="t">{escape(label)}</text>')
        y += title_h
        top = max([v for _, v in bars] + ([ref[0]] if ref else [])) or 1
        y_end = y + len(bars) * (bar_h + gap)
        if ref:
            # Drawn first, so that bars and labels go over it.
            x = left + span * ref[0] / top
            body.append(f'<line x1="{x:.1f}" y1="{y - 4}" x2="{x:.1f}" y2="{y_end - gap + 4}" '
                        'stroke="#222" stroke-width="1.5" stroke-dasharray="4 3"/>')
            body.append(f'<text x="{x + 4:.1f}" y="{y_end + 10}" class="r">{escape(ref[1])} '
                        f'({ref[0]:,.2f} {escape(unit)})</text>')
        for name, v in bars:
            w = span * v / top
            color = colors.get(name, "#4c6ef5")
            body.append(f'<text x="{left - 8}" y="{y + 15}" class="n">{escape(name)}</text>')
            body.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                        f'fill="{color}"/>')
            digits = 3 if v < 2 else 2 if v < 100 else 0
            body.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}" class="v" '
                        f'paint-order="stroke" stroke="white" stroke-width="3">'
                        f'{v:,.{digits}f} {escape(unit)}</text>')
            y += bar_h + gap
        if ref:
            y += 14
        y += 14
    m = result["machine"]
    counts = sorted({sc.get("rounds", result["rounds"]) for sc in result["scenarios"]
                     if sc["kind"] != "heartbeat"} or {result["rounds"]})
    rounds = "–".join(str(c) for c in (counts[0], counts[-1]) if c) if len(counts) > 1 \
        else str(counts[0])
    head = (f'wsloop vs peers: medians of {rounds} rounds; {m["nproc"]} × '
            f'{m["cpu_model"]}' + ("; server on CPU 1, client on CPU 0"
                                   if result.get("pinned") else ""))
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 10}" '
        f'viewBox="0 0 {width} {y + 10}" font-family="sans-serif">',
        '<style>.t{font-size:14px;font-weight:bold}.n{font-size:12px;text-anchor:end}'
        '.v{font-size:12px}.h{font-size:13px}.r{font-size:11px;fill:#222}</style>',
        f'<rect width="{width}" height="{y + 10}" fill="white"/>',
        f'<text x="10" y="22" class="h">{escape(head)}</text>',
        *body,
        "</svg>",
        "",
    ])


# ---------------------------------------------------------------------------------------

def merged(old: dict, new: dict, order: list[str] | None = None) -> dict:
    """`old` with the scenarios (and micro-benches) that `new` measured replaced; scenarios
    in `order` (default: this script's)."""
    ids = {sc["id"] for sc in new["scenarios"]}
    order = order or ALL_SCENARIOS.split(",")
    out = dict(old)
    out["scenarios"] = sorted(
        [sc for sc in old["scenarios"] if sc["id"] not in ids] + new["scenarios"],
        key=lambda sc: order.index(sc["id"]) if sc["id"] in order else len(order))
    for key in ("micro", "quiet_micro"):
        if key in new:
            out[key] = new[key]
    out["commands"] = old.get("commands", [old.get("command")]) + [new["command"]]
    out["notes"] = list(dict.fromkeys(old.get("notes", []) + new.get("notes", [])))
    return out


def heartbeat_connections() -> tuple[int, str]:
    """How many connections the heartbeat scenario can hold, and why not more."""
    probe = ["prlimit", f"--nofile={HEARTBEAT_GOAL + 2 * FD_SPARE}:"
             f"{HEARTBEAT_GOAL + 2 * FD_SPARE}", "true"]
    if shutil.which("prlimit") and subprocess.run(probe, capture_output=True).returncode == 0:
        return HEARTBEAT_GOAL, ""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    n = min(HEARTBEAT_GOAL, (hard - FD_SPARE) // 1000 * 1000)
    return n, (f"the descriptor hard limit is {hard} and cannot be raised here (no "
               f"CAP_SYS_RESOURCE): {n:,} connections instead of {HEARTBEAT_GOAL:,}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=parse_duration, default=parse_duration("5s"),
                   help="measured window of the echo and broadcast runs (default 5s)")
    p.add_argument("--warmup", type=parse_duration, default=parse_duration("1s"))
    p.add_argument("--hold", type=parse_duration, default=parse_duration("30s"),
                   help="how long the heartbeat scenario holds its connections (default 30s)")
    p.add_argument("--scenarios", default=ALL_SCENARIOS)
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--no-micro", action="store_true",
                   help="skip cargo bench --bench codec / alloc")
    p.add_argument("--no-node", action="store_true")
    p.add_argument("--no-pin", action="store_true", help="do not use taskset")
    p.add_argument("--quiet-load", type=float, default=0.6)
    p.add_argument("--quiet-wait", type=parse_duration, default=parse_duration("15m"))
    p.add_argument("--pause", type=float, default=1.0, help="seconds between runs")
    p.add_argument("--run-timeout", type=float, default=600)
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    p.add_argument("--svg", type=Path, default=RESULTS / "summary.svg")
    p.add_argument("--merge", action="store_true",
                   help="keep the other scenarios of --out and replace only those measured "
                        "now (e.g. the echo scenarios again with more rounds)")
    args = p.parse_args()

    node_ok = not args.no_node and shutil.which("node") is not None
    heartbeat_n, heartbeat_note = heartbeat_connections()
    all_scen = scenarios(args, node_ok, heartbeat_n)
    if args.list:
        for s in all_scen:
            print(f"{s['id']:10} {s['title']}")
        return 0
    wanted = args.scenarios.split(",")
    unknown = set(wanted) - {s["id"] for s in all_scen}
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}; --list shows them")

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if not args.no_build:
        build(node_ok)
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    server_prefix = ["taskset", "-c", "1"] if pin else []
    client_prefix = ["taskset", "-c", "0"] if pin else []
    if heartbeat_n == HEARTBEAT_GOAL:
        limit = HEARTBEAT_GOAL + 2 * FD_SPARE
        hb_prefix = ["prlimit", f"--nofile={limit}:{limit}"] + server_prefix
        hb_client = ["prlimit", f"--nofile={limit}:{limit}"] + client_prefix
    else:
        hb_prefix, hb_client = server_prefix, client_prefix

    result = {
        "machine": machine(),
        "pinned": pin,
        "rounds": args.rounds,
        "command": " ".join(["python3", "benches/compare.py"] + sys.argv[1:]),
        "notes": [heartbeat_note] if heartbeat_note and "heartbeat" in wanted else [],
        "scenarios": [],
    }
    if not pin:
        result["notes"].append("server and client not pinned (no taskset or one CPU)")
    logdir = Path(tempfile.mkdtemp(prefix="wsloop-compare-"))
    log(f"server logs in {logdir}")
    try:
        for scen in all_scen:
            if scen["id"] not in wanted:
                continue
            quiet = wait_quiet(args, scen["id"])
            hb = scen["kind"] == "heartbeat"
            runs = measure(args, scen, hb_prefix if hb else server_prefix,
                           hb_client if hb else client_prefix, logdir)
            result["scenarios"].append({
                "id": scen["id"], "title": scen["title"], "kind": scen["kind"],
                "bench": scen["bench"], "servers": {k: [str(c) for c in v]
                                                    for k, v in scen["servers"].items()},
                "rounds": scen.get("rounds", args.rounds), "quiet": quiet, "runs": runs,
                "medians": medians(scen, runs)})
        if not args.no_micro:
            result["quiet_micro"] = wait_quiet(args, "micro")
            result["micro"] = micro(args)
    finally:
        cleanup()
        if args.merge and args.out.exists():
            result = merged(json.loads(args.out.read_text()), result)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {args.out}")
    table = markdown(result)
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    args.svg.write_text(svg(result))
    log(f"wrote {args.svg}")
    print(table)
    if "micro" in result:
        for name, r in sorted(result["micro"]["codec"].get("results", {}).items()):
            print(f"{name:40} {r.get('time', ''):>14} {r.get('thrpt', ''):>16}")
        alloc = result["micro"]["alloc"]["stdout"]
        print(alloc.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
