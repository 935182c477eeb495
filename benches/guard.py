#!/usr/bin/env python3
"""Regression guard: the headline scenarios in a few minutes, as ratios against the figures
recorded in BENCHMARKS.md.

The baseline is the medians of the runs that BENCHMARKS.md's tables were printed from:
benches/results/latest.json (compare.py) and benches/results/broadcast.json
(compare_broadcast.py), or the files given with --baseline. Each headline scenario runs once
(one round, short window) with the same servers and load generator flags, then prints, per
figure, the baseline, today's value and two ratios:

- `now / then`: today's figure against the recorded one. Honest but at the mercy of the
  machine: another host, or a busy one, moves every figure.
- `vs ceiling`: the same ratio for wsloop's figure divided by its ceiling's figure taken in
  the same run (raw-echo for echo, raw-broadcast for broadcast): what the machine does to both
  cancels out, so this is the one the exit status is judged on.

Exit status 1 when a judged ratio is worse than --threshold (default 1.25: 25% more server
CPU per message, or 25% more memory per connection, than recorded); 0 otherwise; 2 when a run
failed or the baseline lacks a figure. Idle memory has no ceiling and is judged on
`now / then`.

    python3 benches/guard.py                    # builds, then about 3 minutes of runs
    python3 benches/guard.py --no-build --threshold 1.5

Python 3.11, standard library only. It does not wait for a quiet machine: read a failure on
a busy host as a reason to run compare.py, not as a verdict.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare as c  # noqa: E402
import compare_broadcast as cb  # noqa: E402

# scenario id -> (servers to run, the figure judged, its ceiling server or None)
HEADLINES = {
    "echo16": (["wsloop", "raw-echo (bytes)"], "server_cpu_us_per_msg", "raw-echo (bytes)"),
    "pipelined": (["wsloop", "raw-echo (bytes)"], "server_cpu_us_per_msg", "raw-echo (bytes)"),
    "idle10k": (["wsloop"], "rss_per_connection_bytes", None),
    "bcast1": (["wsloop broadcast", cb.CEILING], "server_cpu_us_per_frame", cb.CEILING),
    "bcast16": (["wsloop broadcast", "wsloop serve (chat)", cb.CEILING],
                "server_cpu_us_per_frame", cb.CEILING),
}


def baseline_medians(paths: list[Path]) -> dict[str, dict]:
    """Scenario id -> server -> medians, from the result files (later files win)."""
    out: dict[str, dict] = {}
    for path in paths:
        if not path.exists():
            c.log(f"baseline {path} is missing")
            continue
        for scen in json.loads(path.read_text()).get("scenarios", []):
            out[scen["id"]] = scen.get("medians", {})
    return out


def judge(scen_id: str, now: dict, then: dict, threshold: float) -> tuple[list[str], int]:
    """The table rows of one scenario and its verdict (0 fine, 1 regressed, 2 unknown)."""
    servers, key, ceiling = HEADLINES[scen_id]
    rows, verdict = [], 0

    def ratio(a, b):
        return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None

    for name in servers:
        v_now, v_then = now.get(name, {}).get(key), then.get(name, {}).get(key)
        plain = ratio(v_now, v_then)
        normed = None
        if ceiling and name != ceiling:
            normed = ratio(ratio(v_now, now.get(ceiling, {}).get(key)),
                           ratio(v_then, then.get(ceiling, {}).get(key)))
        judged = normed if ceiling else plain
        mark = ""
        if name != ceiling:
            if judged is None:
                verdict, mark = max(verdict, 2), "no figure"
            elif judged > threshold:
                verdict, mark = max(verdict, 1), f"WORSE than {threshold:.2f}"
        rows.append(f"| {scen_id} | {name} | {key} | {c.fmt(v_then, 3)} | {c.fmt(v_now, 3)} | "
                    f"{c.fmt(plain, 2)} | {c.fmt(normed, 2)} | {mark} |")
    return rows, verdict


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threshold", type=float, default=1.25)
    p.add_argument("--scenarios", default=",".join(HEADLINES))
    p.add_argument("--baseline", type=Path, action="append",
                   help="result files to compare with (default: results/latest.json and "
                        "results/broadcast.json)")
    p.add_argument("--duration", type=c.parse_duration, default=c.parse_duration("2s"))
    p.add_argument("--warmup", type=c.parse_duration, default=c.parse_duration("1s"))
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--pause", type=float, default=0.5)
    p.add_argument("--run-timeout", type=float, default=120)
    p.add_argument("--out", type=Path, default=c.RESULTS / "guard.json")
    args = p.parse_args()
    # compare.py's machinery: one round, no wait for a quiet machine, no node peer.
    args.rounds, args.quiet_load, args.quiet_wait, args.hold = 1, 100.0, 0.0, 0.0
    wanted = args.scenarios.split(",")
    every = [s for s in c.scenarios(args, False, 0) + cb.scenarios(args, False)
             if s["id"] in wanted and s["id"] in HEADLINES]
    for s in every:
        keep = HEADLINES[s["id"]][0]
        s["servers"] = {k: v for k, v in s["servers"].items() if k in keep}
    baseline = baseline_medians(args.baseline or [c.RESULTS / "latest.json",
                                                   c.RESULTS / "broadcast.json"])
    result = c.run_suite(args, every, "guard.py")
    rows = ["| scenario | server | figure | recorded | now | now / then | vs ceiling | |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    verdict = 0
    for scen in result["scenarios"]:
        if any(not r["clean"] for r in scen["runs"]):
            verdict = max(verdict, 2)
        r, v = judge(scen["id"], scen["medians"], baseline.get(scen["id"], {}),
                     args.threshold)
        rows += r
        verdict = max(verdict, v)
    print("\n".join(rows))
    print({0: "guard: no regression past the threshold",
           1: f"guard: REGRESSION past {args.threshold:.2f}",
           2: "guard: a run failed or a figure is missing"}[verdict])
    return verdict


if __name__ == "__main__":
    sys.exit(main())
