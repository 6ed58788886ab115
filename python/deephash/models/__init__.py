"""The networks of the HAGCN methods (:mod:`deephash.methods.hagcn` trains them)."""
from .hagcn import FILTERS, HAGCNNet, PaperHAGCNNet, canonical_filter

__all__ = ["FILTERS", "HAGCNNet", "PaperHAGCNNet", "canonical_filter"]
