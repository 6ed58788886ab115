"""Sharded exact search on torch.distributed (gloo, local processes on 127.0.0.1): the same answer as one
process, bit for bit, whatever the shards and ranks; failures reach every rank; no hang."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import deephash_ext as de
from deephash.search.distributed import ShardedIndex, ShardError
from deephash.search.sharding import read_manifest, shard_name
from deephash.search.index import Index

import ranks
from ranks import env

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "dist_worker.py"
N = 1000


def packed(n, bits, seed, distinct):
    g = torch.Generator().manual_seed(seed)
    pool = de.pack_bits(torch.randint(0, 2, (distinct, bits), generator=g))
    return pool[torch.randint(0, distinct, (n,), generator=g)]


def make(tmp_path, bits=64):
    # Few distinct codes: ties everywhere. Ids run backwards, so breaking ties by id would show.
    idx = Index(bits).add(packed(N, bits, 1, 12), ids=np.arange(N)[::-1] * 3)
    q = packed(7, bits, 2, 12)
    np.save(tmp_path / "q.npy", q.numpy())
    return idx, q, tmp_path


@pytest.fixture
def setup(tmp_path):
    return make(tmp_path)


def shard(idx, sizes, folder):
    paths = idx.shard(sizes, folder)
    assert [Path(p).name for p in paths] == [shard_name(i, len(paths)) for i in range(len(paths))]
    return folder


def launch(world, cfg, deadline_s=120, skip_wait=()):
    """`world` ranks of tests/dist_worker.py (tests/ranks.py)."""
    return ranks.launch(WORKER, world, cfg, deadline_s, skip_wait)


def check_results(tmp_path, ranks, idx, q, k):
    d0, i0 = idx.search(q, k)
    for r in ranks:
        got = np.load(tmp_path / f"res.{r}.npz")
        assert np.array_equal(got["d"], d0.numpy()) and np.array_equal(got["ids"], i0.numpy())


@pytest.mark.parametrize("bits", [20, 64])
@pytest.mark.parametrize("sizes", [[N], [300, 700], [123, 600, 277], [400, 0, 600]])
def test_one_process_over_every_shard(tmp_path, bits, sizes):
    idx, q, tmp = make(tmp_path, bits)
    folder = shard(idx, sizes, tmp / "shards")
    m = read_manifest(folder)
    assert [s["rows"] for s in m["shards"]] == sizes and m["bits"] == idx.bits
    s = ShardedIndex(folder)
    assert s.world_size == 1 and len(s) == N
    for k in (1, 5, 40, N, N + 10):
        for a, b in zip(s.search(q, k), idx.search(q, k)):
            assert torch.equal(a, b)


@pytest.mark.parametrize("m", [None, 3])
def test_shards_of_a_multi_index_search_by_multi_index(tmp_path, m, monkeypatch):
    """Shards keep their index's kind: a kind="mih" index's shards are searched through their hash tables
    (on the CPU), with the flat index's answers, removed rows included."""
    from deephash.search import mih

    flat, q, tmp = make(tmp_path, 64)
    idx = Index(64, kind="mih", m=m).add(flat.codes, ids=flat.ids)
    idx.remove(flat.ids[::7])
    flat.remove(flat.ids[::7])
    folder = shard(idx, [300, 0, len(idx) - 300], tmp / "shards")  # shards hold the live rows
    calls = []
    real = mih.MultiIndex.search
    monkeypatch.setattr(mih.MultiIndex, "search", lambda self, *a, **k: (calls.append(1), real(self, *a, **k))[1])
    s = ShardedIndex(folder)
    for k in (1, 5, 40, N + 10):
        for a, b in zip(s.search(q, k), flat.search(q, k)):
            assert torch.equal(a, b), k
    assert len(calls) == 4 * 2  # two non-empty shards, four searches


@pytest.mark.parametrize("bits,world,sizes,dst", [(64, 1, [N], None), (20, 2, [300, 700], None),
                                                 (64, 3, [123, 600, 277], None), (20, 2, [400, 0, 600], 0)])
def test_ranks_equal_one_process(tmp_path, bits, world, sizes, dst):
    idx, q, tmp = make(tmp_path, bits)
    folder = shard(idx, sizes, tmp / "shards")
    cfg = {"dir": str(folder), "queries": str(tmp / "q.npy"), "k": 37, "out": str(tmp / "res"), "timeout": 60,
           "dst": dst}
    out = launch(world, cfg)
    assert [c for c, _ in out] == [0] * world, out
    check_results(tmp, [0] if dst == 0 else range(world), idx, q, 37)
    if dst == 0:
        assert not (tmp / "res.1.npz").exists()


def test_a_corrupted_shard_is_reported_on_every_rank(setup):
    idx, q, tmp = setup
    folder = shard(idx, [500, 500], tmp / "shards")
    f = folder / shard_name(1, 2)
    raw = bytearray(f.read_bytes())
    raw[4096 + 100] ^= 0x01  # inside shard 1's codes
    f.write_bytes(bytes(raw))
    cfg = {"dir": str(folder), "queries": str(tmp / "q.npy"), "k": 5, "out": str(tmp / "res"), "timeout": 300}
    t = time.monotonic()
    out = launch(2, cfg, deadline_s=120)
    assert time.monotonic() - t < 120  # far below the process group's 300 s: nobody waited for a timeout
    for code, text in out:
        assert code == 2 and "rank 1:" in text and "block 0" in text and "codes checksum" in text, text
        assert "rank 0:" not in text


def test_a_missing_shard_is_reported_on_every_rank(setup):
    idx, q, tmp = setup
    folder = shard(idx, [200, 300, 500], tmp / "shards")
    os.unlink(folder / shard_name(2, 3))
    cfg = {"dir": str(folder), "queries": str(tmp / "q.npy"), "k": 5, "out": str(tmp / "res"), "timeout": 300}
    out = launch(3, cfg, deadline_s=120)
    for code, text in out:
        assert code == 2 and "rank 2:" in text and "cannot read index file" in text, text


@pytest.mark.parametrize("how", ["hang_rank", "die_rank"])
def test_a_hung_or_dead_rank_times_out_cleanly(setup, how):
    idx, q, tmp = setup
    folder = shard(idx, [500, 500], tmp / "shards")
    cfg = {"dir": str(folder), "queries": str(tmp / "q.npy"), "k": 5, "out": str(tmp / "res"), "timeout": 8,
           how: 1}
    out = launch(2, cfg, deadline_s=100, skip_wait=(1,))
    code, text = out[0]
    assert code == 2 and "rank 0: lost contact with the other ranks" in text, text


def test_bad_shard_folders(tmp_path):
    with pytest.raises(ShardError, match="not a shard folder"):
        ShardedIndex(tmp_path)
    (tmp_path / "shards.json").write_text("{]")
    with pytest.raises(ShardError, match="cannot read the shard manifest"):
        ShardedIndex(tmp_path)
    (tmp_path / "shards.json").write_text(json.dumps({"format": "deephash-shards", "bits": 8,
                                                      "shards": [{"file": "../x.idx", "rows": 1}]}))
    with pytest.raises(ShardError, match="not a deephash shard manifest"):
        ShardedIndex(tmp_path)
    with pytest.raises(ValueError, match="add up"):
        Index(8).add(torch.zeros(5, 1, dtype=torch.uint8)).shard([2, 2], tmp_path / "s")


def test_cli_shard_and_torchrun_search(setup):
    idx, q, tmp = setup
    idx.save(tmp / "db.idx")
    np.savez(tmp / "q.npz", codes=q.numpy(), bits=np.int64(idx.bits), ids=np.arange(len(q)))
    run = lambda *a, **kw: subprocess.run([sys.executable, *a], capture_output=True, text=True, timeout=240,  # noqa: E731
                                          cwd=tmp, **kw)
    r = run("-m", "deephash", "shard", "--index", "db.idx", "--shards", "150,850", "--out", "sh")
    assert r.returncode == 0 and "wrote 2 shards" in r.stdout, r.stderr
    r = run("-m", "deephash", "search", "--index", "db.idx", "--codes", "q.npz", "-k", "9", "--out", "one.npz")
    assert r.returncode == 0, r.stderr
    e = env(2)
    r = run("-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", e["MASTER_PORT"], "-m", "deephash", "search", "--index", "sh", "--codes", "q.npz",
            "-k", "9", "--out", "two.npz", "--timeout", "60", env={k: v for k, v in e.items() if k != "WORLD_SIZE"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("wrote the 9 nearest of 7 queries") == 1  # rank 0 alone reports
    one, two = np.load(tmp / "one.npz"), np.load(tmp / "two.npz")
    for key in ("distances", "ids", "query_ids"):
        assert np.array_equal(one[key], two[key])
    r = run("-m", "deephash", "search", "--index", "sh", "--codes", "q.npz", "-k", "9", "--out", "three.npz")
    assert r.returncode == 0 and np.array_equal(np.load(tmp / "three.npz")["ids"], one["ids"]), r.stderr
    r = run("-m", "deephash", "shard", "--index", "db.idx", "--shards", "x", "--out", "sh2")
    assert r.returncode == 2 and "--shards" in r.stderr and "Traceback" not in r.stderr
    r = run("-m", "deephash", "search", "--index", str(tmp), "--codes", "q.npz")
    assert r.returncode == 2 and "not a shard folder" in r.stderr and "Traceback" not in r.stderr
