"""Pictures of retrieval: the neighbour grid, and the figures of the run report.

**Neighbour grid** (:func:`draw_neighbour_grid`): one row per query, the query then its top-k database
items by Hamming distance; each result is framed green when it shares the query's label and red when it
does not, with its Hamming distance under it. Queries are chosen reproducibly by :func:`choose_queries`
(a few per class, drawn with a seeded generator).

**Which data can be drawn** (:func:`item_images`):

- ``fashion-mnist``: each 784-d pixel vector is a 28x28 image.
- a ``.npz`` holding ``image_shape`` (``[H, W]`` or ``[H, W, 3]``): the rows of ``x`` (or of ``x_query``
  and ``x_db``) are row-major pixels, drawn on the data's value range.
- a ``.npz`` holding ``paths`` (one image file per row of ``x``; ``paths_query`` and ``paths_db`` with an
  explicit split), relative to the ``.npz``'s folder unless absolute; ``deephash embed`` writes them.
- a folder ``DIR/<class>/<i>.npy`` with an image ``DIR/<class>/<i>.png`` (or ``.jpg`` ...) beside each
  embedding.

Anything else cannot be drawn: :func:`item_images` returns ``None`` and the reason.

Every PNG is written with the Agg backend, matplotlib's default style, the bundled DejaVu font and no
``Software`` metadata, so the same inputs give the same bytes (for one matplotlib version).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PNG_METADATA = {"Software": None}

# Grid geometry, in output pixels.
TILE = 56            # the box an item's picture is fitted into
FRAME = 3            # the frame around each picture
LABEL = 14           # the strip under each framed picture (distance, or the query's class)
PAD = 4              # between cells
QUERY_GAP = 12       # extra space between the query and its results
HEADER = 22
MARGIN = 6
MAX_GRID_K = 20      # results drawn per query
MAX_PER_CLASS = 20
QUERY_COLOUR = (31, 119, 180)   # tab:blue
MATCH_COLOUR = (44, 160, 44)    # matplotlib's tab:green
MISS_COLOUR = (214, 39, 40)     # tab:red
BACKGROUND = (255, 255, 255)
TILE_BACKGROUND = (128, 128, 128)


class VizError(ValueError):
    """Data or arguments a picture cannot be made from; the message names the file or argument."""


# ---------------------------------------------------------------------------------------------
# What the items look like


@dataclass
class ItemImages:
    """Pictures of the query and database items of one split.

    Either ``pixels`` (``{"query": float[N, P], "db": float[M, P]}``, reshaped to ``shape`` and mapped from
    ``value_range`` to [0, 1]) or ``paths`` (``{"query": [...], "db": [...]}`` image files)."""

    source: str
    shape: tuple | None = None
    pixels: dict | None = None
    value_range: tuple = (0.0, 1.0)
    paths: dict | None = None
    class_names: list | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def count(self, part: str) -> int:
        return len(self.pixels[part]) if self.pixels is not None else len(self.paths[part])

    def image(self, part: str, row: int) -> np.ndarray:
        """Item ``row`` of ``part`` (``"query"`` or ``"db"``) as ``float[H, W, 3]`` in [0, 1]."""
        key = (part, int(row))
        if key not in self._cache:
            if self.pixels is not None:
                lo, hi = self.value_range
                a = (np.asarray(self.pixels[part][row], dtype=np.float64).reshape(self.shape) - lo) / max(hi - lo, 1e-12)
                a = np.clip(a, 0.0, 1.0)
            else:
                a = _read_image(self.paths[part][row])
            if a.ndim == 2:
                a = np.repeat(a[:, :, None], 3, axis=2)
            self._cache[key] = a
        return self._cache[key]

    def label_name(self, label) -> str:
        if np.ndim(label) != 0:
            return "query"
        c = int(label)
        if self.class_names is not None and 0 <= c < len(self.class_names):
            return str(self.class_names[c])
        return f"class {c}"


def _read_image(path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((TILE, TILE), Image.LANCZOS)
            return np.asarray(im, dtype=np.float64) / 255.0
    except Exception as e:  # noqa: BLE001 - any unreadable image means the same thing to the user
        raise VizError(f"{path}: cannot read the image ({e})") from e


def _value_range(*arrays) -> tuple[float, float]:
    lo = min(float(np.min(a)) for a in arrays)
    hi = max(float(np.max(a)) for a in arrays)
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if lo >= 0.0 and hi <= 255.0 and hi > 1.0:
        return 0.0, 255.0
    return lo, hi


def _split_rows(n: int, labels, seed: int | None, paper: bool) -> dict:
    """The original row numbers of the query and database parts of a split that :mod:`deephash.data`
    draws for ``n`` items. Both splits depend on the labels, ``n`` and the seed only, so splitting the
    row numbers themselves yields each part's rows."""
    from ..data import paper_split, standard_split

    if paper:
        _, query, db = paper_split(n, 42 if seed is None else seed)
        return {"query": query, "db": db}
    if n >= 1 << 24:  # the row numbers travel through float32 embeddings
        raise VizError(f"cannot map {n} items back to their files (at most 2^24)")
    s = standard_split(np.arange(n, dtype=np.float64)[:, None], labels, seed=0 if seed is None else seed)
    return {"query": s.x_query[:, 0].astype(np.int64), "db": s.x_db[:, 0].astype(np.int64)}


def item_images(spec, split, split_seed: int | None = None) -> tuple[ItemImages | None, str]:
    """``(pictures, "")`` when the items of data set ``spec`` (already loaded as ``split``) can be drawn,
    else ``(None, why not)``."""
    s = str(spec)
    if s.lower() in ("fashion-mnist", "fashion_mnist", "fmnist"):
        return ItemImages(s, (28, 28), {"query": split.x_query, "db": split.x_db}, (0.0, 1.0),
                          class_names=list(FASHION_MNIST_CLASSES)), ""
    p = Path(s)
    if p.is_dir():
        return _folder_images(p, split, split_seed)
    if p.suffix == ".npz" and p.is_file():
        return _npz_images(p, split, split_seed)
    return None, f"{s}: no pictures known for this data"


def _folder_images(root: Path, split, split_seed) -> tuple[ItemImages | None, str]:
    from ..data.datasets import _natural_key

    classes = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: _natural_key(d.name))
    files = []
    for cdir in classes:
        images = {f.stem: f for f in cdir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES}
        for f in sorted(cdir.glob("*.npy"), key=lambda f: _natural_key(f.name)):
            if f.stem not in images:
                return None, (f"{root}: embeddings without pictures (no {f.stem}.png or other image beside "
                              f"{f})")
            files.append(images[f.stem])
    n = len(split.x_train) + len(split.x_query) + len(split.x_db)
    if len(files) != n:
        return None, f"{root}: {len(files)} pictures for {n} embeddings"
    rows = _split_rows(n, None, split_seed, paper=True)
    return ItemImages(str(root), paths={k: [files[i] for i in v] for k, v in rows.items()},
                      class_names=[d.name for d in classes]), ""


def _npz_images(path: Path, split, split_seed) -> tuple[ItemImages | None, str]:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            extra = {k: z[k] for k in keys & {"image_shape", "paths", "paths_query", "paths_db", "class_names", "y"}}
    except Exception as e:  # noqa: BLE001
        raise VizError(f"{path}: cannot read .npz ({e})") from e
    names = [str(c) for c in extra["class_names"]] if "class_names" in extra else None
    explicit = "x_query" in keys
    if "image_shape" in extra:
        shape = tuple(int(v) for v in np.asarray(extra["image_shape"]).reshape(-1))
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)) or min(shape) < 1 \
                or math.prod(shape) != split.dim:
            raise VizError(f"{path}: image_shape {list(shape)} does not describe {split.dim}-d rows "
                           f"([H, W] or [H, W, 3] with H*W(*3) = {split.dim})")
        if len(shape) == 3 and shape[2] == 1:
            shape = shape[:2]
        return ItemImages(str(path), shape, {"query": split.x_query, "db": split.x_db},
                          _value_range(split.x_query, split.x_db), class_names=names), ""
    base = path.parent
    if explicit and "paths_query" in extra and "paths_db" in extra:
        paths = {"query": extra["paths_query"], "db": extra["paths_db"]}
    elif not explicit and "paths" in extra:
        if len(extra["paths"]) != len(extra["y"]):
            raise VizError(f"{path}: {len(extra['paths'])} image paths for {len(extra['y'])} rows of x")
        rows = _split_rows(len(extra["paths"]), extra["y"], split_seed, paper=False)
        paths = {k: extra["paths"][v] for k, v in rows.items()}
    else:
        return None, (f"{path}: holds neither image_shape (pixel rows) nor paths (an image file per row)")
    out = {}
    for part, ps in paths.items():
        if len(ps) != len(getattr(split, f"x_{part}")):
            raise VizError(f"{path}: {len(ps)} image paths for {len(getattr(split, f'x_{part}'))} {part} items")
        out[part] = [p if Path(p).is_absolute() else base / p for p in (str(p) for p in ps)]
    return ItemImages(str(path), paths=out, class_names=names), ""


# ---------------------------------------------------------------------------------------------
# Queries and their neighbours


def choose_queries(labels, per_class: int = 2, seed: int = 0, max_queries: int = 40) -> np.ndarray:
    """Row numbers of the queries a grid shows: ``per_class`` queries of each class (all of a smaller
    class), drawn with ``numpy.random.default_rng(seed)``, grouped by class in ascending order. With more
    classes than fit in ``max_queries`` rows, a seeded draw of classes; with multi-hot labels (no classes),
    ``max_queries`` rows at random (at most ``per_class * 10``)."""
    y = np.asarray(labels)
    if per_class < 1 or max_queries < 1:
        raise VizError(f"need at least one query per class and one row, got {per_class} and {max_queries}")
    rng = np.random.default_rng(seed)
    if y.ndim != 1:
        n = min(len(y), max_queries, per_class * 10)
        return np.sort(rng.choice(len(y), size=n, replace=False))
    classes = np.unique(y)
    if len(classes) * per_class > max_queries:
        keep = max(1, max_queries // per_class)
        classes = np.sort(rng.choice(classes, size=keep, replace=False))
    rows = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        rows.append(rng.choice(idx, size=min(per_class, idx.size), replace=False))
    return np.concatenate(rows).astype(np.int64)


def label_match(q_labels, db_labels) -> np.ndarray:
    """``bool[Q, k]``: whether each result shares a label with its query (``db_labels`` is ``[Q, k]`` or
    ``[Q, k, C]`` for multi-hot)."""
    q = np.asarray(q_labels)
    d = np.asarray(db_labels)
    if q.ndim == 1:
        return d == q[:, None]
    return ((d > 0) & (q[:, None, :] > 0)).any(axis=2)


# ---------------------------------------------------------------------------------------------
# The grid


@dataclass
class Cell:
    """One framed picture of the grid: its outer frame box ``[x0, x1) x [y0, y1)`` in output pixels,
    its split row, and for results the Hamming distance and whether the label matches."""

    x0: int
    y0: int
    x1: int
    y1: int
    row: int
    distance: int | None = None
    match: bool | None = None


@dataclass
class GridLayout:
    width: int
    height: int
    rows: list  # one list of Cells per query: the query's cell first


def grid_size(n_queries: int, k: int) -> tuple[int, int]:
    """The grid's (width, height) in pixels for ``n_queries`` rows of ``k`` results."""
    cell_w, cell_h = TILE + 2 * FRAME, TILE + 2 * FRAME + LABEL
    return (2 * MARGIN + (k + 1) * cell_w + k * PAD + QUERY_GAP,
            HEADER + n_queries * (cell_h + PAD) + MARGIN)


def _fit_tile(a: np.ndarray) -> np.ndarray:
    """``a`` in a TILE x TILE box: small pictures enlarged by a whole factor (crisp pixels), large ones
    shrunk, centred on grey."""
    h, w = a.shape[:2]
    f = TILE // max(h, w)
    if f >= 1:
        a = np.repeat(np.repeat(a, f, axis=0), f, axis=1)
    else:
        from PIL import Image

        s = TILE / max(h, w)
        im = Image.fromarray(np.round(a * 255).astype(np.uint8))
        a = np.asarray(im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)) / 255.0
    box = np.empty((TILE, TILE, 3), dtype=np.uint8)
    box[:] = TILE_BACKGROUND
    h, w = a.shape[:2]
    y, x = (TILE - h) // 2, (TILE - w) // 2
    box[y:y + h, x:x + w] = np.round(a * 255).astype(np.uint8)
    return box


# Every text these figures draw (run and folder names, labels, titles) is plain text: with mathtext on,
# a name holding `$` was parsed as a formula (and refused with matplotlib's parser messages).
PLAIN_TEXT = {"text.parse_math": False}


def _fits(text: str, width_px: int, size_pt: float) -> str:
    # DejaVu Sans averages about 0.6 em per character.
    max_chars = max(1, int(width_px / (0.6 * size_pt * 100 / 72)))
    return text if len(text) <= max_chars else text[:max_chars - 1] + "…"


def draw_neighbour_grid(images: ItemImages, query_rows, query_labels, result_rows, distances, matches,
                        path=None, title: str | None = None) -> tuple[bytes, GridLayout]:
    """The grid PNG (its bytes, also written to ``path`` when given) and where each cell lies.

    ``query_rows[Q]`` are rows of the query part, ``result_rows[Q, k]`` rows of the database part,
    ``distances[Q, k]`` their Hamming distances, ``matches[Q, k]`` whether each shares the query's label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import IdentityTransform

    query_rows = np.asarray(query_rows)
    result_rows, distances, matches = np.asarray(result_rows), np.asarray(distances), np.asarray(matches)
    nq, k = result_rows.shape
    width, height = grid_size(nq, k)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    cell_w, cell_h = TILE + 2 * FRAME, TILE + 2 * FRAME + LABEL
    texts, layout = [], GridLayout(width, height, [])

    def put(x0, y0, picture, colour):
        canvas[y0:y0 + cell_w, x0:x0 + cell_w] = colour
        canvas[y0 + FRAME:y0 + FRAME + TILE, x0 + FRAME:x0 + FRAME + TILE] = _fit_tile(picture)

    for i in range(nq):
        y0 = HEADER + i * (cell_h + PAD)
        put(MARGIN, y0, images.image("query", query_rows[i]), QUERY_COLOUR)
        row = [Cell(MARGIN, y0, MARGIN + cell_w, y0 + cell_w, int(query_rows[i]))]
        texts.append((MARGIN + cell_w / 2, y0 + cell_w + 1, _fits(images.label_name(query_labels[i]), cell_w, 6.5),
                      "black"))
        for j in range(k):
            x0 = MARGIN + (j + 1) * (cell_w + PAD) + QUERY_GAP
            ok = bool(matches[i, j])
            put(x0, y0, images.image("db", result_rows[i, j]), MATCH_COLOUR if ok else MISS_COLOUR)
            row.append(Cell(x0, y0, x0 + cell_w, y0 + cell_w, int(result_rows[i, j]), int(distances[i, j]), ok))
            texts.append((x0 + cell_w / 2, y0 + cell_w + 1, f"d={int(distances[i, j])}",
                          "#1a6e1a" if ok else "#a01010"))
        layout.rows.append(row)

    with plt.style.context("default"), plt.rc_context(PLAIN_TEXT):
        dpi = 100
        fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
        fig.figimage(canvas, 0, 0, origin="upper")
        ident = IdentityTransform()
        # Display coordinates count from the bottom; the layout counts from the top.
        fig.text(MARGIN, height - 4, "query", transform=ident, fontsize=7.5, va="top", ha="left")
        header = title or f"top {k} by Hamming distance: green frame = same label, red = other label"
        left = MARGIN + cell_w + PAD + QUERY_GAP
        fig.text(left, height - 4, _fits(header, width - left - MARGIN, 7.5), transform=ident, fontsize=7.5,
                 va="top", ha="left")
        for x, y, s, colour in texts:
            fig.text(x, height - y, s, transform=ident, fontsize=6.5, va="top", ha="center", color=colour)
        data = figure_png(fig, dpi=dpi)
    if path is not None:
        with atomic_write(path) as f:
            f.write(data)
    return data, layout


def neighbours(query_codes, db_codes, k: int):
    """``(distances int64[Q, k'], rows int64[Q, k'])`` of the exact Hamming top k (ties by row)."""
    import deephash_ext

    from ..codes import as_packed

    d, rows = deephash_ext.hamming_topk(as_packed(query_codes), as_packed(db_codes), int(k))
    return d.numpy().astype(np.int64), rows.numpy().astype(np.int64)


def grid_for_codes(images: ItemImages, split, query_codes, db_codes, *, k: int = 10, per_class: int = 2,
                   seed: int = 0, path=None, title=None) -> tuple[bytes, GridLayout]:
    """Choose the queries, search them among all database codes and draw the grid.

    ``query_codes`` are the codes of every query of ``split`` (row order), ``db_codes`` of every database
    item; codes may be ±1 / real ``[N, bits]`` or packed ``uint8``."""
    import torch

    q = choose_queries(split.y_query, per_class, seed)
    qc = torch.as_tensor(query_codes)[torch.from_numpy(q)]
    dist, rows = neighbours(qc, db_codes, k)
    return draw_neighbour_grid(images, q, split.y_query[q], rows, dist, label_match(split.y_query[q], split.y_db[rows]),
                               path=path, title=title)


def grid_for_search(index, codes: dict, *, codes_path, index_path, data, split_seed=None, k: int = 10,
                    per_class: int = 2, seed: int = 0, out) -> str:
    """``deephash search --grid``: the grid of queries from a codes file searched in an index, for the items
    of the ``query`` and ``db`` parts of data set ``data`` (what ``deephash encode --split query`` and
    ``--split db`` encode: the codes' ids are rows of those parts), at most ``MAX_GRID_K`` results a row.
    Returns the line to print."""
    from ..data import load_data

    if k < 1:
        raise VizError(f"-k must be at least 1, got {k}")
    k = min(k, MAX_GRID_K)
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise VizError(f"--per-class must be in 1..{MAX_PER_CLASS}, got {per_class}")
    out = Path(out)
    if not out.parent.is_dir():
        raise VizError(f"{out}: no such directory {out.parent}")
    split = load_data(data, seed=split_seed)
    images, why = item_images(data, split, split_seed)
    if images is None:
        return f"no neighbour grid: {why}; nothing written"
    if "ids" not in codes:
        raise VizError(f"{codes_path}: has no ids; --grid needs codes from `deephash encode --split query`")
    qids = np.asarray(codes["ids"], dtype=np.int64)
    bad = qids[(qids < 0) | (qids >= len(split.x_query))]
    if bad.size:
        raise VizError(f"{codes_path}: id {int(bad[0])} is not a row of the query part of {data} "
                       f"({len(split.x_query)} rows); --grid needs codes from `deephash encode --split query`")
    q_labels = split.y_query[qids]
    if "labels" in codes and (np.shape(codes["labels"]) != q_labels.shape
                              or not np.array_equal(codes["labels"], q_labels)):
        raise VizError(f"{codes_path}: its labels differ from the query part of {data}: codes of another data "
                       f"set or split? (--split-seed must match the one used to encode)")
    sel = choose_queries(q_labels, per_class, seed)
    dist, ids = index.search(codes["codes"][sel], k)
    ids = ids.numpy()
    bad = ids[(ids < 0) | (ids >= len(split.x_db))]
    if bad.size:
        raise VizError(f"{index_path}: id {int(bad[0])} is not a row of the database part of {data} "
                       f"({len(split.x_db)} rows); --grid needs an index of `deephash encode --split db` codes")
    draw_neighbour_grid(images, qids[sel], q_labels[sel], ids, dist.numpy(), label_match(q_labels[sel], split.y_db[ids]),
                        path=out)
    return f"wrote the neighbour grid of {len(sel)} queries (top {ids.shape[1]}) to {out}"


# ---------------------------------------------------------------------------------------------
# Figures


def figure_png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes without metadata that varies between runs; closes the figure."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata=PNG_METADATA)
    plt.close(fig)
    return buf.getvalue()


def line_figure(series: list, xlabel: str, ylabel: str, title: str, *, xlog: bool = False,
                ylim: tuple | None = None, xlim: tuple | None = None, integer_x: bool = False,
                size=(5.6, 3.8)) -> bytes:
    """A PNG of line plots: ``series = [(label, xs, ys, style), ...]``, ``style`` a dict of ``plot`` keywords."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.style.context("default"), plt.rc_context(PLAIN_TEXT):
        fig, ax = plt.subplots(figsize=size, dpi=100)
        for label, xs, ys, style in series:
            ax.plot(xs, ys, label=label, **(style or {}))
        if xlog:
            ax.set_xscale("log")
        if integer_x:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ylim is not None:
            ax.set_ylim(*ylim)
        if xlim is not None:
            ax.set_xlim(*xlim)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        return figure_png(fig)


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise VizError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
