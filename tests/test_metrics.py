import numpy as np
import torch

from deephash import metrics


def _brute(q, db, ql, dl, k):
    """AP@k and P@k as docs/metrics.md defines them, in plain numpy."""
    ham = (q[:, None, :] != db[None, :, :]).sum(-1)
    aps, precs = [], []
    for i in range(len(q)):
        order = sorted(range(len(db)), key=lambda j: (ham[i, j], j))[:k]
        rel = np.array([ql[i] == dl[j] for j in order], dtype=float)
        hits = np.cumsum(rel)
        aps.append((hits / np.arange(1, len(rel) + 1) * rel).sum() / rel.sum() if rel.sum() else 0.0)
        precs.append(rel.mean())
    return float(np.mean(aps)), float(np.mean(precs)), ham


def test_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    q = np.sign(rng.normal(size=(15, 12)))
    db = np.sign(rng.normal(size=(80, 12)))
    ql, dl = rng.integers(0, 3, 15), rng.integers(0, 3, 80)
    ap, prec, ham = _brute(q, db, ql, dl, 10)
    assert abs(metrics.mean_average_precision(torch.tensor(q), torch.tensor(db), ql, dl, 10) - ap) < 1e-9
    assert abs(metrics.precision_at_k(torch.tensor(q), torch.tensor(db), ql, dl, 10) - prec) < 1e-9
    p2, empty = metrics.precision_within_radius(torch.tensor(q), torch.tensor(db), ql, dl, 12, 2)
    exp = []
    for i in range(15):
        m = ham[i] <= 2
        exp.append((ql[i] == dl[m]).mean() if m.any() else 0.0)
    assert abs(p2 - np.mean(exp)) < 1e-9
    assert abs(empty - np.mean([not (ham[i] <= 2).any() for i in range(15)])) < 1e-9
    curve = metrics.pr_curve(torch.tensor(q), torch.tensor(db), ql, dl, 12)
    assert curve["recall"][-1] == 1.0 and len(curve["precision"]) == 13
    assert all(a <= b + 1e-12 for a, b in zip(curve["recall"], curve["recall"][1:]))


def test_evaluate_keys_and_plot(tmp_path):
    rng = np.random.default_rng(1)
    q, db = np.sign(rng.normal(size=(5, 16))), np.sign(rng.normal(size=(40, 16)))
    m, curve = metrics.evaluate(torch.tensor(q), torch.tensor(db), np.arange(5) % 2, np.arange(40) % 2, 16)
    assert set(metrics.METRIC_KEYS) <= set(m)
    metrics.plot_pr_curve({"x": curve}, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").read_bytes()[:4] == b"\x89PNG"


def test_multi_hot_labels_share_one_label():
    rng = np.random.default_rng(2)
    q, db = np.sign(rng.normal(size=(6, 16))), np.sign(rng.normal(size=(30, 16)))
    ql = (rng.random((6, 4)) > 0.6).astype(np.uint8)
    dl = (rng.random((30, 4)) > 0.6).astype(np.uint8)
    p2, _ = metrics.precision_within_radius(torch.tensor(q), torch.tensor(db), ql, dl, 16, 16)
    rel = (ql.astype(int) @ dl.T.astype(int)) > 0
    assert abs(p2 - rel.mean(1).mean()) < 1e-9  # radius 16 of 16 bits retrieves everything
    m, _ = metrics.evaluate(torch.tensor(q), torch.tensor(db), ql, dl, 16)
    assert 0 <= m["mAP@all"] <= 1
