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


def _codes(n, bits=16, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 2, (n, bits)) * 2.0 - 1).float()


def test_non_integer_class_ids_are_refused_not_truncated():
    import pytest

    q, db = _codes(5, seed=1), _codes(30, seed=2)
    ql, dl = np.arange(5) % 3, np.arange(30) % 3
    for bad in (ql + 0.5, np.where(ql == 0, np.nan, ql).astype(float)):
        for f in (metrics.mean_average_precision, metrics.precision_at_k):
            with pytest.raises(ValueError, match="q_labels"):
                f(q, db, bad, dl)
        with pytest.raises(ValueError, match="q_labels"):
            metrics.evaluate(q, db, bad, dl, 16)
    with pytest.raises(ValueError, match="db_labels.*dtype"):
        metrics.precision_at_k(q, db, ql, np.array([str(v) for v in dl]))
    # Integer values in a float dtype are class ids as they are.
    assert metrics.evaluate(q, db, ql.astype(float), dl.astype(np.float32), 16)[0] == \
        metrics.evaluate(q, db, ql, dl, 16)[0]


def test_any_non_zero_multi_hot_entry_is_a_label():
    rng = np.random.default_rng(3)
    q, db = _codes(6, seed=4), _codes(25, seed=5)
    ql = (rng.random((6, 4)) > 0.5).astype(np.float64)
    dl = (rng.random((25, 4)) > 0.5).astype(np.float64)
    scaled_q, scaled_db = ql * 0.5, dl * -3.0
    m1, c1 = metrics.evaluate(q, db, ql, dl, 16)
    m2, c2 = metrics.evaluate(q, db, scaled_q, scaled_db, 16)
    assert m1 == m2 and m1["mAP@all"] > 0


def test_empty_queries_and_database():
    q, db = _codes(4), _codes(10, seed=1)
    ql, dl = np.arange(4) % 2, np.arange(10) % 2
    assert np.isnan(metrics.precision_at_k(q[:0], db, ql[:0], dl))  # mean of nothing, as mAP
    assert np.isnan(metrics.mean_average_precision(q[:0], db, ql[:0], dl))
    assert metrics.precision_at_k(q, db[:0], ql, dl[:0]) == 0.0  # nothing retrieved, as mAP and P@r2
    m, curve = metrics.evaluate(q, db[:0], ql, dl[:0], 16)
    assert m["mAP@1000"] == 0.0 and m["P@1000"] == 0.0 and m["P@r2"] == 0.0 and m["P@r2-empty"] == 1.0
    # No query has a relevant item: recall is NaN at every radius (nothing to average), precision 0.
    m, curve = metrics.evaluate(q, db, np.full(4, 7), dl, 16)
    assert m["P@1000"] == 0.0 and all(np.isnan(curve["recall"]))
