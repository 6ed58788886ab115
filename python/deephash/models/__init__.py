"""Models of deephash."""
from .hagcn import FILTERS, HAGCN, default_config

__all__ = ["HAGCN", "FILTERS", "default_config"]
