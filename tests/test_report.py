"""Neighbour grids, the HTML run report and the training progress lines."""
import base64
import io
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from deephash.views import viz
from conftest import image_folder
from deephash.cli import main
from deephash.data import Split, load_data

SIDE = 14  # 14 x 4 = 56 pixels: the pictures fill the grid's tiles
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def make_images(n_per_class=30, seed=0, noise=0.45):
    """Four classes of noisy 14x14 patterns (halves, a diagonal, a disc); noisy enough for some wrong
    neighbours."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    patterns = [xx < SIDE // 2, yy < SIDE // 2, abs(xx - yy) <= 1, (xx - SIDE / 2) ** 2 + (yy - SIDE / 2) ** 2 < 16]
    xs, ys = [], []
    for c, p in enumerate(patterns):
        for _ in range(n_per_class):
            img = np.clip(p * rng.uniform(0.5, 1.0) + noise * rng.normal(size=p.shape), 0, 1)
            xs.append(img.reshape(-1))
            ys.append(c)
    return np.array(xs, np.float32), np.array(ys, np.int64)


def png_array(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def frame_colour(img: np.ndarray, cell: viz.Cell) -> tuple:
    """The colour of a cell's frame, which must be one colour all round."""
    x0, y0, x1, y1 = cell.x0, cell.y0, cell.x1, cell.y1
    ring = np.concatenate([img[y0, x0:x1], img[y1 - 1, x0:x1], img[y0:y1, x0], img[y0:y1, x1 - 1],
                           img[y0 + viz.FRAME - 1, x0:x1]])
    colours = {tuple(int(v) for v in px) for px in ring}
    assert len(colours) == 1, colours
    return colours.pop()


def grid_cells(n_queries, k):
    """Where draw_neighbour_grid puts each framed picture (its layout, recomputed from the constants)."""
    cell_w, cell_h = viz.TILE + 2 * viz.FRAME, viz.TILE + 2 * viz.FRAME + viz.LABEL
    rows = []
    for i in range(n_queries):
        y0 = viz.HEADER + i * (cell_h + viz.PAD)
        xs = [viz.MARGIN] + [viz.MARGIN + (j + 1) * (cell_w + viz.PAD) + viz.QUERY_GAP for j in range(k)]
        rows.append([viz.Cell(x, y0, x + cell_w, y0 + cell_w, 0) for x in xs])
    return rows


class Page(HTMLParser):
    """Sections, tables (rows of cell texts and classes) and images of an HTML page."""

    def __init__(self, text):
        super().__init__()
        self.sections, self.tables, self.images, self.tags = [], [], [], []
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self.sections.append(a.get("id"))
        elif tag == "table":
            self.tables.append({"class": a.get("class"), "rows": [], "section": self.sections[-1]})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = [a.get("class") or "", ""]
            self.tables[-1]["rows"][-1].append(self._cell)
        elif tag == "img":
            self.images.append({**a, "section": self.sections[-1] if self.sections else None})

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def table(self, cls):
        (t,) = [t for t in self.tables if t["class"] == cls]
        return [[text for _, text in row] for row in t["rows"]]


def decode_img(img) -> bytes:
    prefix = "data:image/png;base64,"
    assert img["src"].startswith(prefix)
    data = base64.b64decode(img["src"][len(prefix):], validate=True)
    assert viz.png_size(data) == (int(img["width"]), int(img["height"]))
    return data


@pytest.fixture(scope="module")
def image_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    x, y = make_images()
    p = d / "images.npz"
    np.savez(p, x=x, y=y, image_shape=np.array([SIDE, SIDE]),
             class_names=np.array(["left", "top", "diagonal", "disc"]))
    return p


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, image_data):
    run = tmp_path_factory.mktemp("runs") / "hagcn"
    assert main(["train", "--data", str(image_data), "--bits", "16", "--anchors", "16", "--out", str(run),
                 "--no-progress"]) == 0
    return run


# ---------------------------------------------------------------------------------------------
# Queries and the grid itself


def test_choose_queries_seeded_per_class():
    y = np.repeat(np.arange(5), [30, 30, 1, 30, 30])
    a = viz.choose_queries(y, per_class=3, seed=7)
    assert np.array_equal(a, viz.choose_queries(y, per_class=3, seed=7))
    assert not np.array_equal(a, viz.choose_queries(y, per_class=3, seed=8))
    assert [int((y[a] == c).sum()) for c in range(5)] == [3, 3, 1, 3, 3]
    assert np.all(np.diff(y[a]) >= 0) and len(set(a.tolist())) == len(a)  # grouped by class, distinct
    many = np.repeat(np.arange(100), 5)
    b = viz.choose_queries(many, per_class=2, seed=0, max_queries=20)
    assert len(b) == 20 and len(np.unique(many[b])) == 10
    multi = (np.random.default_rng(0).random((50, 6)) < 0.3).astype(np.uint8)
    assert len(viz.choose_queries(multi, per_class=2, seed=0)) == 20
    with pytest.raises(viz.VizError):
        viz.choose_queries(y, per_class=0)


def test_grid_frames_follow_labels_and_bytes_repeat(tmp_path):
    rng = np.random.default_rng(0)
    pix = {"query": rng.random((4, 28 * 28)), "db": rng.random((30, 28 * 28))}
    images = viz.ItemImages("test", (28, 28), pix, (0.0, 1.0), class_names=["a", "b"])
    results = rng.integers(0, 30, (3, 5))
    matches = np.array([[1, 0, 1, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]], bool)
    dist = np.sort(rng.integers(0, 9, (3, 5)), axis=1)
    data, layout = viz.draw_neighbour_grid(images, [0, 2, 3], [0, 1, 0], results, dist, matches,
                                           path=tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes() == data
    assert viz.png_size(data) == viz.grid_size(3, 5) == (layout.width, layout.height)
    img = png_array(data)
    assert img.shape == (layout.height, layout.width, 3)
    assert [[(c.x0, c.y0, c.x1, c.y1) for c in row] for row in layout.rows] == \
        [[(c.x0, c.y0, c.x1, c.y1) for c in row] for row in grid_cells(3, 5)]
    for i, row in enumerate(layout.rows):
        assert frame_colour(img, row[0]) == viz.QUERY_COLOUR
        for j, cell in enumerate(row[1:]):
            assert cell.match == bool(matches[i, j]) and cell.distance == dist[i, j] and cell.row == results[i, j]
            assert frame_colour(img, cell) == (viz.MATCH_COLOUR if matches[i, j] else viz.MISS_COLOUR)
    right, wrong = layout.rows[0][1], layout.rows[0][2]
    assert frame_colour(img, right) != frame_colour(img, wrong)
    # The pictures are the items, enlarged twice: the first query's top-left pixel.
    c = layout.rows[0][0]
    tile = img[c.y0 + viz.FRAME:c.y0 + viz.FRAME + viz.TILE, c.x0 + viz.FRAME:c.x0 + viz.FRAME + viz.TILE]
    expect = np.round(pix["query"][0].reshape(28, 28) * 255).astype(np.uint8)
    assert np.array_equal(tile[::2, ::2, 0], expect) and np.array_equal(tile[1::2, 1::2, 1], expect)
    again, _ = viz.draw_neighbour_grid(images, [0, 2, 3], [0, 1, 0], results, dist, matches)
    assert again == data


# ---------------------------------------------------------------------------------------------
# Which data can be drawn


def _split_of(n=40, dim=784):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), n // 2)
    return Split(rng.random((n, dim)), y, rng.random((4, dim)), y[:4], rng.random((n, dim)), y, "<test>").validate()


def test_item_images_fashion_mnist_and_pixel_npz(tmp_path):
    s = _split_of()
    images, why = viz.item_images("fashion-mnist", s)
    assert why == "" and images.image("db", 3).shape == (28, 28, 3)
    assert np.allclose(images.image("query", 1)[:, :, 0].reshape(-1), s.x_query[1], atol=1e-6)
    assert images.label_name(7) == "Sneaker"

    x, y = make_images(10)
    p = tmp_path / "pix.npz"
    np.savez(p, x=x * 255, y=y, image_shape=np.array([SIDE, SIDE, 1]))
    split = load_data(p)
    images, why = viz.item_images(p, split)
    assert why == "" and images.value_range == (0.0, 255.0) and images.image("query", 0).shape == (SIDE, SIDE, 3)
    assert images.label_name(2) == "class 2"
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=x, y=y, image_shape=np.array([10, 10]))
    with pytest.raises(viz.VizError, match="image_shape"):
        viz.item_images(bad, load_data(bad))


def test_item_images_blobs_cannot_be_drawn(blobs_npz):
    images, why = viz.item_images(blobs_npz, load_data(blobs_npz))
    assert images is None and "blobs.npz" in why and "image_shape" in why


def _write_png(path, value):
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_item_images_paths_follow_the_split(tmp_path):
    """Each query / database item is drawn from its own row's file, through the protocol's split."""
    n = 60
    y = np.repeat(np.arange(3), n // 3)
    x = np.stack([np.arange(n), np.zeros(n)], 1).astype(np.float32)  # column 0: the row number
    (tmp_path / "img").mkdir()
    for i in range(n):
        _write_png(tmp_path / "img" / f"row{i}.png", 4 * i)
    np.savez(tmp_path / "e.npz", x=x, y=y, paths=np.array([f"img/row{i}.png" for i in range(n)]))
    split = load_data(tmp_path / "e.npz", seed=3)
    images, why = viz.item_images(tmp_path / "e.npz", split, split_seed=3)
    assert why == ""
    for part in ("query", "db"):
        rows = getattr(split, f"x_{part}")[:, 0].astype(int)
        assert [Path(p).name for p in images.paths[part]] == [f"row{r}.png" for r in rows]
    assert np.allclose(images.image("db", 5), 4 * rows[5] / 255.0)


def test_item_images_folder_with_pictures_beside(tmp_path):
    root = tmp_path / "emb"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            k = (c == "dog") * 10 + i
            np.save(root / c / f"{i}.npy", np.array([k, 1.0], np.float32))
            _write_png(root / c / f"{i}.png", 10 * k)
    split = load_data(root)
    images, why = viz.item_images(root, split)
    assert why == "" and images.class_names == ["cat", "dog"]
    for part in ("query", "db"):
        ks = getattr(split, f"x_{part}")[:, 0].astype(int)
        assert [f"{p.parent.name}/{p.name}" for p in images.paths[part]] == \
            [f"{'dog' if k >= 10 else 'cat'}/{k % 10}.png" for k in ks]
    (root / "dog" / "3.png").unlink()
    images, why = viz.item_images(root, split)
    assert images is None and "3.npy" in why


# ---------------------------------------------------------------------------------------------
# deephash search --grid


def test_search_grid(tmp_path, image_data, image_run, capsys):
    q, db, idx = tmp_path / "q.npz", tmp_path / "db.npz", tmp_path / "db.idx"
    assert main(["encode", "--model", str(image_run), "--data", str(image_data), "--split", "query", "--out", str(q)]) == 0
    assert main(["encode", "--model", str(image_run), "--data", str(image_data), "--split", "db", "--out", str(db)]) == 0
    assert main(["index", "--codes", str(db), "--out", str(idx)]) == 0
    capsys.readouterr()
    base = ["search", "--index", str(idx), "--codes", str(q), "-k", "6", "--data", str(image_data)]
    assert main([*base, "--grid", str(tmp_path / "g.png"), "--per-class", "1"]) == 0
    assert "neighbour grid of 4 queries" in capsys.readouterr().out
    data = (tmp_path / "g.png").read_bytes()
    assert viz.png_size(data) == viz.grid_size(4, 6)
    assert main([*base, "--grid", str(tmp_path / "g2.png"), "--per-class", "1"]) == 0
    assert (tmp_path / "g2.png").read_bytes() == data  # same seed, same bytes

    # The frames say what the labels say: the grid's queries are choose_queries' rows of the query codes.
    split = load_data(image_data)
    qc, dc = np.load(q), np.load(db)
    sel = viz.choose_queries(split.y_query, 1, 0)
    dist, rows = viz.neighbours(torch.from_numpy(qc["codes"][sel]), torch.from_numpy(dc["codes"]), 6)
    matches = viz.label_match(split.y_query[sel], split.y_db[rows])
    img = png_array(data)
    for i, row in enumerate(grid_cells(4, 6)):
        for j, cell in enumerate(row[1:]):
            assert frame_colour(img, cell) == (viz.MATCH_COLOUR if matches[i, j] else viz.MISS_COLOUR)

    # Errors: one line naming what is wrong, status 2.
    for extra, needle in (
        (["--grid", str(tmp_path / "nodir" / "g.png")], "nodir"),
        (["--grid", str(tmp_path / "g3.png"), "--data", str(tmp_path / "missing.npz")], "missing.npz"),
        (["--grid", str(tmp_path / "g3.png"), "--per-class", "0"], "--per-class"),
    ):
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    with pytest.raises(SystemExit) as e:  # an argument error: argparse's exit, one line too
        main([*base, "--grid", str(tmp_path / "g3.png"), "-k", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "-k: must be in 1.." in err
    assert not (tmp_path / "g3.png").exists()
    with pytest.raises(SystemExit) as e:
        main([*base, "--grid", str(tmp_path / "g3.png"), "--per-class", "two"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--per-class" in err
    # A codes file without ids: its rows are the ids.
    noids = tmp_path / "noids.npz"
    np.savez(noids, codes=qc["codes"], bits=qc["bits"])
    assert main([*base[:4], str(noids), *base[5:], "--grid", str(tmp_path / "g4.png"), "--per-class", "1"]) == 0
    assert (tmp_path / "g4.png").read_bytes() == data
    # Database codes given as queries: their labels are not the query part's.
    assert main(["search", "--index", str(idx), "--codes", str(db), "--data", str(image_data),
                 "--grid", str(tmp_path / "g3.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "db.npz" in err


def test_search_grid_data_that_cannot_be_drawn(tmp_path, split_npz, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(split_npz), "--bits", "16", "--method", "lsh", "--out", str(run)]) == 0
    q, db, idx = tmp_path / "q.npz", tmp_path / "db.npz", tmp_path / "db.idx"
    main(["encode", "--model", str(run), "--data", str(split_npz), "--split", "query", "--out", str(q)])
    main(["encode", "--model", str(run), "--data", str(split_npz), "--split", "db", "--out", str(db)])
    main(["index", "--codes", str(db), "--out", str(idx)])
    capsys.readouterr()
    assert main(["search", "--index", str(idx), "--codes", str(q), "--data", str(split_npz),
                 "--grid", str(tmp_path / "g.png")]) == 0
    assert "no neighbour grid" in capsys.readouterr().out and not (tmp_path / "g.png").exists()


# ---------------------------------------------------------------------------------------------
# The report


SECTIONS = ["configuration", "metrics", "pr-curve", "precision-at-k", "precision-radius", "loss", "neighbours",
            "timings"]


def _without_timings(text: str) -> str:
    import re

    return re.sub(r'<td class="(num )?timing">[^<]*</td>', "<td></td>", text)


def test_report_of_a_run(tmp_path, image_data, image_run):
    from deephash.methods import get_method
    from deephash.metrics import evaluate, precision_at_k

    out = tmp_path / "report.html"
    assert main(["report", str(image_run), "--out", str(out)]) == 0
    text = out.read_text()
    page = Page(text)
    assert page.sections == SECTIONS
    # Self-contained: no scripts, no stylesheets or images from elsewhere.
    for tag, a in page.tags:
        assert tag not in ("script", "link", "iframe")
        for key in ("src", "href"):
            assert key not in a or a[key].startswith("data:image/png;base64,"), (tag, a)

    # Metrics: the run's own numbers, then ITQ and LSH of the same split, evaluated afresh.
    m = json.loads((image_run / "metrics.json").read_text())
    rows = page.table("metrics")
    assert rows[0][:4] == ["method", "data", "mAP@1000", "mAP@all"]
    assert [r[0] for r in rows[1:]] == ["HAGCN chebyshev 16b (hagcn)", "ITQ 16b (baseline)", "LSH 16b (baseline)"]
    assert rows[1][2] == f"{m['mAP@1000']:.4f}" and rows[1][6] == f"{m['P@r2']:.4f}"
    split = load_data(image_data)
    for row, name in ((rows[2], "itq"), (rows[3], "lsh")):
        meth = get_method(name, 16, seed=0).fit(split.x_train)
        expect, _ = evaluate(meth.encode(split.x_query), meth.encode(split.x_db), split.y_query, split.y_db, 16)
        assert row[2:8] == [f"{expect[k]:.4f}" for k in ("mAP@1000", "mAP@all", "mAP@all-tie-aware", "P@1000",
                                                        "P@r2", "P@r2-empty")]
    config = page.table("config")
    assert ["model.filter", "chebyshev"] in config and ["data", str(image_data)] in config
    timings = page.table("timings")
    assert timings[1][1] == f"{m['train_seconds']:.3f}" and all(float(c) >= 0 for r in timings[1:] for c in r[1:])

    # Images: decodable PNGs of the sizes their tags give; the two grids at the grid's size.
    sizes = {}
    for img in page.images:
        sizes.setdefault(img["section"], []).append(viz.png_size(decode_img(img)))
    assert sizes["pr-curve"] == sizes["precision-at-k"] == sizes["precision-radius"] == [(560, 380)]
    assert "loss" not in sizes and "No loss history recorded for HAGCN chebyshev 16b (hagcn)" in text  # passes
    assert sizes["neighbours"] == [viz.grid_size(8, 10)] * 2

    # The run's grid frames its neighbours as their labels say (both kinds of frame are drawn in
    # test_grid_frames_follow_labels_and_bytes_repeat).
    from deephash.methods import load_model

    model = load_model(image_run)
    sel = viz.choose_queries(split.y_query, 2, 0)
    dist, nn = viz.neighbours(model.encode(split.x_query[sel]), model.encode(split.x_db), 10)
    matches = viz.label_match(split.y_query[sel], split.y_db[nn])
    grids = [png_array(decode_img(i)) for i in page.images if i["section"] == "neighbours"]
    seen = set()
    for i, row in enumerate(grid_cells(8, 10)):
        for j, cell in enumerate(row[1:]):
            assert frame_colour(grids[0], cell) == (viz.MATCH_COLOUR if matches[i, j] else viz.MISS_COLOUR)
            seen |= {frame_colour(g, cell) for g in grids}
    assert viz.MATCH_COLOUR in seen and seen <= {viz.MATCH_COLOUR, viz.MISS_COLOUR}

    # P@k at k = 1 agrees with the metric's own computation.
    from deephash.views.report import precision_at_ks

    ks, pk, _ = precision_at_ks(model.encode(split.x_query), model.encode(split.x_db), split.y_query, split.y_db,
                                (1, 10))
    assert ks == [1, 10] and pk[0] == pytest.approx(precision_at_k(
        model.encode(split.x_query), model.encode(split.x_db), split.y_query, split.y_db, 1))

    # Built again: the same bytes but for the measured seconds.
    again = tmp_path / "again.html"
    assert main(["report", str(image_run), "--out", str(again)]) == 0
    assert _without_timings(again.read_text()) == _without_timings(text)
    assert [i["src"] for i in Page(again.read_text()).images] == [i["src"] for i in page.images]


def test_report_compares_runs(tmp_path, image_data, image_run, capsys):
    itq = tmp_path / "itq"
    assert main(["train", "--data", str(image_data), "--bits", "16", "--method", "itq", "--out", str(itq)]) == 0
    assert main(["report", str(image_run), str(itq), "--out", str(tmp_path / "both.html"), "-k", "4",
                 "--per-class", "1", "--grid", str(tmp_path / "first.png")]) == 0
    page = Page((tmp_path / "both.html").read_text())
    assert page.table("config")[0] == ["setting", "HAGCN chebyshev 16b (hagcn)", "itq 16b (itq)"]
    names = [r[0] for r in page.table("metrics")[1:]]
    assert names == ["HAGCN chebyshev 16b (hagcn)", "ITQ 16b (baseline)", "LSH 16b (baseline)", "itq 16b (itq)"]
    grids = [i for i in page.images if i["section"] == "neighbours"]
    assert [viz.png_size(decode_img(i)) for i in grids] == [viz.grid_size(4, 4)] * 3
    assert (tmp_path / "first.png").read_bytes() == decode_img(grids[0])
    # The ITQ run and the ITQ baseline (same data, bits and seed) retrieve the same neighbours.
    assert grids[1]["src"] != grids[2]["src"]  # titles differ
    assert np.array_equal(png_array(decode_img(grids[1]))[viz.HEADER:], png_array(decode_img(grids[2]))[viz.HEADER:])
    loss_imgs = [i for i in page.images if i["section"] == "loss"]
    assert not loss_imgs and "No loss history recorded for HAGCN chebyshev 16b (hagcn), itq 16b (itq)" in \
        (tmp_path / "both.html").read_text()


def test_report_draws_the_loss_of_a_run_that_trains_in_epochs(tmp_path, image_data, image_run):
    net = tmp_path / "net"
    assert main(["train", "--method", "hagcn-net", "--data", str(image_data), "--bits", "16", "--epochs", "2",
                 "--batch-size", "32", "--anchors", "16", "--out", str(net), "--no-progress"]) == 0
    assert main(["report", str(net), str(image_run), "--out", str(tmp_path / "r.html")]) == 0
    page = Page((tmp_path / "r.html").read_text())
    loss_imgs = [i for i in page.images if i["section"] == "loss"]
    assert [viz.png_size(decode_img(i)) for i in loss_imgs] == [(560, 380)]
    assert "No loss history recorded for HAGCN chebyshev 16b (hagcn)" in (tmp_path / "r.html").read_text()


def test_report_errors_are_one_line(tmp_path, image_run, capsys):
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "nope")], "nope"),
        ([str(tmp_path / "empty")], "config.json"),
        ([str(image_run), str(image_run)], "--out"),
        ([str(image_run), "--out", str(tmp_path / "nodir" / "r.html")], "nodir"),
        ([str(image_run), "--out", str(tmp_path / "r.html"), "--grid", str(tmp_path / "nodir" / "g.png")], "nodir"),
        ([str(image_run), "--out", str(tmp_path / "r.html"), "-k", "0"], "-k"),
        ([str(image_run), "--out", str(tmp_path / "r.html"), "--per-class", "-1"], "--per-class"),
        ([str(image_run), "--out", str(tmp_path / "r.html"), "--data", str(tmp_path / "gone.npz")], "gone.npz"),
    ]
    for args, needle in cases:
        assert main(["report", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
    for bad in (["-k", "x"], ["--per-class", "1.5"], []):
        with pytest.raises(SystemExit) as e:
            main(["report", *([str(image_run)] if bad else []), *bad])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
    assert not (tmp_path / "r.html").exists()
    r = subprocess.run([sys.executable, "-m", "deephash", "report", str(tmp_path / "nope")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nope" in r.stderr


def test_demo_writes_grid_and_report(tmp_path, image_data, split_npz, capsys):
    args = ["demo", "--bits", "16", "--anchors", "16", "--no-progress"]
    assert main([*args, "--data", str(image_data), "--out", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    assert "neighbours.png" in out and "report.html" in out
    grid = (tmp_path / "img" / "neighbours.png").read_bytes()
    assert viz.png_size(grid) == viz.grid_size(8, 10)
    page = Page((tmp_path / "img" / "report.html").read_text())
    assert decode_img([i for i in page.images if i["section"] == "neighbours"][0]) == grid
    cfg = json.loads((tmp_path / "img" / "hagcn" / "config.json").read_text())
    assert cfg["data"] == str(image_data) and "split_seed" in cfg

    # Data that cannot be drawn: said so, and no grid written; the report is still made.
    assert main([*args, "--data", str(split_npz), "--out", str(tmp_path / "blobs")]) == 0
    out = capsys.readouterr().out
    assert "no neighbour grid" in out and not (tmp_path / "blobs" / "neighbours.png").exists()
    page = Page((tmp_path / "blobs" / "report.html").read_text())
    assert page.sections == SECTIONS and not [i for i in page.images if i["section"] == "neighbours"]


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_grid_of_fashion_mnist_pictures(tmp_path):
    """Real Fashion-MNIST pictures (a subset, as a pixel .npz) with LSH codes."""
    from deephash.data import load_fashion_mnist
    from deephash.methods import get_method

    x, y = load_fashion_mnist()
    keep = np.concatenate([np.flatnonzero(y == c)[:40] for c in range(10)])
    p = tmp_path / "fm.npz"
    np.savez(p, x=x[keep], y=y[keep], image_shape=np.array([28, 28]))
    split = load_data(p)
    images, why = viz.item_images(p, split)
    lsh = get_method("lsh", 32).fit(split.x_train)
    data, layout = viz.grid_for_codes(images, split, lsh.encode(split.x_query), lsh.encode(split.x_db), k=5,
                                      per_class=1)
    assert viz.png_size(data) == viz.grid_size(10, 5)
    img = png_array(data)
    c = layout.rows[0][0]
    tile = img[c.y0 + viz.FRAME:c.y0 + viz.FRAME + viz.TILE, c.x0 + viz.FRAME:c.x0 + viz.FRAME + viz.TILE, 0]
    assert np.array_equal(tile[::2, ::2], np.round(split.x_query[c.row].reshape(28, 28) * 255).astype(np.uint8))


def test_embed_records_image_paths(tmp_path):
    pytest.importorskip("torchvision")
    image_folder(tmp_path / "img", per_class=10, size=20)
    (tmp_path / "out").mkdir()
    e = tmp_path / "out" / "e.npz"
    assert main(["embed", "--images", str(tmp_path / "img"), "--out", str(e), "--untrained", "--arch", "resnet18",
                 "--image-size", "32"]) == 0
    z = np.load(e)
    assert z["paths"].tolist() == [f"../img/{c}/{i}.png" for c in ("cat", "dog") for i in range(10)]
    split = load_data(e)
    images, why = viz.item_images(e, split)
    assert why == "" and images.image("query", 0).shape == (20, 20, 3)


# ---------------------------------------------------------------------------------------------
# Progress


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_lines_when_not_a_terminal(tmp_path, split_npz, capsys):
    from deephash.training import progress

    assert isinstance(progress.training_progress("x", 2, 3, stream=io.StringIO()), progress.EpochLines)
    run = tmp_path / "run"
    assert main(["train", "--method", "hagcn-net", "--data", str(split_npz), "--bits", "16", "--epochs", "3",
                 "--batch-size", "32", "--anchors", "16", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    history = json.loads((run / "metrics.json").read_text())["loss_history"]
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 3
    for epoch, (line, loss) in enumerate(zip(lines, history), 1):
        assert line.startswith(f"HAGCN chebyshev (network) 16b: epoch {epoch}/3, loss {loss:.6g}, 3 steps, ")


def test_progress_bar_on_a_terminal():
    from deephash.training import progress

    tty = FakeTerminal()
    bar = progress.training_progress("HAGCN gcn 16b", 2, 3, stream=tty)
    assert isinstance(bar, progress.StepBar)
    for epoch in (1, 2):
        for _ in range(3):
            bar.step(epoch, 0.5)
        bar.end_epoch(epoch, 0.5)
    bar.close()
    out = tty.getvalue()
    assert "\r" in out and "6/6" in out and "epoch 1/2" not in out
    resumed = progress.training_progress("HAGCN gcn 16b", 2, 3, start_epoch=1, stream=io.StringIO())
    resumed.end_epoch(2, 0.25)
    assert resumed.stream.getvalue().splitlines()[0] == "HAGCN gcn 16b: resuming after epoch 1/2"


# ---------------------------------------------------------------------------------------------
# In a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(html_path: Path, png: Path, profile: Path, width=1600, height=2400, timeout=180):
    """Headless Chromium's screenshot of a page; (return code, stderr)."""
    profile.mkdir(parents=True, exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", "--force-device-scale-factor=1", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", f"--screenshot={png}",
           f"--window-size={width},{height}", html_path.resolve().as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stderr


@pytest.mark.browser
def test_report_renders_in_chromium(tmp_path, image_run):
    if CHROMIUM is None:
        # CI sets DEEPHASH_REQUIRE_BROWSER=1 so that a failed install cannot pass as a skip.
        if os.environ.get("DEEPHASH_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed and DEEPHASH_REQUIRE_BROWSER=1")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    out = tmp_path / "report.html"
    assert main(["report", str(image_run), "--out", str(out)]) == 0
    png = tmp_path / "shot.png"
    rc, err = render(out, png, tmp_path / "profile")
    assert rc == 0, err[-2000:]
    assert png.is_file() and viz.png_size(png.read_bytes()) == (1600, 2400)
    # No page errors (the page has no scripts, so any console message is one) and no blocked loads.
    bad = [line for line in err.splitlines() if ":CONSOLE" in line or "ERR_" in line]
    assert not bad, bad
    shot = png_array(png.read_bytes()).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(shot, axis=0)}
    # The images were decoded and drawn: the grids' frame colours and the second curve's colour (tab:orange).
    assert {viz.MATCH_COLOUR, viz.QUERY_COLOUR, (255, 127, 14)} <= colours  # no miss when the model is perfect


def test_report_draws_the_trained_hagcn_filter_before_and_after(tmp_path, image_data, image_run):
    """A trained default HAGCN (--epochs N): its loss curve and its encoding filter g(λ) before and after."""
    run = tmp_path / "trained"
    assert main(["train", "--data", str(image_data), "--bits", "16", "--epochs", "2", "--batch-size", "32",
                 "--anchors", "6", "--out", str(run), "--no-progress"]) == 0
    assert main(["report", str(run), str(image_run), "--out", str(tmp_path / "r.html")]) == 0
    page = Page((tmp_path / "r.html").read_text())
    assert [viz.png_size(decode_img(i)) for i in page.images if i["section"] == "filter"] == [(560, 380)]
    assert len([i for i in page.images if i["section"] == "loss"]) == 1
    assert main(["report", str(image_run), "--out", str(tmp_path / "closed.html")]) == 0
    assert not [i for i in Page((tmp_path / "closed.html").read_text()).images if i["section"] == "filter"]
