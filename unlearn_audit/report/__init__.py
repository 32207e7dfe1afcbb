"""Reports: self-contained HTML (inline plots, escaped text, no network) and PDF from the same content."""

from unlearn_audit.report.render import ReportError, read_results, render_html, write_report

__all__ = ["ReportError", "read_results", "render_html", "write_report"]
