"""``deephash report``: one self-contained HTML page about runs (:mod:`deephash.views.report`)."""
from __future__ import annotations

from pathlib import Path

from .args import grid_args


def add_report(sub) -> None:
    r = sub.add_parser("report", help="one self-contained HTML page about runs, with ITQ and LSH baselines")
    r.add_argument("runs", nargs="+", metavar="RUN", help="run directories (of deephash train / demo)")
    r.add_argument("-k", type=int, default=10, help="results per query in the neighbour grid")
    r.add_argument("--out", default=None, help="the HTML file (default RUN/report.html; needed with several runs)")
    r.add_argument("--grid", default=None, metavar="PNG", help="also write the first run's neighbour grid")
    grid_args(r, data_default=None)
    r.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from ..views.report import ReportError, build_report

    if len(args.runs) > 1 and args.out is None:
        raise ReportError("--out FILE.html is needed with several runs")
    r = build_report(args.runs, args.out or Path(args.runs[0]) / "report.html", data=args.data,
                     split_seed=args.split_seed, k=args.k, per_class=args.per_class, seed=args.seed,
                     grid_out=args.grid)
    print("\n".join(r["notes"] + [f"wrote {r['out']}" + (f" and {r['grid']}" if r["grid"] else "")]))
    return 0
