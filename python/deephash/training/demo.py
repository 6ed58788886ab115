"""``deephash demo``: HAGCN against an LSH floor, end to end, with its report.

One call trains the method (:func:`~deephash.training.run.train_and_evaluate`, into ``OUT/hagcn``), fits
LSH (and ITQ, the baseline to beat on learned embeddings), prints their table, writes ``OUT/pr_curve.png``,
``OUT/demo.json`` and the report of the run (``OUT/report.html``, ``OUT/neighbours.png``). The command
line (:mod:`deephash.cli.train`) only turns its arguments into the method and the data.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..data import load_data
from ..methods import LSH, HashMethod, get_method
from ..metrics import format_table, plot_pr_curve
from ..views.report import build_report
from .run import fit_and_evaluate, train_and_evaluate


def self_supervised_data(data, out: Path, *, quick: bool, seed: int, device: str, progress: bool = True,
                         log=print) -> str:
    """Train (or find in the cache) SimCLR embeddings of ``data``'s images; the .npz the demo then runs on
    (``out/embeddings.npz``)."""
    from ..data.selfsup import config_from, self_supervised_embeddings

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)  # the run directory holds the embeddings too
    path = out / "embeddings.npz"
    info = self_supervised_embeddings(data, path, config=config_from(quick=quick), seed=seed, device=device,
                                      progress=progress, clamp_subset=True)
    if info["y"] is None:
        raise ValueError(f"{data}: the demo evaluates against labels; the data set has none")
    how = f"trained in {info['train_seconds']:.0f} s" if info["trained"] else "from the cache"
    log(f"self-supervised embeddings of {data} ({how}): {info['x'].shape[1]}-d, wrote {path}")
    return str(path)


def run_demo(data, method: HashMethod, out: Path, *, seed: int = 0, split_seed: int | None = None,
             train_per_class: int | str | None = None, resume: bool = False, embeddings: str = "pixels",
             log=print) -> dict:
    """The demo on ``data`` (anything :func:`~deephash.data.load_data` reads, with ``split_seed`` and
    ``train_per_class``) with ``method`` (fitted here) into ``out``; ``embeddings="self-supervised"`` says
    ``data`` is learned embeddings, so ITQ runs too. Returns what ``demo.json`` holds."""
    out = Path(out)
    split = load_data(data, seed=split_seed, train_per_class=train_per_class)
    log(f"data: {data}: {len(split.x_train)} training, {len(split.x_query)} queries, "
        f"{len(split.x_db)} database items, {split.dim}-d")
    metrics, curve = train_and_evaluate(split, method, out / "hagcn", resume=resume,
                                        extra_config={"data": str(data), "split_seed": split_seed,
                                                      "train_per_class": train_per_class})
    bits = method.bits
    lsh_metrics, lsh_curve = fit_and_evaluate(LSH(bits, seed=seed), split)
    lsh_metrics.pop("train_seconds")
    rows = [{"method": f"{method.label} {bits}b", **metrics}, {"method": f"LSH {bits}b", **lsh_metrics}]
    curves = {rows[0]["method"]: curve, rows[1]["method"]: lsh_curve}
    extra = {}
    if embeddings == "self-supervised":  # learned embeddings: ITQ too, the baseline to beat there
        itq_metrics, itq_curve = fit_and_evaluate(get_method("itq", bits, seed=seed), split)
        itq_metrics.pop("train_seconds")
        rows.append({"method": f"ITQ {bits}b", **itq_metrics})
        curves[rows[-1]["method"]] = itq_curve
        extra = {"itq": itq_metrics, "embeddings": "self-supervised"}
    log(format_table(rows, first="method"))
    plot_pr_curve(curves, out / "pr_curve.png")
    summary = {"hagcn": {k: metrics[k] for k in metrics if k != "loss_history"}, "lsh": lsh_metrics,
               "data": str(data), "bits": bits, **extra}
    with open(out / "demo.json", "w") as f:
        json.dump(summary, f, indent=2)
    log(f"wrote {out}/pr_curve.png and {out}/demo.json")
    r = build_report([out / "hagcn"], out / "report.html", data=data, split_seed=split_seed,
                     splits={(str(data), split_seed): split}, grid_out=out / "neighbours.png")
    log("\n".join(r["notes"] + [f"wrote {r['out']}" + (f" and {r['grid']}" if r["grid"] else "")]))
    return summary
