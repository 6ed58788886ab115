"""Retrieval metrics over binary codes, computed with the deephash_ext ops.

Codes may be given as ±1 / real matrices ``[N, b]`` (bit = value > 0) or already packed ``uint8``; labels
as class ids ``[N]`` or multi-hot ``[N, C]``. Relevant means same class id, or at least one shared label
(:func:`deephash.codes.relevance`). docs/metrics.md defines each metric and its tie convention.

- ``mAP@k`` (:func:`mean_average_precision`): ``deephash_ext.topk_map(...).mean()``, the mean over ALL
  queries (a query with no relevant item in its top k counts 0), ranking by (Hamming distance, row).
  ``ties="average"`` gives the tie-aware AP over the full ranking.
- ``P@k`` (:func:`precision_at_k`): relevant fraction of the exact Hamming top k (``hamming_topk``,
  ties broken by row index), mean over all queries.
- ``P@r2`` (:func:`precision_within_radius`): for each query, the relevant fraction of the database
  items within Hamming radius 2; **a query with no item within radius 2 counts as precision 0**
  (the DeepHash convention), and the mean is over all queries. The fraction of such empty queries
  is reported too.
- PR curve (:func:`pr_curve`): for each radius r = 0..b, retrieving all items at distance <= r:
  recall = mean over all queries of (relevant retrieved / relevant in database) (queries with no
  relevant item in the database are left out), precision = mean over the queries that retrieve at
  least one item. Both come from per-query histograms of Hamming distances.
"""
from __future__ import annotations

import torch

import deephash_ext

from .codes import as_labels, as_packed, relevance

METRIC_KEYS = ("mAP@1000", "mAP@all", "mAP@all-tie-aware", "P@1000", "P@r2")


def mean_average_precision(q, db, q_labels, db_labels, k: int = 1000, ties: str = "index") -> float:
    """mAP@k (``k <= 0``: over the whole database), the mean over all queries of ``topk_map``."""
    ap = deephash_ext.topk_map(as_packed(q), as_packed(db), as_labels(q_labels), as_labels(db_labels), k, ties)
    return float(ap.mean())


def precision_at_k(q, db, q_labels, db_labels, k: int = 1000, chunk: int = 256) -> float:
    qp, dp = as_packed(q), as_packed(db)
    ql, dl = as_labels(q_labels), as_labels(db_labels)
    total = 0.0
    for s in range(0, qp.shape[0], chunk):
        _, rows = deephash_ext.hamming_topk(qp[s:s + chunk], dp, k)
        rel = relevance(ql[s:s + chunk], dl)
        total += float(torch.gather(rel, 1, rows).double().mean(1).sum())
    return total / qp.shape[0]


def distance_histograms(q, db, q_labels, db_labels, bits: int, chunk: int = 128):
    """Per-query counts ``(all[Q, bits+1], relevant[Q, bits+1])`` of database items at each Hamming distance."""
    qp, dp = as_packed(q), as_packed(db)
    ql, dl = as_labels(q_labels), as_labels(db_labels)
    n_all = torch.zeros(qp.shape[0], bits + 1, dtype=torch.int64)
    n_rel = torch.zeros_like(n_all)
    for s in range(0, qp.shape[0], chunk):
        d = deephash_ext.hamming_distance(qp[s:s + chunk], dp).to(torch.int64)
        rel = relevance(ql[s:s + chunk], dl).to(torch.int64)
        n_all[s:s + chunk].scatter_add_(1, d, torch.ones_like(d))
        n_rel[s:s + chunk].scatter_add_(1, d, rel)
    return n_all, n_rel


def precision_within_radius(q, db, q_labels, db_labels, bits: int, radius: int = 2,
                            hist=None) -> tuple[float, float]:
    """(P@r, fraction of queries with nothing within radius r); empty queries count precision 0."""
    n_all, n_rel = hist if hist is not None else distance_histograms(q, db, q_labels, db_labels, bits)
    r = min(radius, bits)
    ret = n_all[:, :r + 1].sum(1).double()
    rel = n_rel[:, :r + 1].sum(1).double()
    prec = torch.where(ret > 0, rel / ret.clamp_min(1), torch.zeros_like(ret))
    return float(prec.mean()), float((ret == 0).double().mean())


def pr_curve(q, db, q_labels, db_labels, bits: int, hist=None) -> dict:
    """Precision and recall when retrieving every item within radius r, for r = 0..bits."""
    n_all, n_rel = hist if hist is not None else distance_histograms(q, db, q_labels, db_labels, bits)
    ret = n_all.cumsum(1).double()
    rel = n_rel.cumsum(1).double()
    total_rel = rel[:, -1:]
    has_rel = total_rel[:, 0] > 0
    recall = (rel[has_rel] / total_rel[has_rel]).mean(0)
    precision = []
    for r in range(bits + 1):
        m = ret[:, r] > 0
        precision.append(float((rel[m, r] / ret[m, r]).mean()) if m.any() else float("nan"))
    return {"radius": list(range(bits + 1)), "precision": precision, "recall": recall.tolist()}


def evaluate(q, db, q_labels, db_labels, bits: int) -> tuple[dict, dict]:
    """The metrics of ``METRIC_KEYS`` (plus ``P@r2-empty``) and the PR curve."""
    qp, dp = as_packed(q), as_packed(db)
    hist = distance_histograms(qp, dp, q_labels, db_labels, bits)
    p_r2, empty = precision_within_radius(qp, dp, q_labels, db_labels, bits, 2, hist=hist)
    metrics = {
        "mAP@1000": mean_average_precision(qp, dp, q_labels, db_labels, 1000),
        "mAP@all": mean_average_precision(qp, dp, q_labels, db_labels, 0),
        "mAP@all-tie-aware": mean_average_precision(qp, dp, q_labels, db_labels, 0, "average"),
        "P@1000": precision_at_k(qp, dp, q_labels, db_labels, 1000),
        "P@r2": p_r2,
        "P@r2-empty": empty,
    }
    return metrics, pr_curve(qp, dp, q_labels, db_labels, bits, hist=hist)


def plot_pr_curve(curves: dict, path, title: str = "Precision-recall (Hamming radius sweep)") -> None:
    """Write a PNG of one or more PR curves: ``curves = {label: pr_curve(...)}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    for label, c in curves.items():
        ax.plot(c["recall"], c["precision"], marker=".", label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_table(rows: list[dict], keys=METRIC_KEYS, first: str = "method") -> str:
    """A markdown table of metric rows: column ``first`` (the row's name), then ``keys`` to 4 decimals."""
    head = f"| {first} | " + " | ".join(keys) + " |"
    sep = "|" + "---|" * (len(keys) + 1)
    body = [f"| {r[first]} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |" for r in rows]
    return "\n".join([head, sep, *body])
