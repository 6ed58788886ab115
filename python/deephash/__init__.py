"""deephash: binary hash codes for embeddings, and fast exact search over them.

The fast ops live in :mod:`deephash_ext`; this package is the Python layer on top of them.
"""
__version__ = "0.1.0"
