"""Data sets for deephash: a train / query / database split of embeddings with labels.

Three sources, chosen by :func:`load_data`:

- ``"fashion-mnist"``: the built-in default. The 70,000 Fashion-MNIST images (the 60,000 training
  images followed by the 10,000 test images) as 784-d pixel vectors in [0, 1], read from Debian's
  ``dataset-fashion-mnist`` files (``/usr/share/datasets/fashion-mnist``) or, failing that, downloaded
  once from the official URLs into ``$DEEPHASH_CACHE`` (default ``~/.cache/deephash``) and checked
  against SHA-256 sums of the decompressed files. Split by the standard protocol (below).
- a directory ``DIR/<class>/<i>.npy`` (the HAGCN paper's embedding folders): classes are the
  sub-directories in sorted order (numeric names sort as numbers) and get labels 0..C-1; files are
  sorted the same way; hidden names (starting with ".") are skipped. Split as the paper's code does: 20 % of the items are held out with a seeded
  shuffle (seed 42 by default), the other 80 % train; the held-out items are halved into database
  (first half) and queries (second half, the larger one when odd), again with seed 42. This is the
  permutation that scikit-learn's ``train_test_split(test_size=0.2, random_state=42)`` draws,
  reproduced with ``numpy.random.RandomState`` so scikit-learn is not needed.
- a ``.npz`` file with either ``x_train, y_train, x_query, y_query, x_db, y_db`` (an explicit split)
  or ``x, y`` (split by the standard protocol). Labels are class ids ``int[N]`` or multi-hot ``[N, C]``.

Standard protocol (docs/protocol.md): per class, ``n_query_per_class`` (100) queries are drawn with a seeded
generator; every other item is the database; ``n_train_per_class`` (500) training items are drawn from
the database. A class smaller than ten times ``n_query_per_class`` gives a tenth of its items (at least
one) as queries. With multi-hot labels (no classes to stratify on) it draws ``10 x`` those counts at random
(queries at most a tenth of the items).

Bad data is refused with :class:`DataError`, whose message names the file.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# SHA-256 of the decompressed idx files (identical for the official and the Debian copies).
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


class DataError(ValueError):
    """A data file or array that deephash refuses; the message names the file."""


@dataclass
class Split:
    """Embeddings ``x_*`` (``float32[N, d]``) and labels ``y_*`` (``int64[N]`` or multi-hot ``uint8[N, C]``)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_query: np.ndarray
    y_query: np.ndarray
    x_db: np.ndarray
    y_db: np.ndarray
    source: str = "<arrays>"

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])

    def validate(self) -> "Split":
        src = self.source
        dims = set()
        multi = set()
        for part in ("train", "query", "db"):
            x = getattr(self, f"x_{part}")
            y = getattr(self, f"y_{part}")
            if x.ndim == 2 and x.shape[0] == 0:
                raise DataError(f"{src}: the {part} split is empty")
            check_embeddings(x, f"{src}: x_{part}")
            if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
                raise DataError(f"{src}: y_{part} has shape {y.shape}, which does not match "
                                f"x_{part} with {x.shape[0]} rows (labels: [rows] or multi-hot [rows, C])")
            if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_
                    or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
                raise DataError(f"{src}: y_{part} must hold integer class ids or 0/1 multi-hot rows")
            if y.ndim == 2 and not np.isin(y, (0, 1)).all():
                raise DataError(f"{src}: multi-hot y_{part} must hold only 0 and 1")
            dims.add(x.shape[1])
            multi.add(y.shape[1] if y.ndim == 2 else None)
        if len(dims) != 1:
            raise DataError(f"{src}: the splits have different embedding dimensions {sorted(dims)}")
        if len(multi) != 1:
            raise DataError(f"{src}: the splits mix class ids and multi-hot labels (or differ in C)")
        for part in ("train", "query", "db"):
            x = getattr(self, f"x_{part}")
            y = getattr(self, f"y_{part}")
            setattr(self, f"x_{part}", np.ascontiguousarray(x, dtype=np.float32))
            setattr(self, f"y_{part}", np.ascontiguousarray(y, dtype=np.uint8 if y.ndim == 2 else np.int64))
        return self


def check_embeddings(x: np.ndarray, what: str) -> np.ndarray:
    """Refuse anything but a finite real ``[items, dim]`` array; ``what`` names it in the message."""
    if x.ndim != 2:
        raise DataError(f"{what} must be 2-D [items, dim] (ragged or scalar embeddings?), got shape {x.shape}")
    if x.shape[1] == 0:
        raise DataError(f"{what} has zero-dimensional embeddings")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise DataError(f"{what} must hold real numbers, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0, 0])
        raise DataError(f"{what} holds non-finite values (first at row {bad})")
    return x


def load_data(spec: str | os.PathLike = "fashion-mnist", seed: int | None = None,
              train_per_class: int | str | None = None) -> Split:
    """Load and split a data set: ``"fashion-mnist"``, a ``DIR/<class>/<i>.npy`` folder or a ``.npz`` file.

    ``seed`` fixes the protocol's draw (default 0 for the standard protocol, 42 for folders, as the paper).
    ``train_per_class`` (standard protocol only): training items drawn per class from the database
    (default 500), or ``"all"``: the whole database (Fashion-MNIST: 6000 gives 60,000 training items,
    "all" 69,000).
    """
    s = str(spec)
    per_class = _train_per_class(train_per_class, s)
    if s.lower() in ("fashion-mnist", "fashion_mnist", "fmnist"):
        x, y = load_fashion_mnist()
        return standard_split(x, y, n_train_per_class=per_class, seed=0 if seed is None else seed,
                              source="fashion-mnist")
    p = Path(s)
    if not p.exists():
        raise DataError(f"{s}: no such file or directory (expected 'fashion-mnist', a folder "
                        f"DIR/<class>/<i>.npy or a .npz file)")
    if p.is_dir():
        if train_per_class is not None:
            raise DataError(f"{s}: train_per_class applies to the standard protocol (fashion-mnist, an .npz of "
                            f"x, y), not to a folder (the paper's split: 80 % of the items train)")
        return load_folder(p, seed=42 if seed is None else seed)
    if p.suffix == ".npz":
        return load_npz(p, seed=0 if seed is None else seed, train_per_class=train_per_class)
    raise DataError(f"{s}: unsupported data file (expected a folder DIR/<class>/<i>.npy or a .npz file)")


def _train_per_class(v: int | str | None, source: str) -> int | None:
    """The standard protocol's training items per class: 500 by default, None for "all" (the database)."""
    if v is None:
        return 500
    if isinstance(v, str) and v == "all":
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise DataError(f"{source}: train_per_class must be an integer >= 1 or 'all', got {v!r}")
    return int(v)


# ---------------------------------------------------------------------------------------------
# Standard protocol


def standard_split(x: np.ndarray, y: np.ndarray, n_query_per_class: int = 100, n_train_per_class: int | None = 500,
                   seed: int = 0, source: str = "<arrays>") -> Split:
    """The standard protocol (docs/protocol.md): ``n_query_per_class`` queries per class, the rest is the database,
    ``n_train_per_class`` training items per class drawn from the database (None: all of it; a class with
    fewer gives what it has)."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or y.shape[:1] != x.shape[:1]:
        raise DataError(f"{source}: x has shape {x.shape} and y has shape {y.shape}; "
                        f"they need one label row per embedding row")
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    if y.ndim == 1:
        query, train = [], []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            if idx.size < 2:
                raise DataError(f"{source}: class {c} has {idx.size} item; each class needs at least 2 "
                                f"(a query and a database item)")
            nq = min(n_query_per_class, max(1, idx.size // 10))
            query.append(idx[:nq])
            rest = idx[nq:]
            train.append(rest[:n_train_per_class])
        query = np.sort(np.concatenate(query))
        train = np.sort(np.concatenate(train))
    else:
        perm = rng.permutation(n)
        nq = min(10 * n_query_per_class, max(1, n // 10))
        query = np.sort(perm[:nq])
        train = np.sort(perm[nq:n if n_train_per_class is None else nq + min(10 * n_train_per_class, n - nq)])
    db_mask = np.ones(n, dtype=bool)
    db_mask[query] = False
    db = np.flatnonzero(db_mask)
    return Split(x[train], y[train], x[query], y[query], x[db], y[db], source=source).validate()


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST


def _cache_dir() -> Path:
    return Path(os.environ.get("DEEPHASH_CACHE", Path.home() / ".cache" / "deephash")) / "fashion-mnist"


def _read_idx(path: Path) -> np.ndarray:
    try:
        raw = gzip.open(path, "rb").read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read gzip idx file ({e})") from e
    digest = hashlib.sha256(raw).hexdigest()
    if digest != FASHION_MNIST_FILES[path.name]:
        raise DataError(f"{path}: checksum mismatch (sha256 {digest[:16]}..., expected "
                        f"{FASHION_MNIST_FILES[path.name][:16]}...); delete it to download again")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_mnist_file(name: str) -> Path:
    for d in FASHION_MNIST_DIRS:
        p = Path(d) / name
        if p.is_file():
            return p
    cached = _cache_dir() / name
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".part")
    try:
        urllib.request.urlretrieve(FASHION_MNIST_URL + name, tmp)
    except Exception as e:  # noqa: BLE001 - any network failure means the same thing to the user
        raise DataError(
            f"{name}: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist puts it in "
            f"{FASHION_MNIST_DIRS[0]}) and downloading {FASHION_MNIST_URL + name} failed: {e}") from e
    tmp.replace(cached)
    return cached


def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 Fashion-MNIST images as ``float32[70000, 784]`` in [0, 1] and labels ``int64[70000]``."""
    parts = []
    for prefix in ("train", "t10k"):
        img = _read_idx(_fashion_mnist_file(f"{prefix}-images-idx3-ubyte.gz"))
        lab = _read_idx(_fashion_mnist_file(f"{prefix}-labels-idx1-ubyte.gz"))
        parts.append((img.reshape(img.shape[0], -1).astype(np.float32) / 255.0, lab.astype(np.int64)))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---------------------------------------------------------------------------------------------
# Embedding folders and .npz files


def _natural_key(name: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def paper_split(n: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, query, db) indices as the paper's two ``train_test_split(..., random_state=seed)`` calls."""
    if n < 6:  # fewer leave a 1-item test part, all of it queries: no database
        raise DataError(f"the paper's 80/10/10 split needs at least 6 items, got {n}")
    perm = np.random.RandomState(seed).permutation(n)
    n_test = math.ceil(0.2 * n)
    test, train = perm[:n_test], perm[n_test:]
    perm2 = np.random.RandomState(seed).permutation(n_test)
    n_q = math.ceil(0.5 * n_test)
    return train, test[perm2[:n_q]], test[perm2[n_q:]]


def load_folder(root: str | os.PathLike, seed: int = 42) -> Split:
    """The paper's ``root/<class>/<i>.npy`` embeddings, split 80 / 10 / 10 as its code does."""
    root = Path(root)
    # Hidden entries (".git", macOS "._x.npy" resource forks) are not data.
    classes = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                     key=lambda d: _natural_key(d.name))
    xs, ys, dim = [], [], None
    for label, cdir in enumerate(classes):
        files = (f for f in cdir.glob("*.npy") if not f.name.startswith(".") and f.is_file())
        for f in sorted(files, key=lambda f: _natural_key(f.name)):
            try:
                v = np.load(f, allow_pickle=False)
            except Exception as e:  # noqa: BLE001
                raise DataError(f"{f}: cannot read .npy ({e})") from e
            v = np.asarray(v).reshape(-1) if v.ndim == 2 and 1 in v.shape else v
            if v.ndim != 1:
                raise DataError(f"{f}: expected one embedding vector, got shape {v.shape}")
            if dim is None:
                dim = v.shape[0]
            elif v.shape[0] != dim:
                raise DataError(f"{f}: ragged embeddings: length {v.shape[0]}, earlier files have {dim}")
            if np.iscomplexobj(v):
                raise DataError(f"{f}: the embedding holds complex numbers (dtype {v.dtype}); deephash takes real ones")
            if not np.issubdtype(v.dtype, np.number) or not np.isfinite(v).all():
                raise DataError(f"{f}: the embedding holds non-finite or non-numeric values")
            xs.append(v.astype(np.float32))
            ys.append(label)
    if not xs:
        raise DataError(f"{root}: no embeddings found (expected {root}/<class>/<i>.npy)")
    x, y = np.stack(xs), np.asarray(ys, dtype=np.int64)
    try:
        train, query, db = paper_split(len(x), seed)
    except DataError as e:
        raise DataError(f"{root}: {e}") from None
    return Split(x[train], y[train], x[query], y[query], x[db], y[db], source=str(root)).validate()


def load_npz(path: str | os.PathLike, seed: int = 0, train_per_class: int | str | None = None) -> Split:
    """A ``.npz`` with an explicit split (``x_train, y_train, x_query, y_query, x_db, y_db``) or ``x, y``
    (the standard protocol, ``train_per_class`` as :func:`load_data`)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: cannot read .npz ({e})") from e
    explicit = ("x_train", "y_train", "x_query", "y_query", "x_db", "y_db")
    per_class = _train_per_class(train_per_class, str(path))
    if all(k in arrays for k in explicit):
        if train_per_class is not None:
            raise DataError(f"{path}: train_per_class applies to the standard protocol (an .npz of x, y); this "
                            f"file holds its own split")
        return Split(*(arrays[k] for k in explicit), source=str(path)).validate()
    if "x" in arrays and "y" in arrays:
        return standard_split(check_embeddings(arrays["x"], f"{path}: x"), arrays["y"], n_train_per_class=per_class,
                              seed=seed, source=str(path))
    raise DataError(f"{path}: expected arrays {', '.join(explicit)} or x, y; found {sorted(arrays)}")


def load_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings to encode: a ``.npy`` ``[N, d]`` or a ``.npz`` with ``x`` (and optional labels ``y``).
    Returns ``(x float32[N, d], y or None)``."""
    p = Path(path)
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                x = z["x"]
                y = z["y"] if "y" in z.files else None
        else:
            x, y = np.load(p, allow_pickle=False), None
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{p}: cannot read embeddings ({e}); expected .npy [N, d] or .npz with 'x'") from e
    return np.ascontiguousarray(check_embeddings(x, f"{p}: x"), dtype=np.float32), y
