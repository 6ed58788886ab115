"""Hashing methods with the small :class:`~deephash.methods.base.HashMethod` interface.

``METHODS`` maps each name to its class; :func:`get_method` builds one::

    m = get_method("itq", 64).fit(x_train)            # unsupervised
    m = get_method("csq", 64, epochs=20).fit(x_train, y_train)
    m = get_method("hagcn", 64, filter="spline").fit(x_train)   # the default HAGCN
    codes = m.encode(x)                                # ±1 float32 [N, 64]
    m.save("model.pt"); load_model("model.pt")         # any method's model file (docs/formats.md)
"""
from .base import METHODS, HashMethod
from .bihalf import BiHalf
from .csq import CSQ
from .dsh import DSH
from .hagcn import HAGCN, NetworkHAGCN, PaperHAGCN
from .hashnet import HashNet
from .hybridhash import HybridHash
from .itq import ITQ
from .lsh import LSH
from .pcah import PCAH
from .sh import SH
from .shc import SHC

METHODS.update({m.name: m for m in (LSH, PCAH, ITQ, SH, DSH, HashNet, BiHalf, CSQ, SHC, HybridHash, HAGCN,
                                    NetworkHAGCN, PaperHAGCN)})  # the registry HashMethod.load reads (base.METHODS)

load_model = HashMethod.load


def _key(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "")


def get_method(name: str, bits: int, **kwargs) -> HashMethod:
    """A new, unfitted method ``name`` of ``bits`` bits; ``kwargs`` are its options (and ``seed``)."""
    by_key = {_key(n): cls for n, cls in METHODS.items()}
    if _key(name) not in by_key:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return by_key[_key(name)](bits, **kwargs)


__all__ = ["HashMethod", "METHODS", "get_method", "load_model", "LSH", "PCAH", "ITQ", "SH", "DSH", "HashNet",
           "BiHalf", "CSQ", "SHC", "HybridHash", "HAGCN", "NetworkHAGCN", "PaperHAGCN"]
