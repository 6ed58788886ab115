"""deephash: binary hash codes for embeddings, and fast exact search over them.

The fast ops live in :mod:`deephash_ext`; this package is the Python layer on top of them:
:mod:`~deephash.data` (data sets and splits), :class:`HAGCN` (:mod:`deephash.models.hagcn`),
:mod:`~deephash.graphs`, :mod:`~deephash.train`, :class:`Index`, :mod:`~deephash.metrics`,
:mod:`~deephash.methods` (LSH, ITQ, ... and the deep heads) and the ``deephash`` CLI.
"""
import torch  # noqa: F401  (deephash_ext._C links against torch's libraries: load them first)

__version__ = "0.1.0"

from .data import DataError, Split, load_data  # noqa: E402
from .index import Index  # noqa: E402
from .methods import LSH, METHODS, get_method  # noqa: E402
from .models.hagcn import FILTERS, HAGCN  # noqa: E402
from .train import fit, load_model, save_model, train_and_evaluate  # noqa: E402

__all__ = ["HAGCN", "FILTERS", "Index", "LSH", "METHODS", "get_method", "Split", "DataError", "load_data", "fit", "load_model",
           "save_model", "train_and_evaluate"]
