"""Device targets, profilers, cost and latency models, and the measured NAS tables."""

from ._encoding import ENCODINGS, FBNET, NB201, CellEncoding, get_encoding

__all__ = ["ENCODINGS", "FBNET", "NB201", "CellEncoding", "get_encoding"]
