"""The CLI against a hostile user: bad paths, crafted files and bad arguments for every subcommand.

Each case must end in exit status 2 and ONE line on stderr that names the culprit (the file or the
argument), with no traceback. Cases run in-process through :func:`deephash.cli.main`; a few run as
``python -m deephash`` to see what a user's terminal shows.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import make_blobs
from deephash.cli import main

BITS = 16


def _run(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_refused(argv, capsys, *names):
    rc, _, err = _run(argv, capsys)
    assert "Traceback" not in err, err
    assert rc == 2, f"exit {rc}: {err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "internal error" not in err, err
    for n in names:
        assert str(n) in err, f"{n!r} not named in: {err}"
    return err


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A small workspace: a split, an LSH run, query / database codes files and an index."""
    d = tmp_path_factory.mktemp("hostile")
    x, y = make_blobs(n_per_class=30, seed=3)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    q, rest = perm[:12], perm[12:]
    split = d / "split.npz"
    np.savez(split, x_train=x[rest[:80]], y_train=y[rest[:80]], x_query=x[q], y_query=y[q], x_db=x[rest],
             y_db=y[rest])
    run = d / "run"
    assert main(["train", "--method", "lsh", "--data", str(split), "--bits", str(BITS), "--out", str(run)]) == 0
    qc, dbc = d / "q.npz", d / "db.npz"
    assert main(["encode", "--model", str(run), "--data", str(split), "--split", "query", "--out", str(qc)]) == 0
    assert main(["encode", "--model", str(run), "--data", str(split), "--split", "db", "--out", str(dbc)]) == 0
    idx = d / "db.idx"
    assert main(["index", "--codes", str(dbc), "--out", str(idx)]) == 0
    return SimpleNamespace(dir=d, split=split, run=run, model=run / "model.pt", q=qc, db=dbc, idx=idx, x=x, y=y)


@pytest.fixture
def t(tmp_path):
    return tmp_path


def codes_file(path, n=4, bits=BITS, **over):
    """A codes file with ``n`` codes; ``over`` replaces (or, as None, drops) arrays."""
    nb = bits if isinstance(bits, int) else BITS
    arrays = {"codes": np.zeros((n, (nb + 7) // 8), np.uint8), "bits": np.asarray(bits),
              "ids": np.arange(n, dtype=np.int64), "labels": np.arange(n, dtype=np.int64) % 2}
    for k, v in over.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def model_file(path, ws, mutate):
    blob = torch.load(ws.model, weights_only=True)
    mutate(blob)
    torch.save(blob, path)
    return path


class _Payload:
    def __reduce__(self):
        return (os.getenv, ("HOME",))


def pickle_payload(path):
    with open(path, "wb") as f:
        pickle.dump({"config": _Payload()}, f)
    return path


def train_args(ws, out, *extra, data=None):
    return ["train", "--data", data or ws.split, "--bits", BITS, "--out", out, "--no-progress", *extra]


def net_args(ws, out, *extra):
    """Training HAGCN's network (``hagcn-net``): the options of a training in epochs."""
    return train_args(ws, out, "--method", "hagcn-net", *extra)


# ------------------------------------------------------------------------------------------------
# The cases: name -> (function of (ws, tmp) returning (argv, culprits named in the message)).

CASES = {}


def case(name):
    def put(f):
        CASES[name] = f
        return f
    return put


# -- train ---------------------------------------------------------------------------------------
@case("train: --data missing")
def _(ws, t):
    return train_args(ws, t / "r", data=t / "nope.npz"), ["nope.npz"]


@case("train: --data an empty folder")
def _(ws, t):
    (t / "empty").mkdir()
    return train_args(ws, t / "r", data=t / "empty"), ["empty", "no embeddings"]


@case("train: --data a folder named like a file")
def _(ws, t):
    (t / "dir.npz").mkdir()
    return train_args(ws, t / "r", data=t / "dir.npz"), ["dir.npz"]


@case("train: --data string labels")
def _(ws, t):
    np.savez(t / "s.npz", x=ws.x, y=np.array([f"c{v}" for v in ws.y]))
    return train_args(ws, t / "r", data=t / "s.npz"), ["s.npz"]


@case("train: --data non-integer labels")
def _(ws, t):
    np.savez(t / "f.npz", x=ws.x, y=ws.y + 0.5)
    return train_args(ws, t / "r", data=t / "f.npz"), ["f.npz"]


@case("train: --data pickled object array")
def _(ws, t):
    np.savez(t / "o.npz", x=np.array([object()] * 3, dtype=object), y=np.arange(3))
    return train_args(ws, t / "r", data=t / "o.npz"), ["o.npz"]


@case("train: --data not a zip")
def _(ws, t):
    (t / "junk.npz").write_bytes(b"PK\x03\x04 not really")
    return train_args(ws, t / "r", data=t / "junk.npz"), ["junk.npz"]


@case("train: --out an existing file")
def _(ws, t):
    (t / "file").write_text("x")
    return train_args(ws, t / "file", "--method", "lsh"), ["file"]


@case("train: --out below a file")
def _(ws, t):
    (t / "file").write_text("x")
    return train_args(ws, t / "file" / "run", "--method", "lsh"), ["file"]


@case("train: --lr 1e30")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--batch-size", 32, "--anchors", 8, "--lr", "1e30"), ["--lr"]


@case("train: --lr 0")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--lr", "0"), ["--lr"]


@case("train: --lr nan")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--lr", "nan"), ["--lr"]


@case("train: --lr -1 (csq)")
def _(ws, t):
    return train_args(ws, t / "r", "--method", "csq", "--epochs", 1, "--lr", "-1"), ["--lr"]


@case("train: hagcn-net --epochs 0 (0 is the default hagcn's closed form; the network needs an epoch)")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 0), ["epochs must be >= 1"]


@case("train: --epochs -3 (dsh)")
def _(ws, t):
    return train_args(ws, t / "r", "--method", "dsh", "--epochs", -3), ["--epochs"]


@case("train: --batch-size 0")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--batch-size", 0), ["--batch-size"]


@case("train: --order 0")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--order", 0), ["--order"]


@case("train: --order -2 spline")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--filter", "spline", "--order", -2), ["--order"]


@case("train: --order 3 spline")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--filter", "spline", "--order", 3), ["order", "spline"]


@case("train: --order with --filter gcn")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--filter", "gcn", "--order", 3), ["order", "gcn"]


@case("train: --order with --method itq")
def _(ws, t):
    return train_args(ws, t / "r", "--method", "itq", "--order", 4), ["--order", "itq"]


@case("train: --epochs with --method lsh")
def _(ws, t):
    return train_args(ws, t / "r", "--method", "lsh", "--epochs", 4), ["--epochs", "lsh"]


@case("train: --device with --method lsh")
def _(ws, t):
    return train_args(ws, t / "r", "--method", "lsh", "--device", "cpu"), ["--device", "lsh"]


@case("train: --anchors -5")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--anchors", -5), ["--anchors"]


@case("train: --anchors beyond the training items")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--anchors", 5000), ["anchors", "5000"]


@case("train: --theta-lr for hagcn-net (the trained hagcn's option)")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--theta-lr", 0.1), ["--theta-lr", "hagcn-net"]


@case("train: hagcn --epochs -1")
def _(ws, t):
    return train_args(ws, t / "r", "--epochs", -1), ["--epochs", "-1"]


@case("train: hagcn --anchors beyond the training items")
def _(ws, t):
    return train_args(ws, t / "r", "--anchors", 5000), ["anchors", "5000"]


@case("train: hagcn --subgraphs leaving tiny graphs")
def _(ws, t):
    return train_args(ws, t / "r", "--subgraphs", 1000), ["subgraphs", "1000"]


@case("train: hagcn --filter none --order 3")
def _(ws, t):
    return train_args(ws, t / "r", "--filter", "none", "--order", 3), ["order", "none"]


@case("train: hagcn-net --filter none")
def _(ws, t):
    return net_args(ws, t / "r", "--filter", "none"), ["filter", "none"]


@case("index: --substrings with a flat index")
def _(ws, t):
    return ["index", "--codes", ws.db, "--out", t / "i.idx", "--substrings", 3], ["--substrings", "mih"]


@case("index: --kind mih --substrings 0")
def _(ws, t):
    return ["index", "--codes", ws.db, "--out", t / "i.idx", "--kind", "mih", "--substrings", 0], ["--substrings"]


@case("index: --kind mih --substrings beyond the bits")
def _(ws, t):
    return ["index", "--codes", ws.db, "--out", t / "i.idx", "--kind", "mih", "--substrings", 999], ["999"]


@case("train: --subgraphs 0")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--subgraphs", 0), ["--subgraphs"]


@case("train: --subgraphs 1000")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--batch-size", 32, "--subgraphs", 1000), ["subgraphs"]


@case("train: --subgraphs not dividing the batch")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--batch-size", 32, "--subgraphs", 5), ["subgraphs", "32"]


@case("train: --device cuda without CUDA")
def _(ws, t):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    return net_args(ws, t / "r", "--epochs", 1, "--device", "cuda"), ["--device", "cuda"]


@case("train: --device nonsense")
def _(ws, t):
    return net_args(ws, t / "r", "--epochs", 1, "--device", "gpu7"), ["--device", "gpu7"]


@case("train: --split-seed -1")
def _(ws, t):
    return train_args(ws, t / "r", "--split-seed", -1, "--method", "lsh"), ["--split-seed"]


@case("train: --train-per-class 0")
def _(ws, t):
    return train_args(ws, t / "r", "--train-per-class", 0, "--method", "lsh"), ["--train-per-class"]


@case("train: --train-per-class lots")
def _(ws, t):
    return train_args(ws, t / "r", "--train-per-class", "lots", "--method", "lsh"), ["--train-per-class", "lots"]


@case("train: --train-per-class on data with its own split")
def _(ws, t):
    return train_args(ws, t / "r", "--train-per-class", 3, "--method", "lsh"), ["train_per_class", "own split"]


@case("train: --seed -1")
def _(ws, t):
    return train_args(ws, t / "r", "--seed", -1, "--method", "lsh"), ["--seed"]


@case("train: --bits 16.7")
def _(ws, t):
    return ["train", "--data", ws.split, "--bits", "16.7", "--out", t / "r"], ["--bits", "16.7"]


@case("train: --bits 4")
def _(ws, t):
    return ["train", "--data", ws.split, "--bits", "4", "--out", t / "r"], ["--bits"]


@case("train: unknown --method")
def _(ws, t):
    return train_args(ws, t / "r", "--method", "sift"), ["--method", "sift"]


def _resume_with(ws, t, write):
    run = t / "r"
    run.mkdir()
    write(run / "checkpoint.pt")
    return net_args(ws, run, "--epochs", 1, "--anchors", 8, "--resume"), [str(run / "checkpoint.pt")]


@case("train: --resume on a pickle payload")
def _(ws, t):
    return _resume_with(ws, t, pickle_payload)


@case("train: --resume on garbage")
def _(ws, t):
    return _resume_with(ws, t, lambda p: p.write_bytes(b"\x00garbage" * 10))


@case("train: --resume on a dict without keys")
def _(ws, t):
    return _resume_with(ws, t, lambda p: torch.save({"epoch": 1}, p))


@case("train: --resume on a list")
def _(ws, t):
    return _resume_with(ws, t, lambda p: torch.save([1, 2], p))


@case("train: --resume on a directory")
def _(ws, t):
    return _resume_with(ws, t, lambda p: p.mkdir())


@case("train: --resume (deep method) on a payload")
def _(ws, t):
    run = t / "r"
    run.mkdir()
    pickle_payload(run / "checkpoint.pt")
    return train_args(ws, run, "--method", "dsh", "--epochs", 1, "--resume"), ["checkpoint.pt"]


def _folder(t, items, make=lambda i: np.ones(4, np.float32) * i):
    root = t / "folder"
    for c in range(2):
        (root / str(c)).mkdir(parents=True)
    for i in range(items):
        np.save(root / str(i % 2) / f"{i}.npy", make(i))
    return root


@case("train: --data folder of complex embeddings")
def _(ws, t):
    root = _folder(t, 10, lambda i: np.ones(4, np.complex64) * (1 + 1j))
    return train_args(ws, t / "r", "--method", "lsh", data=root), ["0.npy", "complex"]


@case("train: --data folder with a 1-D embedding of strings")
def _(ws, t):
    root = _folder(t, 10)
    np.save(root / "0" / "s.npy", np.array(["a", "b", "c", "d"]))
    return train_args(ws, t / "r", "--method", "lsh", data=root), ["s.npy"]


@case("train: --data folder of 3 items")
def _(ws, t):
    return train_args(ws, t / "r", "--method", "lsh", data=_folder(t, 3)), ["at least 6 items", "got 3"]


# -- encode ----------------------------------------------------------------------------------------
def encode_args(ws, model, out, *extra):
    return ["encode", "--model", model, "--data", ws.split, "--split", "query", "--out", out, *extra]


@case("encode: --model missing")
def _(ws, t):
    return encode_args(ws, t / "none.pt", t / "c.npz"), ["none.pt"]


@case("encode: --model folder without model.pt")
def _(ws, t):
    (t / "run").mkdir()
    return encode_args(ws, t / "run", t / "c.npz"), ["run"]


@case("encode: --model a pickle payload")
def _(ws, t):
    return encode_args(ws, pickle_payload(t / "m.pt"), t / "c.npz"), ["m.pt"]


@case("encode: --model without bits")
def _(ws, t):
    return encode_args(ws, model_file(t / "m.pt", ws, lambda b: b.pop("bits")), t / "c.npz"), ["m.pt", "bits"]


@case("encode: --model without state")
def _(ws, t):
    return encode_args(ws, model_file(t / "m.pt", ws, lambda b: b["state"].pop("proj")), t / "c.npz"), ["m.pt"]


@case("encode: --model with string bits")
def _(ws, t):
    return encode_args(ws, model_file(t / "m.pt", ws, lambda b: b.update(bits="sixteen")), t / "c.npz"), \
        ["m.pt", "bits"]


@case("encode: --model with an unknown option")
def _(ws, t):
    return encode_args(ws, model_file(t / "m.pt", ws, lambda b: b.update(options={"foo": 1})), t / "c.npz"), \
        ["m.pt", "foo"]


@case("encode: --model with options a list")
def _(ws, t):
    return encode_args(ws, model_file(t / "m.pt", ws, lambda b: b.update(options=[1])), t / "c.npz"), ["m.pt"]


@case("encode: --model with a projection of the wrong shape")
def _(ws, t):
    def bad(b):
        b["state"]["proj"] = torch.zeros(3, 3)
    return encode_args(ws, model_file(t / "m.pt", ws, bad), t / "c.npz"), ["m.pt"]


@case("encode: --model with a state that is not tensors")
def _(ws, t):
    def bad(b):
        b["state"]["mean"] = "zero"
    return encode_args(ws, model_file(t / "m.pt", ws, bad), t / "c.npz"), ["m.pt"]


@case("encode: --model hagcn without its network")
def _(ws, t):
    def bad(b):
        b.update(method="hagcn", options={"filter": "gcn"}, state={"config": {}})
    return encode_args(ws, model_file(t / "m.pt", ws, bad), t / "c.npz"), ["m.pt"]


@case("encode: --input missing")
def _(ws, t):
    return ["encode", "--model", ws.run, "--input", t / "x.npy", "--out", t / "c.npz"], ["x.npy"]


@case("encode: --input a directory")
def _(ws, t):
    (t / "x.npy").mkdir()
    return ["encode", "--model", ws.run, "--input", t / "x.npy", "--out", t / "c.npz"], ["x.npy"]


@case("encode: --input npz without x")
def _(ws, t):
    np.savez(t / "e.npz", y=np.arange(3))
    return ["encode", "--model", ws.run, "--input", t / "e.npz", "--out", t / "c.npz"], ["e.npz"]


@case("encode: --input labels of the wrong length")
def _(ws, t):
    np.savez(t / "e.npz", x=ws.x[:5], y=np.arange(3))
    return ["encode", "--model", ws.run, "--input", t / "e.npz", "--out", t / "c.npz"], ["e.npz"]


@case("encode: --input non-integer labels")
def _(ws, t):
    np.savez(t / "e.npz", x=ws.x[:5], y=np.arange(5) + 0.5)
    return ["encode", "--model", ws.run, "--input", t / "e.npz", "--out", t / "c.npz"], ["e.npz"]


@case("encode: --out a directory")
def _(ws, t):
    (t / "c.npz").mkdir()
    return encode_args(ws, ws.run, t / "c.npz"), ["c.npz"]


@case("encode: --out in a missing folder")
def _(ws, t):
    return encode_args(ws, ws.run, t / "no" / "c.npz"), [t / "no"]


@case("encode: --split-seed -1")
def _(ws, t):
    return encode_args(ws, ws.run, t / "c.npz", "--split-seed", "-1"), ["--split-seed"]


# -- index -----------------------------------------------------------------------------------------
def index_args(codes, out):
    return ["index", "--codes", codes, "--out", out]


@case("index: --codes missing")
def _(ws, t):
    return index_args(t / "c.npz", t / "i.idx"), ["c.npz"]


@case("index: --codes a directory")
def _(ws, t):
    (t / "c.npz").mkdir()
    return index_args(t / "c.npz", t / "i.idx"), ["c.npz"]


@case("index: --codes without codes")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", codes=None), t / "i.idx"), ["c.npz", "codes"]


@case("index: --codes bits an array")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", bits=np.array([16, 16])), t / "i.idx"), ["c.npz", "bits"]


@case("index: --codes bits 16.7")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", bits=np.float64(16.7)), t / "i.idx"), ["c.npz", "bits", "16.7"]


@case("index: --codes bits a string")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", bits=np.array("sixteen")), t / "i.idx"), ["c.npz", "bits"]


@case("index: --codes bits 0")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", bits=np.int64(0)), t / "i.idx"), ["c.npz", "bits"]


@case("index: --codes bits 2^40")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", n=0, bits=np.int64(2 ** 40), codes=np.zeros((0, 2), np.uint8)),
                      t / "i.idx"), ["c.npz", "bits"]


@case("index: --codes string ids")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", ids=np.array(["a", "b", "c", "d"])), t / "i.idx"), ["c.npz", "ids"]


@case("index: --codes float ids")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", ids=np.arange(4) + 0.5), t / "i.idx"), ["c.npz", "ids"]


@case("index: --codes ids of the wrong length")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", ids=np.arange(3)), t / "i.idx"), ["c.npz", "ids"]


@case("index: --codes 2-D ids")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", ids=np.zeros((4, 1), np.int64)), t / "i.idx"), ["c.npz", "ids"]


@case("index: --codes with padding bits set")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", bits=np.int64(12), codes=np.full((4, 2), 255, np.uint8)),
                      t / "i.idx"), ["c.npz", "padding"]


@case("index: --codes of int32")
def _(ws, t):
    return index_args(codes_file(t / "c.npz", codes=np.zeros((4, 2), np.int32)), t / "i.idx"), ["c.npz"]


@case("index: --codes a pickle")
def _(ws, t):
    return index_args(pickle_payload(t / "c.npz"), t / "i.idx"), ["c.npz"]


@case("index: --out a directory")
def _(ws, t):
    (t / "i.idx").mkdir()
    return index_args(ws.db, t / "i.idx"), ["i.idx"]


@case("index: --out in a missing folder")
def _(ws, t):
    return index_args(ws.db, t / "no" / "i.idx"), ["i.idx"]


@case("index: --out below a file")
def _(ws, t):
    (t / "f").write_text("x")
    return index_args(ws.db, t / "f" / "i.idx"), ["i.idx"]


# -- search ----------------------------------------------------------------------------------------
def search_args(ws, *extra, index=None, codes=None):
    return ["search", "--index", index or ws.idx, "--codes", codes or ws.q, *extra]


@case("search: --index missing")
def _(ws, t):
    return search_args(ws, index=t / "none.idx"), ["none.idx"]


@case("search: --index a folder without a manifest")
def _(ws, t):
    (t / "shards").mkdir()
    return search_args(ws, index=t / "shards"), ["shards"]


@case("search: --index a codes file")
def _(ws, t):
    return search_args(ws, index=ws.db), ["db.npz"]


@case("search: --codes of other bits")
def _(ws, t):
    return search_args(ws, codes=codes_file(t / "c.npz", bits=24, codes=np.zeros((4, 3), np.uint8))), ["c.npz", "24"]


@case("search: --codes string ids")
def _(ws, t):
    c = codes_file(t / "c.npz", ids=np.array(["a", "b", "c", "d"]))
    return search_args(ws, codes=c), ["c.npz", "ids"]


@case("search: --codes missing")
def _(ws, t):
    return search_args(ws, codes=t / "none.npz"), ["none.npz"]


@case("search: -k 0")
def _(ws, t):
    return search_args(ws, "-k", 0), ["-k"]


@case("search: -k -3")
def _(ws, t):
    return search_args(ws, "-k", -3), ["-k"]


@case("search: --show -1")
def _(ws, t):
    return search_args(ws, "--show", -1), ["--show"]


@case("search: --out a directory")
def _(ws, t):
    (t / "res.npz").mkdir()
    return search_args(ws, "--out", t / "res.npz"), ["res.npz"]


@case("search: --out in a missing folder")
def _(ws, t):
    return search_args(ws, "--out", t / "no" / "res.npz"), ["res.npz"]


@case("search: --grid in a missing folder")
def _(ws, t):
    return search_args(ws, "--grid", t / "no" / "g.png", "--data", ws.split), ["g.png"]


@case("search: --data without --grid (it would do nothing)")
def _(ws, t):
    return search_args(ws, "--data", ws.split), ["--data", "--grid"]


@case("search: --per-class and --seed without --grid")
def _(ws, t):
    return search_args(ws, "--per-class", 3, "--seed", 1), ["--per-class", "--seed", "--grid"]


@case("search: --grid of a shard folder")
def _(ws, t):
    assert main(["shard", "--index", str(ws.idx), "--shards", "2", "--out", str(t / "sh")]) == 0
    return search_args(ws, "--grid", t / "g.png", index=t / "sh"), ["--grid", "sh"]


@case("search: sharded, --device cuda without CUDA")
def _(ws, t):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["shard", "--index", str(ws.idx), "--shards", "2", "--out", str(t / "sh")]) == 0
    return search_args(ws, "--device", "cuda", index=t / "sh"), ["--device", "cuda"]


@case("search: sharded, --timeout 0")
def _(ws, t):
    assert main(["shard", "--index", str(ws.idx), "--shards", "2", "--out", str(t / "sh")]) == 0
    return search_args(ws, "--timeout", 0, index=t / "sh"), ["--timeout"]


@case("search: sharded, -k 0")
def _(ws, t):
    assert main(["shard", "--index", str(ws.idx), "--shards", "2", "--out", str(t / "sh")]) == 0
    return search_args(ws, "-k", 0, index=t / "sh"), ["-k"]


# -- shard -----------------------------------------------------------------------------------------
def shard_args(ws, shards, out, index=None):
    return ["shard", "--index", index or ws.idx, "--shards", shards, "--out", out]


@case("shard: --shards 0")
def _(ws, t):
    return shard_args(ws, 0, t / "sh"), ["--shards"]


@case("shard: --shards -2")
def _(ws, t):
    return shard_args(ws, -2, t / "sh"), ["--shards"]


@case("shard: --shards x")
def _(ws, t):
    return shard_args(ws, "x", t / "sh"), ["--shards"]


@case("shard: --shards sizes not adding up")
def _(ws, t):
    return shard_args(ws, "3,4", t / "sh"), ["--shards"]


@case("shard: --out an existing file")
def _(ws, t):
    (t / "sh").write_text("x")
    return shard_args(ws, 2, t / "sh"), ["sh"]


@case("shard: --index missing")
def _(ws, t):
    return shard_args(ws, 2, t / "sh", index=t / "none.idx"), ["none.idx"]


@case("shard: --index a directory")
def _(ws, t):
    (t / "d.idx").mkdir()
    return shard_args(ws, 2, t / "sh", index=t / "d.idx"), ["d.idx"]


# -- eval ------------------------------------------------------------------------------------------
def eval_args(q, db, *extra):
    return ["eval", "--query", q, "--db", db, *extra]


@case("eval: no queries")
def _(ws, t):
    return eval_args(codes_file(t / "q0.npz", n=0), ws.db), ["q0.npz", "no codes"]


@case("eval: empty database")
def _(ws, t):
    return eval_args(ws.q, codes_file(t / "d0.npz", n=0)), ["d0.npz", "no codes"]


@case("eval: non-integer query labels")
def _(ws, t):
    return eval_args(codes_file(t / "qf.npz", labels=np.arange(4) + 0.5), ws.db), ["qf.npz", "labels"]


@case("eval: NaN multi-hot labels")
def _(ws, t):
    lab = np.zeros((4, 3))
    lab[0, 0] = np.nan
    return eval_args(codes_file(t / "qn.npz", labels=lab), codes_file(t / "dn.npz", labels=np.ones((4, 3)))), \
        ["qn.npz", "labels"]


@case("eval: string labels")
def _(ws, t):
    return eval_args(codes_file(t / "qs.npz", labels=np.array(list("abcd"))), ws.db), ["qs.npz", "labels"]


@case("eval: labels of the wrong length")
def _(ws, t):
    return eval_args(codes_file(t / "ql.npz", labels=np.arange(3)), ws.db), ["ql.npz", "labels"]


@case("eval: 3-D labels")
def _(ws, t):
    return eval_args(codes_file(t / "q3.npz", labels=np.zeros((4, 2, 2))), ws.db), ["q3.npz", "labels"]


@case("eval: class ids against multi-hot")
def _(ws, t):
    return eval_args(ws.q, codes_file(t / "mh.npz", labels=np.ones((4, 3)))), ["mh.npz", "labels"]


@case("eval: multi-hot of different widths")
def _(ws, t):
    return eval_args(codes_file(t / "a.npz", labels=np.ones((4, 3))), codes_file(t / "b.npz", labels=np.ones((4, 5)))), \
        ["labels", "3", "5"]


@case("eval: no labels")
def _(ws, t):
    return eval_args(codes_file(t / "nl.npz", labels=None), ws.db), ["nl.npz", "labels"]


@case("eval: bits differ")
def _(ws, t):
    return eval_args(codes_file(t / "b24.npz", bits=24, codes=np.zeros((4, 3), np.uint8)), ws.db), ["b24.npz"]


@case("eval: --out an existing file")
def _(ws, t):
    (t / "ev").write_text("x")
    return eval_args(ws.q, ws.db, "--out", t / "ev"), ["ev"]


@case("eval: --query a directory")
def _(ws, t):
    (t / "q.npz").mkdir()
    return eval_args(t / "q.npz", ws.db), ["q.npz"]


# -- demo ------------------------------------------------------------------------------------------
@case("demo: --data missing")
def _(ws, t):
    return ["demo", "--data", t / "nope.npz", "--bits", BITS, "--out", t / "demo"], ["nope.npz"]


@case("demo: --out an existing file")
def _(ws, t):
    (t / "demo").write_text("x")
    return ["demo", "--data", ws.split, "--bits", BITS, "--out", t / "demo", "--no-progress"], ["demo"]


@case("demo: --anchors -1")
def _(ws, t):
    return ["demo", "--data", ws.split, "--bits", BITS, "--anchors", -1, "--out", t / "demo",
            "--no-progress"], ["--anchors"]


@case("demo: --epochs -1")
def _(ws, t):
    return ["demo", "--data", ws.split, "--bits", BITS, "--epochs", -1, "--out", t / "demo"], ["--epochs"]


# -- embed -----------------------------------------------------------------------------------------
@case("embed: --images missing")
def _(ws, t):
    return ["embed", "--images", t / "imgs", "--out", t / "e.npz", "--untrained"], ["imgs"]


@case("embed: --images a file")
def _(ws, t):
    (t / "imgs").write_text("x")
    return ["embed", "--images", t / "imgs", "--out", t / "e.npz", "--untrained"], ["imgs"]


@case("embed: --batch-size 0")
def _(ws, t):
    (t / "imgs" / "a").mkdir(parents=True)
    return ["embed", "--images", t / "imgs", "--out", t / "e.npz", "--untrained", "--batch-size", 0], ["--batch-size"]


@case("embed: --image-size -1")
def _(ws, t):
    (t / "imgs" / "a").mkdir(parents=True)
    return ["embed", "--images", t / "imgs", "--out", t / "e.npz", "--untrained", "--image-size", -1], ["--image-size"]


@case("embed: --out in a missing folder")
def _(ws, t):
    (t / "imgs" / "a").mkdir(parents=True)
    return ["embed", "--images", t / "imgs", "--out", t / "no" / "e.npz", "--untrained"], ["e.npz"]


# -- report ----------------------------------------------------------------------------------------
@case("report: RUN missing")
def _(ws, t):
    return ["report", t / "none"], ["none"]


@case("report: RUN a file")
def _(ws, t):
    (t / "f").write_text("x")
    return ["report", t / "f"], ["f"]


def _copy_run(ws, t):
    import shutil
    run = t / "run"
    shutil.copytree(ws.run, run)
    return run


@case("report: config.json not JSON")
def _(ws, t):
    run = _copy_run(ws, t)
    (run / "config.json").write_text("{not json")
    return ["report", run], ["config.json"]


@case("report: config.json a list")
def _(ws, t):
    run = _copy_run(ws, t)
    (run / "config.json").write_text("[1, 2]")
    return ["report", run], ["config.json"]


@case("report: config.json a directory")
def _(ws, t):
    run = _copy_run(ws, t)
    (run / "config.json").unlink()
    (run / "config.json").mkdir()
    return ["report", run], ["config.json"]


@case("report: config.json with string bits")
def _(ws, t):
    import json
    run = _copy_run(ws, t)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["bits"] = "many"
    (run / "config.json").write_text(json.dumps(cfg))
    return ["report", run], ["config.json", "bits"]


@case("report: config.json naming a missing data set")
def _(ws, t):
    import json
    run = _copy_run(ws, t)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"] = str(t / "gone.npz")
    (run / "config.json").write_text(json.dumps(cfg))
    return ["report", run], ["gone.npz"]


@case("report: model.pt a pickle payload")
def _(ws, t):
    run = _copy_run(ws, t)
    pickle_payload(run / "model.pt")
    return ["report", run], ["model.pt"]


@case("report: metrics.json not an object")
def _(ws, t):
    run = _copy_run(ws, t)
    (run / "metrics.json").write_text('"x"')
    return ["report", run], ["metrics.json"]


@case("report: -k 0")
def _(ws, t):
    return ["report", ws.run, "-k", 0, "--out", t / "r.html"], ["-k"]


@case("report: --out a directory")
def _(ws, t):
    (t / "r.html").mkdir()
    return ["report", ws.run, "--out", t / "r.html"], ["r.html"]


@case("report: --out in a missing folder")
def _(ws, t):
    return ["report", ws.run, "--out", t / "no" / "r.html"], ["r.html"]


@case("report: several runs without --out")
def _(ws, t):
    return ["report", ws.run, ws.run], ["--out"]


@case("no subcommand")
def _(ws, t):
    return [], ["command"]


@case("unknown subcommand")
def _(ws, t):
    return ["frobnicate"], ["frobnicate"]


# -- issue 26: output paths, FIFOs, shard manifests, extremes, report run files ------------------
def _sharded(ws, t, edit=None):
    """A shard folder of ws.idx (3 shards); ``edit(manifest)`` rewrites its shards.json."""
    import json
    sh = t / "sh"
    assert main(["shard", "--index", str(ws.idx), "--shards", "3", "--out", str(sh)]) == 0
    if edit is not None:
        m = json.loads((sh / "shards.json").read_text())
        edited = edit(m)
        (sh / "shards.json").write_text(edited if isinstance(edited, str) else json.dumps(m))
    return sh


def _swap(m):
    m["shards"][0], m["shards"][1] = m["shards"][1], m["shards"][0]


def _twice(m):
    m["shards"][1] = dict(m["shards"][0])
    m["shards"][1]["offset"] = m["shards"][0]["rows"]
    m["shards"][2]["offset"] = 2 * m["shards"][0]["rows"]
    m["rows"] = sum(s["rows"] for s in m["shards"])


MANIFEST_LIES = {
    "a shard listed twice": _twice,
    "entries reordered (offsets following)": lambda m: (_swap(m), m["shards"][0].update(offset=0),
                                                       m["shards"][1].update(offset=m["shards"][0]["rows"])),
    "entries reordered (offsets kept)": _swap,
    "a shard's rows wrong": lambda m: (m["shards"][0].update(rows=m["shards"][0]["rows"] + 1),
                                       m.update(rows=m["rows"] + 1), [s.update(offset=s["offset"] + 1)
                                                                      for s in m["shards"][1:]]),
    "an offset wrong": lambda m: m["shards"][1].update(offset=m["shards"][1]["offset"] + 5),
    "the total rows wrong": lambda m: m.update(rows=m["rows"] + 7),
    "version 2": lambda m: m.update(version=2),
    "bits wrong": lambda m: m.update(bits=m["bits"] * 2),
    "nested 100,000 deep": lambda m: '{"format": ' + "[" * 100_000 + "]" * 100_000 + "}",
}
for _lie in MANIFEST_LIES:
    @case(f"search: sharded, shards.json with {_lie}")
    def _(ws, t, lie=_lie):
        sh = _sharded(ws, t, MANIFEST_LIES[lie])
        return search_args(ws, index=sh), ["shards.json" if lie not in ("bits wrong",) else "shard-00000"]


@case("search: --index a FIFO")
def _(ws, t):
    os.mkfifo(t / "pipe.idx")
    return search_args(ws, index=t / "pipe.idx"), ["pipe.idx", "FIFO"]


@case("search: --codes a FIFO")
def _(ws, t):
    os.mkfifo(t / "pipe.npz")
    return search_args(ws, codes=t / "pipe.npz"), ["pipe.npz", "FIFO"]


@case("index: --codes a FIFO")
def _(ws, t):
    os.mkfifo(t / "pipe.npz")
    return index_args(t / "pipe.npz", t / "i.idx"), ["pipe.npz", "FIFO"]


@case("search: sharded, shards.json a FIFO")
def _(ws, t):
    sh = _sharded(ws, t)
    (sh / "shards.json").unlink()
    os.mkfifo(sh / "shards.json")
    return search_args(ws, index=sh), ["shards.json", "FIFO"]


@case("search: an index whose directory JSON is nested 40,000 deep")
def _(ws, t):
    import zlib
    from deephash.search import index_file
    pre = index_file._preamble(BITS, 100)
    doc = b"[" * 40_000 + b"]" * 40_000
    d = b"DHDIR\0\0\0" + len(doc).to_bytes(8, "little") + doc
    d += bytes(-len(d) % 8)
    body = bytearray(pre + bytes(4096 - len(pre))) + d
    body[128:128 + 48] = index_file._slot(pre, 1, 4096, len(d), 0, 0, zlib.crc32(d))
    (t / "deep.idx").write_bytes(bytes(body))
    return search_args(ws, index=t / "deep.idx"), ["deep.idx", "nested"]


@case("shard: --shards 9000000 on a small index")
def _(ws, t):
    return shard_args(ws, 9_000_000, t / "sh"), ["--shards", "one shard per row"]


@case("shard: --shards 1000 on a small index")
def _(ws, t):
    return shard_args(ws, 1000, t / "sh"), ["--shards", "one shard per row"]


@case("search: -k 2**63")
def _(ws, t):
    return search_args(ws, "-k", 2**63), ["-k"]


@case("search: -k 10**30")
def _(ws, t):
    return search_args(ws, "-k", 10**30), ["-k"]


@case("search: sharded, -k 2**63")
def _(ws, t):
    return search_args(ws, "-k", 2**63, index=_sharded(ws, t)), ["-k"]


@case("report: -k 2**63")
def _(ws, t):
    return ["report", ws.run, "-k", 2**63, "--out", t / "r.html"], ["-k"]


@case("index: --out a character device")
def _(ws, t):
    node = _char_device(t)
    return index_args(ws.db, node), [node, "character device"]


@case("index: --out a FIFO")
def _(ws, t):
    os.mkfifo(t / "out.idx")
    return index_args(ws.db, t / "out.idx"), ["out.idx", "FIFO"]


def _selfsup_args(t, *extra, n=40):
    imgs = np.random.default_rng(0).integers(0, 255, (n, 28, 28)).astype(np.uint8)
    np.savez(t / "imgs.npz", images=imgs)
    return ["embed", "--self-supervised", "--data", t / "imgs.npz", "--out", t / "e.npz", "--no-progress", *extra]


for _dev in ("cuda:7", "meta", "bogus", "cpu:0:1"):
    @case(f"embed: --self-supervised --device {_dev}")
    def _(ws, t, dev=_dev):
        return _selfsup_args(t, "--device", dev), ["--device", dev]


@case("embed: --self-supervised --width 100000")
def _(ws, t):
    return _selfsup_args(t, "--width", 100_000), ["--width"]


@case("embed: --self-supervised --subset beyond the images")
def _(ws, t):
    return _selfsup_args(t, "--subset", 500, n=40), ["--subset", "40 images"]


def _run_with(ws, t, where, edit):
    import json
    run = _copy_run(ws, t)
    d = json.loads((run / where).read_text())
    edit(d)
    (run / where).write_text(json.dumps(d))
    return run


REPORT_LIES = {
    "pr_curve without recall": ("metrics.json", lambda d: d["pr_curve"].pop("recall"), "pr_curve.recall"),
    "pr_curve a list": ("metrics.json", lambda d: d.update(pr_curve=[1, 2]), "pr_curve"),
    "pr_curve of strings": ("metrics.json", lambda d: d["pr_curve"].update(precision=["a"] * 17), "pr_curve.precision"),
    "pr_curve of uneven lengths": ("metrics.json", lambda d: d["pr_curve"]["recall"].pop(), "pr_curve"),
    "mAP@1000 high": ("metrics.json", lambda d: d.update({"mAP@1000": "high"}), "mAP@1000"),
    "train_seconds a list": ("metrics.json", lambda d: d.update(train_seconds=[1]), "train_seconds"),
    "loss_history of strings": ("metrics.json", lambda d: d.update(loss_history=["x"]), "loss_history"),
    "seed abc": ("config.json", lambda d: d.update(seed="abc"), "seed"),
    "split_seed -1": ("config.json", lambda d: d.update(split_seed=-1), "split_seed"),
    "data a number": ("config.json", lambda d: d.update(data=5), "data"),
    "model.in_dim a string": ("config.json", lambda d: d["model"].update(in_dim="x"), "model.in_dim"),
    "model.method a list": ("config.json", lambda d: d["model"].update(method=[1]), "model.method"),
}
for _lie in REPORT_LIES:
    @case(f"report: {_lie}")
    def _(ws, t, lie=_lie):
        where, edit, key = REPORT_LIES[lie]
        return ["report", _run_with(ws, t, where, edit), "--out", t / "r.html"], [where, key]


def _char_device(t) -> Path:
    """A private node of /dev/null's device (major 1, minor 3) in ``t``: a character device that tests may
    write to without touching the machine's /dev/null (skips where mknod is not allowed)."""
    node = t / "null"
    try:
        os.mknod(node, 0o666 | __import__("stat").S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot create a character device here ({e})")
    return node


def test_out_through_devices_fifos_and_symlinks(ws, t, capsys):
    """--out never renames over a device or FIFO (that turned /dev/null into a regular file for the whole
    machine) and replaces the file a symlink names, not the link."""
    import stat
    import threading

    node = _char_device(t)
    assert main(["search", "--index", str(ws.idx), "--codes", str(ws.q), "--out", str(node)]) == 0
    assert stat.S_ISCHR(os.stat(node).st_mode)
    fifo = t / "fifo.npz"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.update(data=open(fifo, "rb").read()))
    reader.start()
    assert main(["search", "--index", str(ws.idx), "--codes", str(ws.q), "-k", "3", "--out", str(fifo)]) == 0
    reader.join(60)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and got["data"][:2] == b"PK"  # the npz went through the pipe
    real, link = t / "real.npz", t / "link.npz"
    real.write_bytes(b"old")
    link.symlink_to(real)
    assert main(["search", "--index", str(ws.idx), "--codes", str(ws.q), "-k", "3", "--out", str(link)]) == 0
    assert link.is_symlink() and np.load(real)["ids"].shape == (12, 3)
    dangling = t / "dangling.idx"
    dangling.symlink_to(t / "target.idx")
    assert main(["index", "--codes", str(ws.db), "--out", str(dangling)]) == 0
    assert dangling.is_symlink() and (t / "target.idx").is_file()
    assert main(["search", "--index", str(dangling), "--codes", str(ws.q), "-k", "2"]) == 0
    assert sorted(p.name for p in t.iterdir() if p.name.endswith(".tmp")) == []


def test_report_out_ignores_a_planted_tmp_symlink_and_draws_dollar_names(ws, t, capsys):
    """report --out F wrote a fixed F.tmp, following a symlink planted there; and a run folder named with
    `$` was parsed by matplotlib as mathtext."""
    import shutil

    victim = t / "victim.txt"
    victim.write_text("precious")
    (t / "r.html.tmp").symlink_to(victim)
    run = t / "a$x^2$b$"
    shutil.copytree(ws.run, run)
    assert main(["report", str(run), "--out", str(t / "r.html")]) == 0
    assert victim.read_text() == "precious"
    assert (t / "r.html").is_file() and not (t / "r.html").is_symlink()
    assert "a$x^2$b$" in (t / "r.html").read_text()


def _denied(path: Path) -> bool:
    """Whether writing ``path`` fails with PermissionError here (as root, only places like /sys do)."""
    try:
        with open(path, "wb"):
            pass
    except PermissionError:
        return True
    except OSError:
        return False
    os.unlink(path)
    return False


DENIED = Path("/sys/deephash-test")


@case("encode: --out permission denied")
def _(ws, t):
    if not _denied(DENIED):
        pytest.skip("no path here refuses writes")
    return encode_args(ws, ws.run, DENIED), [DENIED, "ermission"]


@case("train: --out permission denied")
def _(ws, t):
    if not _denied(DENIED):
        pytest.skip("no path here refuses writes")
    return train_args(ws, DENIED / "run", "--method", "lsh"), [DENIED]


@case("index: --out permission denied")
def _(ws, t):
    if not _denied(DENIED):
        pytest.skip("no path here refuses writes")
    return index_args(ws.db, DENIED), [DENIED]


@case("search: --device with an index file")
def _(ws, t):
    return search_args(ws, "--device", "cpu"), ["--device", "sharded"]


@case("search: --timeout with an index file")
def _(ws, t):
    return search_args(ws, "--timeout", 5), ["--timeout", "sharded"]


# ------------------------------------------------------------------------------------------------
# What the user sees around the refusals


def test_debug_shows_the_traceback(ws, t, capsys):
    argv = ["index", "--codes", str(t / "missing.npz"), "--out", str(t / "i.idx")]
    for debug_first in (True, False):
        rc, _, err = _run(["--debug", *argv] if debug_first else [*argv, "--debug"], capsys)
        assert rc == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("deephash index: error:")
        assert "missing.npz" in err.strip().splitlines()[-1]


def test_a_bug_is_one_line_with_exit_1(ws, t, capsys, monkeypatch):
    import deephash.cli.search as cli

    def broken(args):
        return {}["oops"]

    monkeypatch.setattr(cli, "cmd_index", broken)
    argv = ["index", "--codes", str(ws.db), "--out", str(t / "i.idx")]
    rc, _, err = _run(argv, capsys)
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "internal error: KeyError" in err and "--debug" in err
    rc, _, err = _run([*argv, "--debug"], capsys)
    assert rc == 1 and "Traceback" in err and "broken" in err


@pytest.mark.parametrize("argv", [
    ["index", "--codes", "{t}/missing.npz", "--out", "{t}/i.idx"],
    ["eval", "--query", "{t}/q0.npz", "--db", "{db}"],
    ["train", "--data", "{split}", "--bits", "16", "--lr", "nan", "--out", "{t}/r"],
    ["encode", "--model", "{t}/payload.pt", "--input", "{t}/x.npy", "--out", "{t}/c.npz"],
])
def test_terminal_shows_one_line(argv, ws, t):
    codes_file(t / "q0.npz", n=0)
    pickle_payload(t / "payload.pt")
    argv = [a.format(t=t, db=ws.db, split=ws.split) for a in argv]
    r = subprocess.run([sys.executable, "-m", "deephash", *argv], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"deephash {argv[0]}: error:")


def test_out_is_written_to_exactly_the_path_given(ws, t, capsys):
    """``--out NAME`` without ``.npz`` writes NAME (not NAME.npz), so the next command given NAME works."""
    codes = t / "codes"
    assert main(["encode", "--model", str(ws.run), "--data", str(ws.split), "--split", "db",
                 "--out", str(codes)]) == 0
    assert codes.is_file() and not Path(f"{codes}.npz").exists()
    assert str(codes) in capsys.readouterr().out
    assert main(["index", "--codes", str(codes), "--out", str(t / "db")]) == 0
    assert (t / "db").is_file()
    res = t / "res"
    assert main(["search", "--index", str(t / "db"), "--codes", str(ws.q), "-k", "3", "--out", str(res)]) == 0
    assert res.is_file() and not Path(f"{res}.npz").exists() and np.load(res)["ids"].shape == (12, 3)
    assert main(["eval", "--query", str(ws.q), "--db", str(codes)]) == 0


def test_options_are_not_bent(ws, t, capsys):
    """--anchors, --subgraphs and a fitting fourier --order are used exactly as given."""
    from deephash.methods import load_model

    run = t / "r"
    argv = net_args(ws, run, "--epochs", "1", "--batch-size", "32", "--anchors", "5", "--subgraphs", "4")
    assert main([str(a) for a in argv]) == 0
    net = load_model(run).net
    assert net.anchor_x.shape[0] == 5 and net.config["subgraphs"] == 4 and net.config["anchors"] == 5


# Last: every case above, wherever it is defined, is in the list.
@pytest.mark.parametrize("name", list(CASES))
def test_refused_with_one_line(name, ws, t, capsys):
    argv, names = CASES[name](ws, t)
    assert_refused(argv, capsys, *names)


def test_case_count():
    print(f"{len(CASES)} hostile CLI cases")
    assert len(CASES) >= 100
