"""Tables, plots and HTML reports built from run records (imports only devicefit.core; no torch)."""

from ._run_report import load_run, render_run_report, write_run_report
from ._tables import Column, format_bytes, format_count, markdown_table

__all__ = ["Column", "format_bytes", "format_count", "load_run", "markdown_table", "render_run_report",
           "write_run_report"]
