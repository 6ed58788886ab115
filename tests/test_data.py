import numpy as np
import pytest

from deephash.data import DataError, load_data, paper_split, standard_split


def test_npz_xy_standard_split(blobs_npz, blobs):
    s = load_data(blobs_npz)
    x, y = blobs
    assert s.x_train.dtype == np.float32 and s.y_db.dtype == np.int64
    # 4 classes of 40: a tenth of each class (4) are queries, the rest database, training from the database
    assert len(s.x_query) == 16 and len(s.x_db) == len(x) - 16
    assert np.bincount(s.y_query).tolist() == [4, 4, 4, 4]
    qset = {r.tobytes() for r in s.x_query}
    assert not any(r.tobytes() in qset for r in s.x_db)
    dbset = {r.tobytes() for r in s.x_db}
    assert all(r.tobytes() in dbset for r in s.x_train)
    again = load_data(blobs_npz)
    assert np.array_equal(again.x_query, s.x_query)


def test_standard_protocol_counts():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 1200)
    x = rng.normal(size=(len(y), 3)).astype(np.float32)
    s = standard_split(x, y, seed=0)
    assert len(s.x_query) == 1000 and len(s.x_db) == len(y) - 1000 and len(s.x_train) == 5000
    assert np.bincount(s.y_train).tolist() == [500] * 10


def test_training_items_per_class_of_the_standard_protocol(tmp_path, blobs_npz, split_npz):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 1200)
    x = rng.normal(size=(len(y), 3)).astype(np.float32)
    default, more = standard_split(x, y, seed=0), standard_split(x, y, n_train_per_class=1000, seed=0)
    assert np.bincount(more.y_train).tolist() == [1000] * 10 and np.array_equal(more.x_query, default.x_query)
    everything = standard_split(x, y, n_train_per_class=None, seed=0)
    assert np.array_equal(everything.x_train, everything.x_db)  # "all": the whole database
    s = load_data(blobs_npz, train_per_class=7)
    assert np.bincount(s.y_train).tolist() == [7] * 4 and len(s.x_query) == 16
    assert len(load_data(blobs_npz, train_per_class="all").x_train) == 160 - 16
    # Multi-hot labels: ten times the count, at random.
    yh = (rng.random((300, 3)) > 0.5).astype(np.uint8)
    np.savez(tmp_path / "mh.npz", x=rng.normal(size=(300, 4)).astype(np.float32), y=yh)
    assert len(load_data(tmp_path / "mh.npz", train_per_class=2).x_train) == 20
    assert len(load_data(tmp_path / "mh.npz", train_per_class="all").x_train) == 300 - 30
    for bad in (0, -3, 2.5, "some", True):
        with pytest.raises(DataError, match="train_per_class must be an integer >= 1 or 'all'"):
            load_data(blobs_npz, train_per_class=bad)
    with pytest.raises(DataError, match="holds its own split"):
        load_data(split_npz, train_per_class=5)


def test_npz_explicit_split_and_multihot(tmp_path, split_npz):
    s = load_data(split_npz)
    assert (len(s.x_train), len(s.x_query), len(s.x_db)) == (100, 20, 180)
    x = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    yh = (np.random.default_rng(1).random((30, 3)) > 0.5).astype(np.uint8)
    p = tmp_path / "mh.npz"
    np.savez(p, x_train=x[:10], y_train=yh[:10], x_query=x[10:15], y_query=yh[10:15], x_db=x[15:], y_db=yh[15:])
    s = load_data(p)
    assert s.y_query.shape == (5, 3) and s.y_query.dtype == np.uint8


def test_folder_paper_split(tmp_path, blobs):
    x, y = blobs
    for i, (v, c) in enumerate(zip(x, y)):
        d = tmp_path / "emb" / str(c)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / f"{i}.npy", v)
    s = load_data(tmp_path / "emb")
    with pytest.raises(DataError, match="not to a folder"):
        load_data(tmp_path / "emb", train_per_class=3)
    n = len(x)
    assert len(s.x_train) == n - int(np.ceil(0.2 * n))
    assert len(s.x_query) + len(s.x_db) == int(np.ceil(0.2 * n))
    tr, q, db = paper_split(n, 42)
    assert len(set(tr) | set(q) | set(db)) == n
    # The permutation is RandomState(42)'s, as scikit-learn's train_test_split draws it.
    assert np.array_equal(np.sort(np.concatenate([q, db])),
                          np.sort(np.random.RandomState(42).permutation(n)[:int(np.ceil(0.2 * n))]))


def test_folder_ragged_is_refused(tmp_path):
    d = tmp_path / "emb" / "0"
    d.mkdir(parents=True)
    for i in range(5):
        np.save(d / f"{i}.npy", np.zeros(8, np.float32))
    np.save(d / "5.npy", np.zeros(7, np.float32))
    with pytest.raises(DataError, match=r"5\.npy.*ragged"):
        load_data(tmp_path / "emb")


def test_folder_nonfinite_is_refused(tmp_path):
    d = tmp_path / "emb" / "0"
    d.mkdir(parents=True)
    for i in range(5):
        np.save(d / f"{i}.npy", np.full(4, np.nan if i == 3 else 0.0, np.float32))
    with pytest.raises(DataError, match=r"3\.npy.*non-finite"):
        load_data(tmp_path / "emb")


@pytest.mark.parametrize("case, pattern", [
    ("nan", "non-finite"),
    ("labels", "does not match"),
    ("empty", "empty"),
    ("dims", "different embedding dimensions"),
    ("keys", "expected arrays"),
])
def test_bad_npz_is_refused_with_the_file_name(tmp_path, case, pattern):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    y = np.arange(20) % 2
    arrays = dict(x_train=x[:8], y_train=y[:8], x_query=x[8:12], y_query=y[8:12], x_db=x[12:], y_db=y[12:])
    if case == "nan":
        arrays["x_db"] = arrays["x_db"].copy()
        arrays["x_db"][2, 1] = np.inf
    elif case == "labels":
        arrays["y_query"] = y[:3]
    elif case == "empty":
        arrays["x_query"], arrays["y_query"] = x[:0], y[:0]
    elif case == "dims":
        arrays["x_db"] = rng.normal(size=(8, 5)).astype(np.float32)
    elif case == "keys":
        arrays = {"features": x}
    p = tmp_path / f"bad_{case}.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=pattern) as e:
        load_data(p)
    assert f"bad_{case}.npz" in str(e.value)


def test_unreadable_and_missing(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        load_data(p)
    with pytest.raises(DataError, match="no such file"):
        load_data(tmp_path / "nope.npz")


def test_fashion_mnist_missing_everywhere(monkeypatch, tmp_path):
    import deephash.data.datasets as data

    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", (str(tmp_path / "none"),))
    monkeypatch.setattr(data, "FASHION_MNIST_URL", "http://127.0.0.1:9/")
    with pytest.raises(DataError, match="dataset-fashion-mnist"):
        data.load_fashion_mnist()


def test_fashion_mnist_checksum(monkeypatch, tmp_path):
    import gzip

    import deephash.data.datasets as data

    bad = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match="checksum"):
        data._read_idx(bad)


def test_load_embeddings_npy_and_npz(tmp_path):
    from deephash.data import load_embeddings

    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "x.npy", x)
    got, y = load_embeddings(tmp_path / "x.npy")
    assert got.dtype == np.float32 and np.array_equal(got, x) and y is None
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(4))
    got, y = load_embeddings(tmp_path / "xy.npz")
    assert np.array_equal(got, x) and y.tolist() == [0, 1, 2, 3]
    for name, arr, pattern in (("flat.npy", np.zeros(5), "2-D"), ("inf.npy", np.full((2, 2), np.inf), "non-finite"),
                               ("text.npy", np.array([["a", "b"]]), "real numbers")):
        np.save(tmp_path / name, arr)
        with pytest.raises(DataError, match=f"{name}.*{pattern}"):
            load_embeddings(tmp_path / name)
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(DataError, match="junk.npy: cannot read embeddings"):
        load_embeddings(tmp_path / "junk.npy")
    np.savez(tmp_path / "nox.npz", y=np.arange(4))
    with pytest.raises(DataError, match="nox.npz: cannot read embeddings"):
        load_embeddings(tmp_path / "nox.npz")


def _folder(root, n, make=lambda i: np.full(4, float(i), np.float32)):
    for i in range(n):
        d = root / str(i % 2)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / f"{i}.npy", make(i))
    return root


@pytest.mark.parametrize("n", [3, 4, 5])
def test_folder_too_small_for_the_paper_split(tmp_path, n):
    """4 or 5 items leave a one-item held-out part (a query) and no database: refused up front."""
    root = _folder(tmp_path / f"emb{n}", n)
    with pytest.raises(DataError, match=f"emb{n}.*at least 6 items, got {n}"):
        load_data(root)


def test_folder_six_items(tmp_path):
    s = load_data(_folder(tmp_path / "emb", 6))
    assert (len(s.x_train), len(s.x_query), len(s.x_db)) == (4, 1, 1)


def test_folder_skips_hidden_files_and_refuses_complex(tmp_path):
    root = _folder(tmp_path / "emb", 10)
    base = load_data(root)
    (root / "0" / "._3.npy").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a macOS resource fork
    np.save(root / "1" / ".hidden.npy", np.zeros(4, np.float32))
    (root / ".git").mkdir()
    np.save(root / ".git" / "x.npy", np.zeros(4, np.float32))
    again = load_data(root)
    assert np.array_equal(again.x_train, base.x_train) and np.array_equal(again.y_db, base.y_db)
    np.save(root / "1" / "9.npy", np.ones(4, np.complex64) * (1 + 2j))
    with pytest.raises(DataError, match=r"9\.npy.*complex"):
        load_data(root)
