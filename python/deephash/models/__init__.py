"""The networks of the HAGCN methods (:mod:`deephash.methods.hagcn` trains them), and the graphs and
spectral operators they and the default HAGCN are built on (:mod:`~deephash.models.graphs`,
:mod:`~deephash.models.filtered_projection`)."""
from .hagcn import FILTERS, HAGCNNet, PaperHAGCNNet, canonical_filter

__all__ = ["FILTERS", "HAGCNNet", "PaperHAGCNNet", "canonical_filter"]
