"""Times two builds of deephash_ext with the same benchmark command, alternating between them, and
prints the median of each table row per build and their ratio (before / after: > 1 means the second
build is faster).

Each side is a source tree with its extension built in place (``setup.py build_ext --inplace``); the
command runs from this checkout with ``PYTHONPATH`` set to that tree, so both sides run the same
benchmark script. Rounds alternate the order (A B, B A, ...) so that a drift in the machine's speed
falls on both. Rows are the markdown table rows the benchmark prints: the cells before the first
number name the row, the first number is its time.

    python benchmarks/compare_builds.py --before /tmp/main --after . --rounds 5 -- \\
        python benchmarks/bench_spectral.py --shapes 64x128x256 --reps 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys


def table_rows(text: str) -> dict[str, float]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2:
            continue
        for i, c in enumerate(cells):
            try:
                value = float(c)
            except ValueError:
                continue
            if i > 0:
                rows[" | ".join(cells[:i])] = value
            break
    return rows


def run(tree: str, command: list[str]) -> dict[str, float]:
    tree = os.path.abspath(tree)
    env = dict(os.environ, PYTHONPATH=f"{tree}:{os.path.join(tree, 'python')}")
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return table_rows(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="source tree of the first build")
    p.add_argument("--after", required=True, help="source tree of the second build")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("command", nargs=argparse.REMAINDER, help="the benchmark command, after --")
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    times: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        for side in order:
            for row, value in run(getattr(args, side), command).items():
                times[side].setdefault(row, []).append(value)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"command: `{' '.join(command)}`; {args.rounds} rounds, order alternating\n")
    print("| row | before ms (median) | after ms (median) | before / after | per-round range |")
    print("|---|---:|---:|---:|---:|")
    for row, before in times["before"].items():
        after = times["after"].get(row)
        if not after:
            continue
        ratios = [b / a for b, a in zip(before, after)]
        print(f"| {row} | {statistics.median(before):.2f} | {statistics.median(after):.2f} | "
              f"{statistics.median(before) / statistics.median(after):.3f} | {min(ratios):.2f}-{max(ratios):.2f} |")


if __name__ == "__main__":
    main()
