"""deephash: binary hash codes for embeddings, and fast exact search over them.

The fast ops live in :mod:`deephash_ext`; this package is the Python layer on top of them, grouped by role
(docs/architecture.md):

- :mod:`~deephash.data`: data sets and splits, image and self-supervised embeddings;
- :mod:`~deephash.methods`: every hashing method, HAGCN included, behind one interface (:func:`get_method`,
  :func:`load_model`); :mod:`~deephash.models`: HAGCN's graphs and networks;
- :mod:`~deephash.codes`: packing, labels, the codes file; :mod:`~deephash.metrics`: mAP, precision, PR curves;
- :mod:`~deephash.search`: :class:`Index`, its file format, multi-index hashing, FAISS, sharded search;
- :mod:`~deephash.training`: a training run and its directory, checkpoints, data-parallel training, the demo;
- :mod:`~deephash.views`: the neighbour grid and the HTML report;
- :mod:`~deephash.cli`: the ``deephash`` command line.

docs/formats.md describes the files they write.
"""
import torch  # noqa: F401  (deephash_ext._C links against torch's libraries: load them first)

__version__ = "0.2.0"

from .data import DataError, Split, load_data  # noqa: E402
from .search.index import Index  # noqa: E402
from .methods import HAGCN, LSH, METHODS, HashMethod, NetworkHAGCN, PaperHAGCN, get_method, load_model  # noqa: E402
from .models.filtered_projection import FILTERS  # noqa: E402
from .training.run import fit_and_evaluate, train_and_evaluate  # noqa: E402

__all__ = ["HAGCN", "NetworkHAGCN", "PaperHAGCN", "FILTERS", "HashMethod", "Index", "LSH", "METHODS", "get_method",
           "load_model", "Split", "DataError", "load_data", "fit_and_evaluate", "train_and_evaluate"]
