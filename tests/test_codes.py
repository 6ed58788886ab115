"""deephash.codes: packing, labels, relevance and the codes file."""
import numpy as np
import pytest
import torch

import deephash_ext
from deephash import codes


def _pm1(n, bits, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n, bits), generator=g).float() * 2 - 1


@pytest.mark.parametrize("bits", [8, 13, 64])
def test_as_packed_takes_pm1_real_bool_and_packed(bits):
    c = _pm1(7, bits)
    packed = codes.as_packed(c)
    assert packed.dtype == torch.uint8 and packed.shape == (7, (bits + 7) // 8)
    assert torch.equal(packed, deephash_ext.pack_bits(c))
    assert torch.equal(codes.as_packed(c * 0.3), packed)  # real: bit = value > 0
    assert torch.equal(codes.as_packed(c > 0), packed)
    assert torch.equal(codes.as_packed(packed), packed)  # already packed: unchanged
    # numpy's little-endian bit order within a byte, bytes in column order
    expect = np.packbits((c > 0).numpy(), axis=1, bitorder="little")
    assert np.array_equal(packed.numpy(), expect)


def test_relevance_class_ids_and_multi_hot():
    ql, dl = np.array([0, 1, 2]), np.array([2, 0, 0, 1])
    rel = codes.relevance(codes.as_labels(ql), codes.as_labels(dl))
    assert rel.dtype == torch.bool and rel.tolist() == [[False, True, True, False], [False, False, False, True],
                                                        [True, False, False, False]]
    qm = np.array([[1, 0, 1], [0, 0, 0]], dtype=np.float32)
    dm = np.array([[0, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=np.float32)
    rel = codes.relevance(codes.as_labels(qm), codes.as_labels(dm))
    assert rel.tolist() == [[True, False, True], [False, False, False]]  # an item with no label matches nothing
    assert codes.as_labels(qm).dtype == torch.uint8 and codes.as_labels(ql).dtype == torch.int64
    assert codes.relevance is deephash_ext.reference.relevance  # the ops' definition, not a copy


def test_codes_file_round_trip(tmp_path):
    c = _pm1(9, 20, seed=1)
    labels = np.arange(9) % 3
    codes.save_codes(tmp_path / "a.npz", c, 20, labels=labels, ids=np.arange(9) * 10)
    back = codes.load_codes(tmp_path / "a.npz")
    assert back["bits"] == 20 and isinstance(back["bits"], int)
    assert np.array_equal(back["codes"], deephash_ext.pack_bits(c).numpy())
    assert back["ids"].tolist() == list(range(0, 90, 10)) and back["labels"].tolist() == labels.tolist()
    assert torch.equal(deephash_ext.unpack_bits(torch.from_numpy(back["codes"]), 20), (c > 0).to(torch.uint8))
    # packed input, default ids, no labels
    codes.save_codes(tmp_path / "b.npz", deephash_ext.pack_bits(c), 20)
    b = codes.load_codes(tmp_path / "b.npz")
    assert np.array_equal(b["codes"], back["codes"]) and b["ids"].tolist() == list(range(9)) and "labels" not in b


def test_bad_codes_files_are_refused_by_name(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: cannot read"):
        codes.load_codes(tmp_path / "junk.npz")
    np.savez(tmp_path / "nocodes.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="nocodes.npz: not a deephash codes file"):
        codes.load_codes(tmp_path / "nocodes.npz")
    np.savez(tmp_path / "width.npz", codes=np.zeros((2, 3), np.uint8), bits=np.int64(16))
    with pytest.raises(ValueError, match="width.npz: codes have 3 bytes per row, 16 bits need 2"):
        codes.load_codes(tmp_path / "width.npz")
