"""Start-up time of the command line: `metatune --help`, every verb's --help, and a bad path reported.

Target (issue 13): each under 1 s with a warm disk cache. Prints a table and writes benchmarks/results/cli.json.
Usage: .venv/bin/python benchmarks/cli.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from metatune.atomic import write_text

COMMANDS = [["--help"], ["demo", "--help"]] + [
    [domain, verb, "--help"] for domain, verbs in (("robot", ("train", "adapt", "evaluate")),
                                                   ("hmr", ("train", "adapt", "evaluate", "infer")),
                                                   ("relight", ("generate", "train", "evaluate", "adapt", "render",
                                                                "export")))
    for verb in verbs] + [["hmr", "infer", "/nonexistent.png", "--keypoints", "/nonexistent.json", "--out", "/tmp/x"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for cmd in COMMANDS:
        subprocess.run([sys.executable, "-m", "metatune", *cmd], capture_output=True)  # warm the disk cache
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "metatune", *cmd], capture_output=True)
            times.append(time.perf_counter() - t0)
        rows.append({"command": "metatune " + " ".join(cmd), "median_s": round(statistics.median(times), 3),
                     "max_s": round(max(times), 3)})
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{'command':<78} {'median s':>9} {'max s':>7}")
    for r in rows:
        print(f"{r['command']:<78} {r['median_s']:>9.3f} {r['max_s']:>7.3f}")
    worst = max(r["max_s"] for r in rows)
    print(f"slowest {worst:.3f} s (target < 1 s): {'met' if worst < 1 else 'MISSED'}; peak child RSS {peak_mb:.0f} MB")
    out = Path(__file__).parent / "results" / "cli.json"
    write_text(out, json.dumps({"rows": rows, "slowest_s": worst, "target_s": 1.0, "peak_child_rss_mb": peak_mb},
                               indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
