"""Render results.json (+ the saved attack scores) to a self-contained report.html and, from the same HTML, report.pdf.

The HTML embeds its figures as data URIs and its style inline: it loads nothing, from the network or from disk.
Every value shown passes through Jinja's autoescape (class names, ids, descriptions, messages), and none is placed
inside ``<style>``. The PDF renderer gets a URL fetcher that refuses every URL but ``data:`` (:class:`_DataOnly`), so
even a hostile results.json cannot make report rendering reach the network or read a local file.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from unlearn_audit.common import atomic_write_text
from unlearn_audit.report import plots
from unlearn_audit.report.view import build_view, is_num

SUPPORTED_SCHEMA_MAJOR = "2"


class ReportError(ValueError):
    """A run folder that cannot be rendered (missing or malformed results.json or scores)."""


def _env() -> Environment:
    return Environment(loader=PackageLoader("unlearn_audit.report", "templates"),
                       autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def load_scores(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Attack scores saved by the audit in ``artefacts/scores.npz``: keys ``<attack>:<target>/<state>/members`` and
    ``.../nonmembers`` (label 1 = forget-set record, 0 = never trained on). Missing file → no score plots."""
    if not path.is_file():
        return {}
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"PK\x03\x04":          # np.load would treat anything else as a pickle or .npy
                raise ReportError(f"{path}: unreadable attack scores (not an .npz file: no zip archive signature)")
        with np.load(path, allow_pickle=False) as z:
            keys = sorted({k.rsplit("/", 1)[0] for k in z.files})
            return {k: (np.asarray(z[f"{k}/members"], float), np.asarray(z[f"{k}/nonmembers"], float)) for k in keys}
    except ReportError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        why = "an object array, never unpickled" if "pickle" in str(err) else f"{type(err).__name__}: {err}"
        raise ReportError(f"{path}: unreadable attack scores ({why})") from None


def load_per_example(path: Path) -> dict[str, np.ndarray]:
    """Per-record arrays of the per-example tests (``artefacts/per_example.npz``, keys
    ``group/state/signal/statistic``). Missing file → no histogram."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k], float) for k in z.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise ReportError(f"{path}: unreadable per-example results ({type(err).__name__}: {err})") from None


def _per_example_figure(view: dict, per_record: dict, colours) -> str | None:
    pe = view.get("per_example")
    if not pe or not per_record:
        return None
    wanted = [(g["name"], g["state"]) for g in pe["rows"] if g["state"] == "noiseless"]
    groups = {name: per_record[k] for name, state in wanted
              if (k := f"{name}/{state}/confidence/epsilon_lower_bound") in per_record}
    return plots.epsilon_histogram(groups, colours) if groups else None


def _figures(results: dict, view: dict, scores: dict, per_record: dict | None = None) -> dict:
    colours = plots.Colours()
    for name in results.get("methods") or {}:            # fix colours in the methods' order
        colours(name)
    cert = results.get("certificate") or {}
    bound = cert.get("sensitivity") if is_num(cert.get("sensitivity")) else None
    attack_figs: dict[str, dict[str, str]] = {}
    figs: dict[str, str | None | dict[str, dict[str, str]]] = {
        "distance": plots.distance_plot(results.get("methods") or {}, colours, bound,
                                        f"certified bound Δ = {bound:.3g} ({view['primary']})" if bound else ""),
        "latency": None, "tradeoff": None, "attacks": attack_figs,
        "per_example": _per_example_figure(view, per_record or {}, colours)}
    lat = [(row["name"], row["seconds"]) for row in view["latency"] if is_num(row["seconds"]) and row["seconds"] > 0]
    if lat:
        figs["latency"] = plots.latency_plot(lat, colours)
    if view["tradeoff"]["rows"] and view["tradeoff"]["models"]:
        figs["tradeoff"] = plots.tradeoff_plot(results["tradeoff"], colours, cert.get("sigma"))
    names = {e.get("attack_key"): e.get("attack") for e in results.get("equivalence") or [] if e.get("attack_key")}
    by_attack: dict[str, dict] = {}
    for key, pair in scores.items():
        attack_key, _, rest = key.partition(":")
        by_attack.setdefault(names.get(attack_key, attack_key), {})[rest] = pair
    for name, sc in by_attack.items():
        score_name = "score = −loss" if name.startswith("loss") else "attack score"
        attack_figs[name] = {"roc": plots.roc_plots(sc, colours),
                             "hist": plots.score_histograms(sc, colours, score_name)}
    return figs


def render_html(results: dict, scores: dict[str, tuple[np.ndarray, np.ndarray]],
                per_record: dict[str, np.ndarray] | None = None) -> str:
    view = build_view(results)
    figs = _figures(results, view, scores, per_record)
    return _env().get_template("report.html.j2").render(r=results, view=view, figs=figs)


def _data_only_fetcher():
    """A WeasyPrint URL fetcher that serves ``data:`` URLs and refuses every other URL (http, https, ftp, file, ...)
    without opening anything."""
    from weasyprint.urls import URLFetcher

    class _DataOnly(URLFetcher):
        def fetch(self, url, headers=None):
            if not str(url).lower().startswith("data:"):
                raise ValueError(f"unlearn-audit reports load nothing: refused {str(url)[:80]!r}")
            return super().fetch(url, headers)

    return _DataOnly(allowed_protocols={"data"}, allow_redirects=False, timeout=1)


def render_pdf(html: str, path: Path) -> None:
    from weasyprint import HTML

    # weasyprint logs layout warnings (and refused URLs) through `logging`; keep them off the CLI's stderr.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    HTML(string=html, base_url=None, url_fetcher=_data_only_fetcher()).write_pdf(str(path))


MAX_DEPTH = 32        # results.json nests about 6 levels; anything far deeper is not one (and would exhaust recursion)


def _depth(obj) -> int:
    """Nesting depth of a JSON value (iterative: a hostile file cannot exhaust the stack here)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, d)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def read_results(run_dir: Path) -> dict:
    """Read and minimally validate ``RUN_DIR/results.json`` (one-line :class:`ReportError` otherwise)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder")
    path = run_dir / "results.json"
    if not path.is_file():
        raise ReportError(f"{run_dir}: no results.json (is this an audit run folder?)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise ReportError(f"{path}: JSON nested too deeply (an unlearn-audit results file nests at most "
                          f"{MAX_DEPTH} levels)") from None
    if _depth(results) > MAX_DEPTH:
        raise ReportError(f"{path}: JSON nested deeper than {MAX_DEPTH} levels (not an unlearn-audit results file)")
    if not isinstance(results, dict):
        raise ReportError(f"{path}: expected a JSON object at the top level, got {type(results).__name__}")
    for key in ("schema_version", "verdict", "methods", "attacks"):
        if key not in results:
            raise ReportError(f"{path}: missing key '{key}' (not an unlearn-audit results file)")
    major = str(results["schema_version"]).split(".")[0]
    if major != SUPPORTED_SCHEMA_MAJOR:
        raise ReportError(f"{path}: schema_version {results['schema_version']} is not supported (this version reads "
                          f"{SUPPORTED_SCHEMA_MAJOR}.x)")
    for key, kind in (("verdict", dict), ("methods", dict), ("attacks", list)):
        if not isinstance(results[key], kind):
            raise ReportError(f"{path}: '{key}' must be a JSON {'object' if kind is dict else 'array'}")
    return results


def write_report(run_dir: Path, results: dict | None = None, *, pdf: bool = True) -> list[Path]:
    """(Re-)render report.html (and report.pdf) in ``run_dir`` from its results.json and saved scores.

    With ``results=None`` the results are read from ``run_dir/results.json``; a file that does not have the shape
    of an unlearn-audit results file raises :class:`ReportError` (one line) instead of a traceback."""
    run_dir = Path(run_dir)
    from_disk = results is None
    if results is None:
        results = read_results(run_dir)
    scores = load_scores(run_dir / "artefacts" / "scores.npz")
    per_record = load_per_example(run_dir / "artefacts" / "per_example.npz")
    try:
        html = render_html(results, scores, per_record)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        if not from_disk:
            raise
        raise ReportError(f"{run_dir / 'results.json'}: cannot render a report from it "
                          f"({type(err).__name__}: {err})") from None
    out = [atomic_write_text(run_dir / "report.html", html)]
    if pdf:
        tmp_pdf = run_dir / "report.pdf.tmp"
        try:
            render_pdf(html, tmp_pdf)
        except BaseException:
            tmp_pdf.unlink(missing_ok=True)
            raise
        tmp_pdf.replace(run_dir / "report.pdf")
        out.append(run_dir / "report.pdf")
    return out
