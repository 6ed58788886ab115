"""``deephash report``: one self-contained HTML page about one or more runs.

The page (``RUN/report.html`` by default) holds, for each run and for the ITQ and LSH baselines fitted
on the same split (same data, split seed, bits and seed):

- the configuration (``config.json``), side by side;
- the metrics table (the run's ``metrics.json``; the baselines are evaluated here);
- the PR curve, precision at k (k = 1 .. 1000, ties by database row) and precision within Hamming
  radius r (a query with nothing within r counts 0, as P@r2);
- the neighbour grid of each run and of ITQ on the same queries, for data that can be drawn
  (:mod:`deephash.views.viz`);
- the training loss per epoch (runs whose ``metrics.json`` holds ``loss_history``);
- timings: training (from ``metrics.json``; the baselines' fits measured here), encoding the queries and
  the database, and the top-1000 search of every query, measured on the machine that builds the report.

Images are inlined as base64 PNG, the page loads nothing from the network and carries no date. Built
twice from the same runs it is the same byte for byte except the cells of measured seconds (each marked
``class="timing"``), which are measured afresh.
"""
from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from . import viz

METRIC_COLUMNS = ("mAP@1000", "mAP@all", "mAP@all-tie-aware", "P@1000", "P@r2", "P@r2-empty")
K_VALUES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
BASELINES = ("itq", "lsh")
GRID_BASELINE = "itq"


class ReportError(ValueError):
    """A run directory or option the report cannot use; the message names it."""


# ---------------------------------------------------------------------------------------------
# Runs


@dataclass
class Run:
    path: Path
    config: dict
    metrics: dict

    @property
    def bits(self) -> int:
        return int(self.config["model"]["bits"])

    @property
    def label(self) -> str:
        m = self.config["model"]
        method = m.get("method")
        if method in ("hagcn", "hagcn-net", "hagcn-paper"):  # as the HAGCN methods' labels
            recipe = {"hagcn-net": " (network)", "hagcn-paper": " (paper recipe)"}.get(method, "")
            return f"HAGCN {m.get('filter', '')}{recipe} {self.bits}b".replace("  ", " ")
        return f"{method} {self.bits}b"


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ReportError(f"{path.parent}: not a run directory (no {path.name})") from None
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: cannot read ({e})") from e
    if not isinstance(d, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return d


def read_run(path) -> Run:
    p = Path(path)
    if not p.is_dir():
        raise ReportError(f"{p}: no such run directory")
    cfg = _read_json(p / "config.json")
    if not isinstance(cfg.get("model"), dict) or "bits" not in cfg["model"]:
        raise ReportError(f"{p / 'config.json'}: no model configuration (model.bits)")
    bits = cfg["model"]["bits"]
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 1 << 20:
        raise ReportError(f"{p / 'config.json'}: model.bits must be a code length in bits, got {bits!r}")
    metrics = _read_json(p / "metrics.json")
    _check_fields(p / "config.json", cfg, CONFIG_FIELDS)
    _check_fields(p / "config.json", cfg["model"], MODEL_FIELDS, "model.")
    _check_fields(p / "metrics.json", metrics, METRIC_FIELDS)
    curve = metrics.get("pr_curve")
    if curve is not None:
        _check_fields(p / "metrics.json", curve, {key: _numbers for key in ("radius", "precision", "recall")},
                      "pr_curve.", required=True)
        if len({len(curve[key]) for key in ("radius", "precision", "recall")}) != 1:
            raise ReportError(f"{p / 'metrics.json'}: pr_curve.radius, .precision and .recall differ in length")
    if not (p / "model.pt").is_file():
        raise ReportError(f"{p}: not a run directory (no model.pt)")
    return Run(p, cfg, metrics)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v) -> bool:
    return isinstance(v, list) and all(_number(x) for x in v)


def _check_fields(path: Path, d, fields: dict, prefix: str = "", required: bool = False) -> None:
    """Refuse, naming the file and the key, a value of ``d`` that is not what the report reads there (a
    hand-edited or foreign run file); absent keys are fine unless ``required``."""
    if not isinstance(d, dict):
        raise ReportError(f"{path}: {prefix.rstrip('.')} must be a JSON object")
    for key, ok in fields.items():
        if key not in d:
            if required:
                raise ReportError(f"{path}: {prefix}{key} is missing")
            continue
        if not ok(d[key]):
            raise ReportError(f"{path}: {prefix}{key} has the wrong type or value ({_short(d[key])})")


def _short(v) -> str:
    text = json.dumps(v) if isinstance(v, (dict, list, str, int, float, bool)) or v is None else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
CONFIG_FIELDS = {"seed": lambda v: _int(v) and 0 <= v < 2**32, "data": lambda v: isinstance(v, str),
                 "split_seed": lambda v: v is None or (_int(v) and 0 <= v < 2**32)}
MODEL_FIELDS = {"method": lambda v: isinstance(v, str), "in_dim": lambda v: _int(v) and v >= 1,
                "filter": lambda v: v is None or isinstance(v, str)}
METRIC_FIELDS = {**{key: _number for key in (*METRIC_COLUMNS, "train_seconds")},
                 "loss_history": _numbers, "pr_curve": lambda v: isinstance(v, dict)}


# ---------------------------------------------------------------------------------------------
# What each row of the report holds


@dataclass
class Entry:
    name: str
    kind: str                   # "run" or "baseline"
    bits: int
    data: str
    metrics: dict
    pr_curve: dict
    ks: list
    p_at_k: list
    p_radius: list
    timings: dict               # seconds: "train", "encode", "search"; None when not known
    loss_history: list | None = None
    filter_response: dict | None = None  # a trained HAGCN's encoding filter g(λ) before and after training
    config: dict | None = None
    grid: bytes | None = None
    note: str = ""


@dataclass
class DataSet:
    spec: str
    split_seed: int | None
    split: object
    images: viz.ItemImages | None
    why_not: str

    @property
    def name(self) -> str:
        return self.spec if self.split_seed is None else f"{self.spec} (split seed {self.split_seed})"


def precision_at_ks(qc, dc, q_labels, db_labels, ks, chunk: int = 256) -> tuple[list, list, float]:
    """(ks, P@k for each k, seconds of the top-k searches): the relevant fraction of the exact Hamming top
    k (ties by database row, as P@1000), mean over all queries. ``ks`` beyond the database are dropped."""
    import deephash_ext

    from ..codes import as_packed

    qp, dp = as_packed(qc), as_packed(dc)
    ks = [k for k in ks if k <= dp.shape[0]] or [dp.shape[0]]
    kmax = max(ks)
    sums = np.zeros(kmax)
    seconds = 0.0
    ql, dl = np.asarray(q_labels), np.asarray(db_labels)
    for s in range(0, qp.shape[0], chunk):
        t0 = time.perf_counter()
        _, rows = deephash_ext.hamming_topk(qp[s:s + chunk], dp, kmax)
        seconds += time.perf_counter() - t0
        rel = viz.label_match(ql[s:s + chunk], dl[rows.numpy()]).astype(np.float64)
        sums += (np.cumsum(rel, axis=1) / np.arange(1, kmax + 1)).sum(0)
    p = sums / max(qp.shape[0], 1)
    return ks, [float(p[k - 1]) for k in ks], seconds


def precision_within_radii(qc, dc, q_labels, db_labels, bits: int) -> list:
    """P@r for r = 0..bits: the relevant fraction of the items within radius r, 0 for a query with none."""
    from ..metrics import distance_histograms

    n_all, n_rel = distance_histograms(qc, dc, q_labels, db_labels, bits)
    ret = n_all.cumsum(1).double()
    rel = n_rel.cumsum(1).double()
    prec = torch.where(ret > 0, rel / ret.clamp_min(1), torch.zeros_like(ret))
    return prec.mean(0).tolist()


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def _grid(ds: DataSet, qc, dc, k: int, seed: int, per_class: int, title: str) -> bytes | None:
    if ds.images is None:
        return None
    data, _ = viz.grid_for_codes(ds.images, ds.split, qc, dc, k=k, per_class=per_class, seed=seed, title=title)
    return data


def _codes(model, split):
    qc, t_q = _timed(model.encode, split.x_query)
    dc, t_d = _timed(model.encode, split.x_db)
    return qc, dc, t_q + t_d


def run_entry(run: Run, ds: DataSet, *, k: int, per_class: int, seed: int) -> Entry:
    from ..methods import load_model

    split = ds.split
    try:
        model = load_model(run.path)
    except ValueError as e:
        raise ReportError(str(e)) from e
    in_dim = run.config["model"].get("in_dim")
    if in_dim is not None and int(in_dim) != split.dim:
        raise ReportError(f"{run.path}: the model takes {in_dim}-d embeddings, {ds.spec} has {split.dim}-d")
    qc, dc, t_enc = _codes(model, split)
    ks, pk, t_search = precision_at_ks(qc, dc, split.y_query, split.y_db, K_VALUES)
    metrics = {key: run.metrics[key] for key in METRIC_COLUMNS if key in run.metrics}
    curve = run.metrics.get("pr_curve")
    if len(metrics) < len(METRIC_COLUMNS) or not isinstance(curve, dict):
        from ..metrics import evaluate

        metrics, curve = evaluate(qc, dc, split.y_query, split.y_db, run.bits)
    train_s = run.metrics.get("train_seconds")
    loss = run.metrics.get("loss_history")
    response = run.metrics.get("filter_response")
    return Entry(filter_response=response if isinstance(response, dict) and "after" in response else None,
                 name=f"{run.label} ({run.path.name})", kind="run", bits=run.bits, data=ds.name, metrics=metrics,
                 pr_curve=curve, ks=ks, p_at_k=pk, p_radius=precision_within_radii(qc, dc, split.y_query, split.y_db,
                                                                                   run.bits),
                 timings={"train": float(train_s) if train_s is not None else None, "encode": t_enc,
                          "search": t_search},
                 loss_history=list(loss) if isinstance(loss, list) and loss else None, config=run.config,
                 grid=_grid(ds, qc, dc, k, seed, per_class, f"{run.label} ({run.path.name}): top {k} by Hamming "
                            f"distance; green frame = same label, red = other label"))


def baseline_entry(name: str, ds: DataSet, bits: int, seed: int, *, k: int, per_class: int, grid: bool) -> Entry:
    from ..methods import get_method
    from ..metrics import evaluate

    split = ds.split
    label = f"{name.upper()} {bits}b (baseline)"
    method = get_method(name, bits, seed=seed)
    try:
        _, t_fit = _timed(method.fit, split.x_train)
    except ValueError as e:
        return Entry(label, "baseline", bits, ds.name, {}, {}, [], [], [], {}, note=f"not computed: {e}")
    qc, dc, t_enc = _codes(method, split)
    metrics, curve = evaluate(qc, dc, split.y_query, split.y_db, bits)
    ks, pk, t_search = precision_at_ks(qc, dc, split.y_query, split.y_db, K_VALUES)
    return Entry(label, "baseline", bits, ds.name, metrics, curve, ks, pk,
                 precision_within_radii(qc, dc, split.y_query, split.y_db, bits),
                 {"train": t_fit, "encode": t_enc, "search": t_search},
                 config={"model": method.config},
                 grid=_grid(ds, qc, dc, k, seed, per_class, f"{label}: top {k} by Hamming distance; green frame = "
                            f"same label, red = other label") if grid else None)


# ---------------------------------------------------------------------------------------------
# Building the report


def build_report(run_dirs, out, *, data=None, split_seed=None, k: int = 10, per_class: int = 2, seed: int = 0,
                 splits: dict | None = None, grid_out=None, title: str | None = None) -> dict:
    """Write the report of ``run_dirs`` to ``out``; returns ``{"out", "grid", "entries", "notes"}``.

    ``data`` (and ``split_seed``) replace the data set named in the runs' ``config.json``; ``splits`` maps
    ``(data, split_seed)`` to an already loaded split. ``grid_out`` receives the first run's neighbour grid."""
    from ..data import load_data

    if not 1 <= int(k) <= viz.MAX_GRID_K:
        raise ReportError(f"-k must be in 1..{viz.MAX_GRID_K}, got {k}")
    if not 1 <= int(per_class) <= viz.MAX_PER_CLASS:
        raise ReportError(f"--per-class must be in 1..{viz.MAX_PER_CLASS}, got {per_class}")
    runs = [read_run(p) for p in run_dirs]
    if not runs:
        raise ReportError("no run directories given")
    for path in (out, grid_out):
        if path is not None and not Path(path).parent.is_dir():
            raise ReportError(f"{path}: no such directory {Path(path).parent}")
    out = Path(out)
    splits = dict(splits or {})
    datasets: dict = {}
    entries, notes, done_baselines = [], [], set()
    for run in runs:
        spec = data if data is not None else run.config.get("data")
        sseed = split_seed if data is not None else run.config.get("split_seed")
        if spec is None:
            raise ReportError(f"{run.path / 'config.json'}: names no data set; pass --data")
        key = (str(spec), sseed)
        if key not in datasets:
            split = splits.get(key)
            if split is None:
                split = load_data(spec, seed=sseed)
            images, why = viz.item_images(spec, split, sseed)
            datasets[key] = DataSet(str(spec), sseed, split, images, why)
            if images is None:
                notes.append(f"{spec}: no neighbour grid ({why})")
        ds = datasets[key]
        entries.append(run_entry(run, ds, k=k, per_class=per_class, seed=seed))
        run_seed = int(run.config.get("seed", 0))
        bkey = (key, run.bits, run_seed)
        if bkey not in done_baselines:
            done_baselines.add(bkey)
            for name in BASELINES:
                entries.append(baseline_entry(name, ds, run.bits, run_seed, k=k, per_class=per_class,
                                              grid=name == GRID_BASELINE))
    page = render_html(entries, list(datasets.values()), runs, notes, k=k, per_class=per_class, seed=seed,
                       title=title)
    # The package's one writer: a temporary of a unique name (O_EXCL, so a planted symlink is never
    # followed), renamed over a regular file; a device or FIFO is written in place (deephash.atomic).
    with atomic_write(out) as f:
        f.write(page.encode("utf-8"))
    grid_written = None
    if grid_out is not None and entries[0].grid is not None:
        with atomic_write(grid_out) as f:
            f.write(entries[0].grid)
        grid_written = Path(grid_out)
    return {"out": out, "grid": grid_written, "entries": entries, "notes": notes}


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1600px;
       color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.baseline td { color: #555; }
figure { margin: 12px 0; display: table; }
figcaption { display: table-caption; caption-side: bottom; font-size: 13px; color: #444; margin-top: 4px; }
p.note { font-size: 13px; color: #444; }
img { display: block; }
div.row { display: flex; flex-wrap: wrap; gap: 0 32px; align-items: flex-start; }
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _img(data: bytes, alt: str) -> str:
    w, h = viz.png_size(data)
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{b64}" width="{w}" height="{h}" alt="{_e(alt)}">'


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for key, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = v
    return out


def _table(head: list, rows: list, cls: str, row_classes: list | None = None) -> str:
    """``rows`` of cells: a string (text) or a ``(text, css class)`` pair."""
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        rc = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = []
        for c in row:
            text, klass = c if isinstance(c, tuple) else (c, "")
            cells.append(f'<td class="{klass}">{_e(text)}</td>' if klass else f"<td>{_e(text)}</td>")
        out.append(f"<tr{rc}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}">\n<h2>{_e(title)}</h2>\n{body}\n</section>\n'


def _figure(data: bytes, alt: str, caption: str) -> str:
    return f"<figure>{_img(data, alt)}<figcaption>{_e(caption)}</figcaption></figure>"


def _style(e: Entry) -> dict:
    return {"linestyle": "--", "linewidth": 1.2} if e.kind == "baseline" else {"linewidth": 2.0}


def render_html(entries: list, datasets: list, runs: list, notes: list, *, k: int, per_class: int, seed: int,
                title: str | None = None) -> str:
    import matplotlib

    run_entries = [e for e in entries if e.kind == "run"]
    shown = [e for e in entries if not e.note]
    title = title or ("deephash run report: " + ", ".join(str(r.path.name) for r in runs))
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>", f"<h1>{_e(title)}</h1>"]
    intro = (f"Runs: {', '.join(str(r.path) for r in runs)}. Baselines: ITQ and LSH fitted on each run's "
             f"training split with its bits and seed. Made by deephash report (torch {torch.__version__}, "
             f"matplotlib {matplotlib.__version__}).")
    parts.append(f'<p class="note">{_e(intro)}</p>')

    # Configuration: one column per run.
    flat = [_flatten(e.config or {}) for e in run_entries]
    keys = sorted(set().union(*flat)) if flat else []
    rows = [[key] + [_fmt(f.get(key, "")) for f in flat] for key in keys]
    parts.append(_section("configuration", "Configuration",
                          _table(["setting"] + [e.name for e in run_entries], rows, "config")))

    # Data and metrics.
    data_lines = "".join(
        f'<p class="note">{_e(d.name)}: {len(d.split.x_train)} training, {len(d.split.x_query)} query and '
        f"{len(d.split.x_db)} database items, {d.split.dim}-d.</p>" for d in datasets)
    rows, classes = [], []
    for e in entries:
        if e.note:
            rows.append([e.name, e.data] + [""] * len(METRIC_COLUMNS) + [e.note])
        else:
            rows.append([e.name, e.data] + [(f"{e.metrics[key]:.4f}", "num") if key in e.metrics else ""
                                             for key in METRIC_COLUMNS] + [""])
        classes.append(e.kind)
    metrics_note = ('<p class="note">mAP@k and P@1000 rank by Hamming distance, ties by database row; '
                    "mAP@all-tie-aware averages over tied orders; P@r2 counts a query with no item within "
                    "radius 2 as 0, and P@r2-empty is the fraction of such queries.</p>")
    parts.append(_section("metrics", "Retrieval metrics",
                          data_lines + _table(["method", "data", *METRIC_COLUMNS, "note"], rows, "metrics", classes)
                          + metrics_note))

    # Curves.
    pr = viz.line_figure([(e.name, e.pr_curve["recall"], e.pr_curve["precision"], {**_style(e), "marker": "."})
                          for e in shown], "recall", "precision", "Precision-recall (Hamming radius sweep)",
                         xlim=(0, 1), ylim=(0, 1.02))
    parts.append('<div class="row">')
    parts.append(_section("pr-curve", "Precision-recall",
                          _figure(pr, "precision-recall curves", "Retrieving every item within Hamming radius "
                                  "r = 0 .. bits; precision averages over the queries that retrieve something.")))
    pk = viz.line_figure([(e.name, e.ks, e.p_at_k, {**_style(e), "marker": "o", "markersize": 3}) for e in shown],
                         "k", "precision@k", "Precision at k", xlog=True, ylim=(0, 1.02))
    parts.append(_section("precision-at-k", "Precision at k",
                          _figure(pk, "precision at k curves", "Relevant fraction of the exact Hamming top k "
                                  "(ties by database row), mean over all queries.")))
    pr_r = viz.line_figure([(e.name, list(range(len(e.p_radius))), e.p_radius, _style(e)) for e in shown],
                           "Hamming radius r", "precision within r", "Precision within Hamming radius",
                           ylim=(0, 1.02))
    parts.append(_section("precision-radius", "Precision within Hamming radius",
                          _figure(pr_r, "precision within radius curves", "Relevant fraction of the items within "
                                  "radius r; a query with no item within r counts 0 (as P@r2).")))

    # Training loss.
    losses = [e for e in run_entries if e.loss_history]
    if losses:
        fig = viz.line_figure([(e.name, list(range(1, len(e.loss_history) + 1)), e.loss_history,
                                {"marker": "o", "markersize": 3}) for e in losses],
                              "epoch", "mean training loss", "Training loss", integer_x=True)
        body = _figure(fig, "training loss curves", "Mean loss over each epoch's steps (metrics.json: loss_history).")
    else:
        body = ""
    missing = [e.name for e in run_entries if not e.loss_history]
    if missing:
        body += f'<p class="note">No loss history recorded for {_e(", ".join(missing))}.</p>'
    parts.append(_section("loss", "Training loss", body))
    responses = [e for e in run_entries if e.filter_response]
    if responses:  # the trained HAGCN: its learned encoding filter against the closed form's heat kernel
        series = [("heat kernel (closed form, before)", responses[0].filter_response["lambda"],
                   responses[0].filter_response["before"], {"linestyle": "--", "color": "0.4"})]
        series += [(f"{e.name} (after)", e.filter_response["lambda"], e.filter_response["after"], {})
                   for e in responses]
        fig = viz.line_figure(series, "λ (normalized Laplacian eigenvalue)", "g(λ)", "Encoding filter g(λ)",
                              ylim=(0, 1.05))
        parts.append(_section("filter", "Learned encoding filter", _figure(
            fig, "encoding filter before and after training", "The filter of the encoding subgraphs: the "
            "closed form's heat kernel before training and the learned one after (metrics.json: "
            "filter_response).")))
    parts.append("</div>")

    # Neighbour grids.
    grids = [e for e in entries if e.grid is not None]
    body = (f'<p class="note">Queries: {per_class} per class, drawn with seed {seed}, the same for every '
            f"method; each row is a query (blue frame) and its top {k} database items by Hamming distance "
            f"(ties by database row), framed green when the label matches the query's and red when not, "
            f"with the distance under each.</p>") if grids else ""
    body += '<div class="row">' + "".join(_figure(e.grid, f"neighbour grid of {e.name}", e.name) for e in grids) + "</div>"
    body += "".join(f'<p class="note">{_e(n)}</p>' for n in notes)
    parts.append(_section("neighbours", "Nearest neighbours", body))

    # Timings.
    rows = []
    for e in entries:
        def cell(key, e=e):
            v = e.timings.get(key)
            return (f"{v:.3f}", "num timing") if v is not None else ("", "timing")
        rows.append([e.name, cell("train"), cell("encode"), cell("search")])
    note = (f'<p class="note">Seconds. Training: the run\'s own measurement (metrics.json: train_seconds); '
            f"the baselines' fits, the encoding of the query and database items and the top-1000 search of "
            f"every query are measured while building this report, with {torch.get_num_threads()} torch "
            f"threads.</p>")
    parts.append(_section("timings", "Timings",
                          _table(["method", "train / fit", "encode", "top-1000 search"], rows, "timings",
                                 [e.kind for e in entries]) + note))
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
