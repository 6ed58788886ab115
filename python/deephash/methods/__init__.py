"""Hashing methods with the small :class:`~deephash.methods.base.HashMethod` interface."""
from .base import HashMethod
from .lsh import LSH

METHODS = {LSH.name: LSH}

__all__ = ["HashMethod", "LSH", "METHODS"]
