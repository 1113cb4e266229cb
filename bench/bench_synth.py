"""Benchmark the synthetic generator and check its prepared statistics against thesis Table 3.1 / 3.2.

    .venv/bin/python bench/bench_synth.py beauty /tmp/synth-beauty [--seed 0]

Prints generation time and peak RSS of the generator (measured in a child process, so the prepare step does
not inflate it), then runs the real ``coldlabel.data.prepare`` on the output and prints every table row next to the
thesis value and the ratio; exits 1 if any row is outside ±20 %.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THESIS = {  # thesis §3.2, Tables 3.1 and 3.2, in coldlabel.data.stats.TABLE_ROWS order
    "beauty": [198_502, 138_951, 59_551, 123_498, 53_022, 651, 2_722, 6.37, 19_641, 13_400, 10_678],
    "health": [345_725, 242_007, 103_718, 217_480, 95_000, 926, 3_740, 5.92, 34_869, 25_425, 21_685],
}
TOLERANCE = 0.20


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("preset")
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    code = ("import resource, sys, time; from pathlib import Path; from coldlabel.data import synth; "
            "t = time.perf_counter(); s = synth.generate(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, s)")
    done = subprocess.run([sys.executable, "-c", code, args.preset, str(args.out), str(args.seed)],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    seconds, rss_kib, summary = done.stdout.strip().split(" ", 2)
    print(f"generate({args.preset!r}, seed={args.seed}): {float(seconds):.1f} s, "
          f"peak RSS {int(rss_kib) / 1024:.0f} MiB  [{summary}]")

    from coldlabel.config import load_settings
    from coldlabel.data.prepare import prepare
    from coldlabel.data.stats import TABLE_ROWS
    from coldlabel.data.workspace import Workspace

    ws = Workspace(args.out)
    t = time.perf_counter()
    prepare(ws, load_settings().data, force=True)
    print(f"prepare: {time.perf_counter() - t:.1f} s, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    table = json.loads((ws.processed / "stats.json").read_text())["table"]
    target = THESIS.get(args.preset)
    bad = 0
    for n, row in enumerate(TABLE_ROWS):
        value = table[row]
        if target is None:
            print(f"{row:<40} {value:>10,}")
            continue
        ratio = value / target[n]
        ok = abs(ratio - 1) <= TOLERANCE
        bad += not ok
        print(f"{row:<40} {value:>10,} thesis {target[n]:>10,} ratio {ratio:5.3f} {'ok' if ok else 'OUT'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
