"""Tables, plots and HTML reports built from run records (imports only devicefit.core; no torch)."""

from ._tables import Column, format_bytes, format_count, markdown_table

__all__ = ["Column", "format_bytes", "format_count", "markdown_table"]
