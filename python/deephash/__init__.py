"""deephash: binary hash codes for embeddings, and fast exact search over them.

The fast ops live in :mod:`deephash_ext`; this package is the Python layer on top of them:
:mod:`~deephash.data` (data sets and splits), :mod:`~deephash.methods` (every hashing method, HAGCN
included, behind one interface; :func:`get_method`, :func:`load_model`), :mod:`~deephash.run` (a training
run and its directory), :mod:`~deephash.codes` (packing, labels, the codes file), :class:`Index`,
:mod:`~deephash.metrics`, :mod:`~deephash.graphs` and :mod:`~deephash.models` (HAGCN's graphs and
networks), and the ``deephash`` CLI. docs/formats.md describes the files they write.
"""
import torch  # noqa: F401  (deephash_ext._C links against torch's libraries: load them first)

__version__ = "0.2.0"

from .data import DataError, Split, load_data  # noqa: E402
from .index import Index  # noqa: E402
from .methods import HAGCN, LSH, METHODS, HashMethod, NetworkHAGCN, PaperHAGCN, get_method, load_model  # noqa: E402
from .models.filtered_projection import FILTERS  # noqa: E402
from .run import fit_and_evaluate, train_and_evaluate  # noqa: E402

__all__ = ["HAGCN", "NetworkHAGCN", "PaperHAGCN", "FILTERS", "HashMethod", "Index", "LSH", "METHODS", "get_method",
           "load_model", "Split", "DataError", "load_data", "fit_and_evaluate", "train_and_evaluate"]
