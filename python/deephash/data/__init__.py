"""Data: where the embeddings and labels come from.

- :mod:`~deephash.data.datasets`: data sets and their train / query / database split (Fashion-MNIST,
  embedding folders, ``.npz`` files; :func:`load_data`, :class:`Split`, the protocols). Everything it
  offers is re-exported here, so ``from deephash.data import load_data`` reads as before.
- :mod:`~deephash.data.embed`: embeddings of an image folder by a torchvision backbone (``deephash embed``).
- :mod:`~deephash.data.selfsup`: self-supervised (SimCLR) embeddings of a data set's images, cached.

``embed`` and ``selfsup`` are not imported here: they pull in torchvision or the training code, which
``load_data`` does not need.
"""
from .datasets import (FASHION_MNIST_DIRS, FASHION_MNIST_FILES, FASHION_MNIST_URL, DataError, Split,
                       check_embeddings, load_data, load_embeddings, load_fashion_mnist, load_folder, load_npz,
                       paper_split, standard_split)

__all__ = ["DataError", "Split", "check_embeddings", "load_data", "standard_split", "load_fashion_mnist",
           "paper_split", "load_folder", "load_npz", "load_embeddings", "FASHION_MNIST_DIRS", "FASHION_MNIST_URL",
           "FASHION_MNIST_FILES"]
