#!/usr/bin/env python3
"""One node, two nodes through Redis, two nodes through a Redis Cluster; channel history off
and on (`wsloop serve`, the publish path).

Runs with the machinery of compare.py (a fresh set of processes per run, the configurations
in alternation with the order rotated each round, `wsloop-bench ... --json`, servers pinned
to CPU 1 and the client to CPU 0, a wait for a quiet machine before each scenario, medians
with their spread). The configurations, each with `--history-size 0` (off) and the default
`--history-size 100` (on, `--history-size` here to change it):

- one node: one `wsloop serve`;
- two nodes + Redis: one `redis-server` on a free port (`--save '' --appendonly no`) and two
  `wsloop serve --redis redis://127.0.0.1:PORT`;
- two nodes + Redis Cluster: six `redis-server --cluster-enabled yes` joined by `redis-cli
  --cluster create ... --cluster-replicas 1` (three masters, a replica each, as
  tests/common/redis_cluster.rs does) and two `wsloop serve --redis-cluster` given two seeds.

Redis runs with the servers, on CPU 1. The load goes to every node, `wsloop-bench broadcast
--url A,B`: connection g on node g % 2, publishers first, so one publisher is on the first
node and the subscribers are split evenly; with history on (and Redis) every message goes
through the append script and comes back to both nodes from Redis.

- nbcast16: 1 publisher, 16 in flight, 64-byte content, to --subscribers (2,000) of one
  channel (`--via publish`).
- nchatroom: 20 publishers at 10 messages/s each (at most 4 unacknowledged each) to the
  same subscribers: the latency of a steady chat-room load.

Per run: published messages/s, delivered frames/s, publish-to-receive p50 / p99 / p99.9,
server CPU per delivered frame (both nodes' CPU summed over the window: `--server-pid A,B`),
Redis CPU per published message (utime + stime of every redis-server from /proc at the edges
of the bench's measured window, which starts at a set time, `--window-start`, over the
messages published in the window), every subscriber got every message once and in order (the bench fails
the run otherwise), and memory per stored message: on one node `wsloop_history_bytes` /
`wsloop_history_messages` from /metrics, and the node's RSS growth over the run beside that
of the run with history off; with Redis, over the entries the streams keep (XLEN of every
`{wsloop:...}:stream` key that SCAN finds on the masters), `MEMORY USAGE` of the streams and
their meta hashes, and `INFO memory` used_memory after the run minus before (masters; all
nodes and used_memory_dataset in the JSON). used_memory also grows by what is not a key:
Redis's buffers, and in the cluster the replication backlog that the propagated SPUBLISHes
fill.

    python3 benches/compare_nodes.py                            # everything, 3 rounds
    python3 benches/compare_nodes.py --rounds 1 --duration 2s --scenarios nbcast16

Writes benches/results/nodes.json and prints the markdown tables. Python 3.11, standard
library only; needs redis-server and redis-cli (Redis 7 for the cluster's sharded Pub/Sub).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as c  # noqa: E402  (the shared machinery, next to this file)

ALL = "nbcast16,nchatroom"
TOPOLOGIES = {"one": "one node", "redis": "two nodes + Redis",
              "cluster": "two nodes + Redis Cluster"}
# wsloop's Redis prefix (the default of --redis-prefix): a channel's history is the stream
# `{wsloop:channel:NAME}:stream` and the hash `{wsloop:channel:NAME}:meta` (offset, epoch).
STREAMS = "{wsloop:*}:stream"
METAS = "{wsloop:*}:meta"
# Long enough that a cluster node starved of CPU 1 by the load is not taken for dead (the
# tests use 1 s to fail over quickly; nothing fails over here).
CLUSTER_NODE_TIMEOUT_MS = 5000
# After the bench: the nodes settle (presence, closes) before the memory is read.
SETTLE_S = 1.0
READY_TIMEOUT_S = 30.0


def redis_cli(port: int, *args: str) -> str:
    r = subprocess.run([shutil.which("redis-cli") or "redis-cli", "-p", str(port), *args],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"redis-cli -p {port} {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def info(port: int, section: str) -> dict[str, str]:
    """`INFO section` (or `CLUSTER INFO` with section "cluster-info") as a dict."""
    text = redis_cli(port, *(["CLUSTER", "INFO"] if section == "cluster-info"
                             else ["INFO", section]))
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_cluster_port(taken: set[int]) -> int:
    """A port whose cluster bus port (+10000) is free too (ephemeral ports are too high)."""
    def free(p: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return True
            except OSError:
                return False
    for _ in range(10_000):
        port = random.randrange(20_000, 40_000)
        if port not in taken and free(port) and free(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class Exited(Exception):
    """A process that should be running has ended: no use waiting for it."""


def wait_for(what: str, timeout: float, check) -> None:
    """Polls `check` until it is true; its OS and redis-cli errors count as "not yet"."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"{what} not within {timeout:.0f} s ({last})")


class Redis:
    """One redis-server on 127.0.0.1:PORT, no persistence, started with `prefix` (pinning)."""

    def __init__(self, port: int, prefix: list[str], workdir: Path, cluster: bool):
        self.port = port
        cmd = prefix + [shutil.which("redis-server") or "redis-server", "--port", str(port),
                        "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--dir", str(workdir), "--logfile", str(workdir / f"redis-{port}.log")]
        if cluster:
            cmd += ["--cluster-enabled", "yes",
                    "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
                    "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS)]
        # taskset execs redis-server: the pid is the server's.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        c.LIVE[self.proc.pid] = self.proc
        self.pid = self.proc.pid
        try:
            wait_for(f"redis-server :{port}", READY_TIMEOUT_S, self._pong)
        except BaseException:
            self.stop()
            raise

    def _pong(self) -> bool:
        if self.proc.poll() is not None:
            raise Exited(f"redis-server :{self.port} exited with {self.proc.returncode}")
        return redis_cli(self.port, "PING") == "PONG"

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def is_master(self) -> bool:
        return info(self.port, "replication").get("role") == "master"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        c.LIVE.pop(self.proc.pid, None)


class Setup:
    """The processes of one run: Redis (none, one, or a cluster of six) and the nodes."""

    def __init__(self, topology: str, history_size: int, prefix: list[str], logdir: Path):
        self.redis: list[Redis] = []
        self.nodes: list[c.Server] = []
        # Redis's logs and cluster files, kept with the servers' logs.
        self.workdir = Path(tempfile.mkdtemp(prefix="redis-", dir=logdir))
        try:
            self._start(topology, history_size, prefix, logdir)
        except BaseException:
            self.stop()
            raise

    def _start(self, topology: str, history_size: int, prefix: list[str], logdir: Path):
        flags = ["--history-size", str(history_size)]
        if topology == "one":
            self.nodes.append(c.Server("one node", c.serve_cmd(flags), prefix, logdir))
        elif topology == "redis":
            self.redis.append(Redis(free_port(), prefix, self.workdir, cluster=False))
            self._start_nodes(topology, flags + ["--redis", self.redis[0].url()], prefix,
                              logdir)
        else:
            taken: set[int] = set()
            while len(self.redis) < 6:
                port = free_cluster_port(taken)
                taken.add(port)
                self.redis.append(Redis(port, prefix, self.workdir, cluster=True))
            create = subprocess.run(
                [shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                 *[f"127.0.0.1:{r.port}" for r in self.redis],
                 "--cluster-replicas", "1", "--cluster-yes"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
            if create.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create: {create.stdout[-500:]}"
                                   f"{create.stderr[-500:]}")
            wait_for("the Redis Cluster to settle", 60, self._cluster_settled)
            seeds = ",".join(r.url() for r in self.redis[:2])
            self._start_nodes(topology, flags + ["--redis-cluster", seeds], prefix, logdir)
        for node in self.nodes:
            wait_for(f"{node.name} /readyz", READY_TIMEOUT_S, lambda n=node: ready(n))

    def _start_nodes(self, topology: str, flags: list[str], prefix: list[str], logdir: Path):
        for i in (1, 2):
            cmd = c.serve_cmd(flags + ["--node-id", f"bench{i}"])
            self.nodes.append(c.Server(f"{TOPOLOGIES[topology]} node{i}", cmd, prefix, logdir))

    def _cluster_settled(self) -> bool:
        """Every node sees all slots served and all six nodes; every replica is in sync."""
        for r in self.redis:
            ci = info(r.port, "cluster-info")
            if (ci.get("cluster_state") != "ok" or ci.get("cluster_slots_ok") != "16384"
                    or ci.get("cluster_known_nodes") != "6"):
                return False
            rep = info(r.port, "replication")
            if rep.get("role") == "slave" and rep.get("master_link_status") != "up":
                return False
        return True

    def url(self, path: str) -> str:
        return ",".join(n.url(path) for n in self.nodes)

    def pids(self) -> str:
        return ",".join(str(n.pid) for n in self.nodes)

    def alive(self) -> bool:
        return all(p.poll() is None for p in [n.proc for n in self.nodes]
                   + [r.proc for r in self.redis])

    def redis_cpu_ticks(self) -> int:
        return sum(c.cpu_ticks(r.pid) for r in self.redis)

    def memory(self, streams: bool) -> dict:
        """The memory of every process now; with `streams`, the entries the streams keep."""
        out: dict = {
            "node_rss_kb": sum(c.rss_kb(n.pid) for n in self.nodes),
            "history_bytes": 0, "history_messages": 0,
        }
        for n in self.nodes:
            m = n.metrics()
            out["history_bytes"] += int(m.get("wsloop_history_bytes", 0))
            out["history_messages"] += int(m.get("wsloop_history_messages", 0))
        if not self.redis:
            return out
        masters = [r for r in self.redis if r.is_master()]
        used = {r.port: info(r.port, "memory") for r in self.redis}
        for who, group in (("masters", masters), ("all", self.redis)):
            for key in ("used_memory", "used_memory_dataset"):
                out[f"{key}_{who}"] = sum(int(used[r.port][key]) for r in group)
        if streams:
            # Each master SCANs only its own keys: every stream is counted once.
            out["streams"], out["history_keys_bytes"] = {}, 0
            for r in masters:
                for key in redis_cli(r.port, "--scan", "--pattern", STREAMS).split():
                    out["streams"][key] = int(redis_cli(r.port, "XLEN", key))
                for pattern in (STREAMS, METAS):
                    for key in redis_cli(r.port, "--scan", "--pattern", pattern).split():
                        out["history_keys_bytes"] += int(
                            redis_cli(r.port, "MEMORY", "USAGE", key, "SAMPLES", "0"))
        return out

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        for r in self.redis:
            r.stop()


def ready(node: c.Server) -> bool:
    """/readyz answers 200: the node is not draining and reaches Redis."""
    if node.proc.poll() is not None:
        raise Exited(f"{node.name} exited with {node.proc.returncode}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/readyz", timeout=2) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def around(before: dict, after: dict, redis_cpu_ticks: int | None, report: dict) -> dict:
    """The figures taken around the bench run: Redis CPU per published message (the ticks
    of every redis-server over the measured window, over the messages published in it), memory per stored message (`before` and `after`
    from `Setup.memory`)."""
    messages = after["history_messages"]
    rss_delta = after["node_rss_kb"] - before["node_rss_kb"]
    out = {
        "history_messages": messages,
        "history_bytes": after["history_bytes"],
        "history_bytes_per_message": after["history_bytes"] / messages if messages else None,
        "node_rss_before_kb": before["node_rss_kb"],
        "node_rss_after_kb": after["node_rss_kb"],
        "node_rss_delta_kb": rss_delta,
        "node_rss_delta_bytes_per_message": rss_delta * 1024 / messages if messages else None,
    }
    if redis_cpu_ticks is None:
        return out
    sent = report.get("published") or 0
    cpu_s = redis_cpu_ticks / os.sysconf("SC_CLK_TCK")
    entries = sum(after["streams"].values())
    keys = after["history_keys_bytes"]
    out.update({
        "redis_cpu_s": cpu_s,
        "redis_cpu_us_per_msg": cpu_s * 1e6 / sent if sent else None,
        "streams": after["streams"],
        "stream_entries": entries,
        # MEMORY USAGE of the streams and their meta hashes: what the keys themselves hold.
        "history_keys_bytes": keys,
        "history_keys_bytes_per_entry": keys / entries if entries else None,
    })
    for key in ("used_memory_masters", "used_memory_all", "used_memory_dataset_masters",
                "used_memory_dataset_all"):
        delta = after[key] - before[key]
        out[f"{key}_delta"] = delta
        out[f"{key}_per_entry"] = delta / entries if entries else None
    return out


def setup_allowance(subscribers: int) -> float:
    """Seconds from the bench's start to its window: enough for the set-up (two nodes take
    ~3,000 subscribers a second here), with room to spare."""
    return max(5.0, subscribers / 1000)


def sample_at(setup: "Setup", times: list[float], out: dict) -> None:
    """Redis's CPU ticks at each of `times` (wall clock), into `out` by index."""
    for i, t in enumerate(times):
        time.sleep(max(0.0, t - time.time()))
        try:
            out[i] = setup.redis_cpu_ticks()
        except OSError:
            return


def measure_nodes(args, scen: dict, server_prefix: list[str], client_prefix: list[str],
                  logdir: Path) -> list[dict]:
    """compare.measure for sets of processes: each run starts its configuration afresh."""
    names = list(scen["servers"])
    runs = []
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            topology, history_size = scen["configs"][name]
            rec = {"scenario": scen["id"], "server": name, "round": r + 1,
                   "topology": TOPOLOGIES[topology], "history_size": history_size}
            setup = None
            try:
                setup = Setup(topology, history_size, server_prefix, logdir)
                bench = list(scen["bench"])
                bench[1:1] = ["--url", setup.url("/ws"), "--server-pid", setup.pids()]
                before = setup.memory(streams=False)
                # Redis's CPU is taken over the bench's measured window, which starts at a
                # set time (--window-start) so that it can be sampled from here: over the
                # whole run it would also count the set-up (a presence update per client).
                window_start = time.time() + setup_allowance(args.subscribers)
                bench += ["--window-start", f"{window_start:.3f}"]
                ticks: dict = {}
                sampler = threading.Thread(
                    target=sample_at, daemon=True,
                    args=(setup, [window_start, window_start + args.duration], ticks))
                sampler.start()
                rec.update(c.run_bench(bench, client_prefix, timeout=args.run_timeout))
                sampler.join()
                ticks = (ticks[1] - ticks[0]) if len(ticks) == 2 else None
                time.sleep(SETTLE_S)
                rec["server_alive_at_end"] = setup.alive()
                if rec["report"] is not None:
                    after = setup.memory(streams=True)
                    rec["report"]["around"] = around(before, after,
                                                     ticks if setup.redis else None,
                                                     rec["report"])
            except Exception as e:  # a run that could not be made is recorded, not fatal
                rec.update({"exit": None, "report": None, "stderr": str(e)})
            finally:
                if setup:
                    setup.stop()
            rec["clean"] = bool(rec.get("report") and rec["report"].get("clean")
                                and rec.get("exit") == 0 and rec.get("server_alive_at_end"))
            rep = rec.get("report") or {}
            a = rep.get("around", {})
            c.log(f"   {scen['id']:9} round {r + 1} {name:38} "
                  f"{c.fmt(rep.get('delivered_per_s'), 0)} frames/s  "
                  f"{c.fmt(rep.get('server_cpu_us_per_frame'), 3)} µs/frame  "
                  f"redis {c.fmt(a.get('redis_cpu_us_per_msg'), 1)} µs/msg")
            if not rec["clean"]:
                c.log("      not clean: " + (rec.get("stderr") or "").strip()[-600:])
            runs.append(rec)
            time.sleep(args.pause)
    return runs


KEYS = c.KEYS["broadcast"] + [
    "published_per_s",
    *[("around", k) for k in (
        "redis_cpu_us_per_msg", "redis_cpu_s", "history_messages", "history_bytes_per_message",
        "node_rss_delta_kb", "node_rss_delta_bytes_per_message", "stream_entries",
        "used_memory_masters_delta", "used_memory_masters_per_entry",
        "used_memory_dataset_masters_per_entry", "used_memory_all_per_entry",
        "history_keys_bytes_per_entry")],
]


def scenarios(args) -> list[dict]:
    configs = {}
    for topology, label in TOPOLOGIES.items():
        if topology not in args.topologies.split(","):
            continue
        for history, size in (("off", 0), ("on", args.history_size)):
            configs[f"{label}, history {history}"] = (topology, size)
    # What each configuration runs, for the record (ports and seeds come at run time).
    servers = {name: [str(x) for x in c.serve_cmd(["--history-size", str(size)])]
               + {"one": [], "redis": ["--redis", "redis://127.0.0.1:PORT"],
                  "cluster": ["--redis-cluster", "SEED,SEED"]}[topology]
               for name, (topology, size) in configs.items()}
    timing = ["--duration", c.fmt_duration(args.duration), "--warmup",
              c.fmt_duration(args.warmup)]
    # As compare_broadcast.py opens its connections: 200 at a time from four source
    # addresses (serve takes at most 128 pending handshakes per address).
    setup = ["--source-count", "4", "--concurrency", "200", "--setup-timeout", "120s"]
    common = {"kind": "broadcast", "unit": "frame", "servers": servers, "configs": configs,
              "keys": KEYS}
    n = args.subscribers
    return [
        {**common, "id": "nbcast16",
         "title": f"1 publisher, 16 in flight, to {n:,} subscribers, 64 B",
         "bench": ["broadcast", "--via", "publish", "--publishers", "1", "--subscribers",
                   str(n), "--in-flight", "16", "--size", "64"] + setup + timing},
        {**common, "id": "nchatroom",
         "title": f"chat room: 20 publishers at 10 msg/s each, to {n:,} subscribers",
         "bench": ["broadcast", "--via", "publish", "--publishers", "20", "--subscribers",
                   str(n), "--in-flight", "4", "--rate", "10", "--size", "64"]
         + setup + timing},
    ]


def memory_cells(e: dict, off: dict) -> tuple[str, str]:
    """What a stored message costs, and what is kept (`off`: the same topology's medians
    with history off, whose RSS growth is that of everything but the history)."""
    if e.get("around_stream_entries") is not None:
        kept = f"{c.fmt(e['around_stream_entries'], 0)} entries"
        per = e.get("around_used_memory_masters_per_entry")
        if per is None:
            # Nothing stored: what Redis grew by all the same (buffers, presence).
            delta = e.get("around_used_memory_masters_delta")
            return f"- (used_memory Δ {c.fmt(delta, 0)} B)", kept
        keys = e.get("around_history_keys_bytes_per_entry")
        return f"{c.fmt(keys, 0)} B in the keys; used_memory Δ {per:,.0f} B", kept
    per = e.get("around_history_bytes_per_message")
    if per is None:
        return "-", "0"
    messages = e.get("around_history_messages")
    on, base = e.get("around_node_rss_delta_kb"), off.get("around_node_rss_delta_kb")
    rss = (on - base) * 1024 / messages if None not in (on, base) and messages else None
    return (f"{per:,.0f} B wsloop's count; RSS Δ over history off {c.fmt(rss, 0)} B",
            f"{c.fmt(messages, 0)} messages")


def markdown(result: dict) -> str:
    lines = []
    for s in result["scenarios"]:
        lines += [f"| {s['title']} | published msg/s | delivered frames/s | publish→receive "
                  "p50 / p99 / p99.9 µs | server µs/frame, nodes summed (min–max) | Redis µs "
                  "per published msg (min–max) | kept | memory per stored message | node "
                  "RSS Δ kB | missing / gaps / duplicates | clean runs |",
                  "| --- |" + " ---: |" * 10]
        for name, e in s["medians"].items():
            mine = [r.get("report") or {} for r in s["runs"] if r["server"] == name]
            problems = " / ".join(str(sum(rep.get(k) or 0 for rep in mine))
                                  for k in ("missing", "gaps", "duplicates"))
            per, kept = memory_cells(e, s["medians"].get(name.replace("history on",
                                                                       "history off"), {}))
            lines.append(
                f"| {name} | {c.fmt(e.get('published_per_s'), 0)} | "
                f"{c.fmt(e.get('delivered_per_s'), 0)} | "
                f"{c.fmt(e.get('latency_p50_us'), 0)} / {c.fmt(e.get('latency_p99_us'), 0)} / "
                f"{c.fmt(e.get('latency_p999_us'), 0)} | "
                f"{c.rng(e, 'server_cpu_us_per_frame', 3)} | "
                f"{c.rng(e, 'around_redis_cpu_us_per_msg', 1)} | {kept} | {per} | "
                f"{c.fmt(e.get('around_node_rss_delta_kb'), 0)} | {problems} | "
                f"{e['clean_runs']}/{e['runs']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = c.suite_arguments(__doc__, ALL, c.RESULTS / "nodes.json")
    p.add_argument("--subscribers", type=int, default=2000)
    p.add_argument("--history-size", type=int, default=100,
                   help="--history-size of the runs with history on (default 100, serve's)")
    p.add_argument("--topologies", default=",".join(TOPOLOGIES),
                   help="one, redis, cluster (default: all three)")
    args = p.parse_args()
    every = scenarios(args)
    unknown = set(args.scenarios.split(",")) - {s["id"] for s in every}
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)} (known: {ALL})")
    wrong = set(args.topologies.split(",")) - set(TOPOLOGIES)
    if wrong:
        p.error(f"unknown topologies {sorted(wrong)} (known: {', '.join(TOPOLOGIES)})")
    for program in ("redis-server", "redis-cli"):
        if shutil.which(program) is None and set(args.topologies.split(",")) - {"one"}:
            p.error(f"{program} is needed for the Redis topologies (or --topologies one)")
    result = c.run_suite(args, every, "compare_nodes.py", measure_fn=measure_nodes, peers=False)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
