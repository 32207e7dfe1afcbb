"""Render results.json (+ saved attack scores) to a self-contained report.html and report.pdf."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from unlearn_audit.report import plots


class ReportError(ValueError):
    """A run folder that cannot be rendered (missing or malformed results.json)."""


def _env() -> Environment:
    env = Environment(loader=PackageLoader("unlearn_audit.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined)
    return env


def load_scores(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Attack scores saved by the audit (``scores.npz``; keys ``<target>/<state>/members|nonmembers``)."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        keys = sorted({k.rsplit("/", 1)[0] for k in z.files})
        return {k: (z[f"{k}/members"], z[f"{k}/nonmembers"]) for k in keys}


def render_html(results: dict, scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    figs = {"distance": plots.distance_plot(results["methods"]), "latency": plots.latency_plot(results["methods"]),
            "tradeoff": plots.tradeoff_plot(results["tradeoff"]), "roc": None, "hist": None}
    if scores:
        figs["roc"] = plots.roc_plots(scores)
        figs["hist"] = plots.score_histograms(scores)
    return _env().get_template("report.html.j2").render(r=results, v=results["verdict"], plots=figs)


def render_pdf(html: str, path: Path) -> None:
    from weasyprint import HTML

    HTML(string=html, base_url=None).write_pdf(str(path))


def read_results(run_dir: Path) -> dict:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise ReportError(f"{run_dir}: no results.json (is this an audit run folder?)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None
    for key in ("schema_version", "verdict", "methods", "attacks", "certificate"):
        if key not in results:
            raise ReportError(f"{path}: missing key '{key}' (not an unlearn-audit results file)")
    return results


def write_report(run_dir: Path, results: dict | None = None, *, pdf: bool = True) -> list[Path]:
    """(Re-)render report.html (and report.pdf) in ``run_dir`` from its results.json and saved scores."""
    run_dir = Path(run_dir)
    results = results if results is not None else read_results(run_dir)
    html = render_html(results, load_scores(run_dir / "artefacts" / "scores.npz"))
    out = [run_dir / "report.html"]
    tmp = run_dir / "report.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out[0])
    if pdf:
        tmp_pdf = run_dir / "report.pdf.tmp"
        render_pdf(html, tmp_pdf)
        tmp_pdf.replace(run_dir / "report.pdf")
        out.append(run_dir / "report.pdf")
    return out
