"""The HTML/PDF report: rendered by a real browser and a real PDF rasteriser, escaped, self-contained, and robust to
any number of methods and attacks, a missing certificate, and a violated certificate.

One small real audit (digits, 4 epochs, loss attack) is run once for the module; variants of its results.json test
the rest without recomputing.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn_audit.config import config_from_dict
from unlearn_audit.report import render_html, write_report
from unlearn_audit.report.render import load_per_example, load_scores
from unlearn_audit.report.view import build_view, findings, num

torch.set_num_threads(1)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PDFTOPPM = shutil.which("pdftoppm")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian 'chromium' is not installed (.ci/run installs it)")
needs_pdftoppm = pytest.mark.skipif(PDFTOPPM is None, reason="'pdftoppm' (poppler-utils) is not installed")

SMALL = {"seed": 3, "training": {"epochs": 4}, "unlearning": {"requests": 4},
         "privacy": {"epsilon": 2.0},
         "audit": {"attacks": ["loss"], "sweep_sigmas": [0.0, 0.1], "pairs": 8, "bootstrap": 200}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from unlearn_audit.audit import execute_audit

    out = tmp_path_factory.mktemp("report") / "run"
    execute_audit(config_from_dict(SMALL), out, pdf=True)
    return out


@pytest.fixture(scope="module")
def results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _variant(run_dir: Path, tmp_path: Path, results: dict, name: str = "v", pdf: bool = False) -> Path:
    """A copy of the run folder with ``results`` as its results.json, re-rendered by ``write_report``."""
    d = tmp_path / name
    shutil.copytree(run_dir, d)
    (d / "results.json").write_text(json.dumps(results), encoding="utf-8")
    write_report(d, pdf=pdf)
    return d


def _html(results: dict) -> str:
    """The report of ``results`` without the per-record score figures (fast)."""
    return render_html(json.loads(json.dumps(results)), {})


# ------------------------------------------------------------------------------------------------- browser checks
def _chromium(url: str, png: Path, profile: Path, size: str = "1200,3000") -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--host-resolver-rules=MAP * ~NOTFOUND",          # whatever happens, the test never reaches the network
           f"--screenshot={png}", f"--window-size={size}", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console_lines(stderr: str) -> list[str]:
    """Page console output in chromium's stderr log (console.log/error and uncaught exceptions all appear as
    ``...:CONSOLE...`` lines; uncaught ones also say ``Uncaught``)."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def _ink(png: Path) -> tuple[float, float]:
    """(fraction of pixels that are not near-white, pixel standard deviation) of an image."""
    from PIL import Image

    a = np.asarray(Image.open(png).convert("L"), dtype=float)
    return float((a < 235).mean()), float(a.std())


@needs_chromium
def test_console_capture_works(tmp_path):
    """Positive control: the log capture used below does see console errors and uncaught exceptions."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>control</p><script>console.error('control-error'); nope();</script></body></html>")
    proc = _chromium(page.as_uri(), tmp_path / "bad.png", tmp_path / "profile", "400,300")
    lines = _console_lines(proc.stderr)
    assert any("control-error" in ln for ln in lines), proc.stderr[-2000:]
    assert any("Uncaught" in ln for ln in lines), proc.stderr[-2000:]


@needs_chromium
def test_report_renders_in_chromium_without_console_errors(run_dir, tmp_path):
    png = tmp_path / "report.png"
    proc = _chromium((run_dir / "report.html").as_uri(), png, tmp_path / "profile")
    assert png.is_file(), proc.stderr[-2000:]
    assert _console_lines(proc.stderr) == []
    ink, std = _ink(png)
    assert ink > 0.03 and std > 15, f"screenshot looks blank: {ink:.3f} of pixels inked, std {std:.1f}"


@needs_pdftoppm
def test_pdf_pages_are_not_blank_and_nothing_overflows(run_dir, tmp_path):
    pdf = run_dir / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    subprocess.run([PDFTOPPM, "-png", "-r", "50", str(pdf), str(tmp_path / "page")], check=True, timeout=120)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 4
    from PIL import Image

    for p in pages:
        ink, _ = _ink(p)
        assert ink > 0.005, f"{p.name} is blank"
        a = np.asarray(Image.open(p).convert("L"), dtype=float)
        w = a.shape[1]
        # A4 with 13 mm side margins: the outer 4% of the width on each side must stay white (no table or figure
        # runs past the margin).
        edge = max(2, int(0.04 * w))
        assert a[:, -edge:].min() > 200 and a[:, :edge].min() > 200, f"{p.name}: content runs into the margin"


# ------------------------------------------------------------------------------------------------ content checks
def test_report_sections_in_order(run_dir, results):
    html = (run_dir / "report.html").read_text()
    order = ["Verdict on", 'id="answers"', 'id="per-example"', 'id="certificate"', 'id="distance"', 'id="attacks"',
             'id="equivalence"', 'id="tradeoff"',
             'id="latency"', 'id="compliance"']
    pos = [html.index(s) for s in order]
    assert pos == sorted(pos)
    assert "Technical evidence about a machine-unlearning procedure; not legal advice." in html
    for q in results["forget_set"]["requests"]:
        assert q["request_id"] in html and q["hashed_record_ids"][0] in html
    assert results["run"]["config_digest"] in html
    assert results["environment"]["python"] in html
    assert "ROC, log-log axes" not in html                 # figure text is inside images, not the page
    assert html.count("<img ") == 6              # per-example ε, distance, latency, trade-off, ROC, histograms
    for rid in (run_dir / "artefacts" / "forget_ids.txt").read_text().split():
        assert rid not in html, "a raw record id is shown in the report"


def test_report_is_self_contained(run_dir):
    html = (run_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html, re.I)
    assert "@import" not in html and "url(http" not in html
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    assert "<script" not in html


def test_numbers_in_the_report_are_those_of_results(run_dir, results):
    html = (run_dir / "report.html").read_text()
    cert = results["certificate"]
    assert num(cert["sigma"], 5) in html and num(cert["sensitivity"], 5) in html
    for a in results["attacks"]:
        assert f"{a['auc']['auc']:.4f}" in html
    hf = results["methods"]["hfocu"]
    assert num(hf["distance_to_retrain"]) in html


def test_certificate_section_says_when_noise_destroys_utility(run_dir, results, tmp_path):
    r = copy.deepcopy(results)
    hf = r["methods"]["hfocu"]
    hf["accuracy"]["test"], hf["accuracy_released"]["test"] = 0.91, 0.095
    html = _html(r)
    assert "destroys the model&#39;s utility" in html
    assert "9.5%" in html and "91.0%" in html and "privacy-utility" in html
    hf["accuracy_released"]["test"] = 0.905
    html = _html(r)
    assert "destroys" not in html and "costs little utility" in html


def test_everything_shown_is_escaped(run_dir, results, tmp_path):
    evil = "<script>alert('x')</script>"
    r = copy.deepcopy(results)
    r["data"]["dataset"] = evil
    r["model"]["description"] = "<img src=x onerror=alert(1)>"
    r["methods"][evil] = copy.deepcopy(r["methods"]["hfocu"])
    r["methods"][evil]["description"] = evil
    for a in r["attacks"]:
        a["attack"] = f"loss {evil}"
    r["forget_set"]["requests"][0]["request_id"] = evil
    r["forget_set"]["requests"][0]["hashed_record_ids"][0] = evil
    r["verdict"]["reasons"].append(evil)
    next(iter(r["certificate"]["constants"].values()))["how"] = evil
    d = _variant(run_dir, tmp_path, r)
    html = (d / "report.html").read_text()
    assert "<script" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    if CHROMIUM:
        proc = _chromium((d / "report.html").as_uri(), tmp_path / "evil.png", tmp_path / "profile")
        assert _console_lines(proc.stderr) == []


def test_any_number_of_methods_and_attacks(run_dir, results, tmp_path):
    r = copy.deepcopy(results)
    for k, name in enumerate(["cns", "ns", "ij", "finetune", "neggrad", "dpsgd"]):
        m = copy.deepcopy(r["methods"]["hfocu"])
        m.update(description=f"method {name}", certified=name == "cns", distance_to_retrain=0.1 * (k + 1),
                 seconds_per_request=0.01 * (k + 1))
        r["methods"][name] = m
    base = [a for a in results["attacks"]]
    for name in ("LiRA (online)", "MIA-U (direct_diff)", "new attack"):
        r["attacks"] += [{**copy.deepcopy(a), "attack": name} for a in base]
    refused = {**copy.deepcopy(base[0]), "attack": "LiRA (offline)", "refused": "refused: shadows did not fit"}
    for k in ("auc", "tpr_at_fpr"):
        refused.pop(k)
    r["attacks"].append(refused)
    d = _variant(run_dir, tmp_path, r, pdf=True)
    html = (d / "report.html").read_text()
    for name in ("cns", "ns", "ij", "finetune", "neggrad", "dpsgd"):
        assert f"<b>{name}</b>" in html
    for name in ("LiRA (online)", "MIA-U (direct_diff)", "new attack", "LiRA (offline)"):
        assert f"<h3>{name}</h3>" in html
    assert "refused: shadows did not fit" in html
    assert (d / "report.pdf").stat().st_size > 10_000


def test_missing_certificate_when_primary_is_uncertified(run_dir, results, tmp_path):
    r = copy.deepcopy(results)
    r["certificate"] = None
    r["methods"]["hfocu"].update(certified=False, certificate=None, sigma=0.0)
    r["methods"]["hfocu"].pop("accuracy_released")
    r["tradeoff"] = []
    r["empirical_epsilon"] = {"status": "not applicable", "reason": "hfocu is not certified"}
    html = _html(r)
    assert "No certificate" in html and "not a certified" in html
    assert "No privacy-utility sweep" in html


def test_violated_certificate_raises_the_alarm(run_dir, results, tmp_path):
    r = copy.deepcopy(results)
    r["empirical_epsilon"].update(violated=True, message="empirical lower bound 3.2 exceeds certified ε 2")
    r["verdict"]["status"], r["verdict"]["exit_code"] = "fail", 1
    html = _html(r)
    assert 'class="box alarm"' in html and "IMPLEMENTATION FAILURE" in html
    assert html.index('class="box alarm"') < html.index("Verdict on")
    assert 'class="summary fail"' in html
    assert findings(r)[0]["level"] == "alarm"


def test_rerender_reproduces_the_html(run_dir, results):
    again = render_html(results, load_scores(run_dir / "artefacts" / "scores.npz"),
                        load_per_example(run_dir / "artefacts" / "per_example.npz"))
    assert again == (run_dir / "report.html").read_text()


def test_view_of_a_minimal_results_file_does_not_crash():
    v = build_view({"schema_version": "1.0", "verdict": {}, "methods": {}, "attacks": []})
    assert v["status"] == "inconclusive" and v["certificate"] is None


def test_number_formatting():
    assert num(1e-5) == "10⁻⁵" and num(2.5e-7) == "2.5×10⁻⁷" and num(42.7537, 5) == "42.754"
    assert num(None) == "—" and num(float("nan")) == "—" and num(93215.4) == "93215"


def _keys(obj, parent: str = "") -> set[str]:
    """Every field name in a results dict, except the free names under methods / constants / packages."""
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if parent not in ("methods", "constants", "packages"):
                out.add(k)
            out |= _keys(v, k)
    elif isinstance(obj, list):
        for v in obj:
            out |= _keys(v, parent)
    return out


def test_docs_results_md_documents_every_field(results):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text(encoding="utf-8")
    assert f'`"{results["schema_version"]}"`' in doc
    missing = sorted(k for k in _keys(results) if f"`{k}`" not in doc)
    assert not missing, f"results.json fields not documented in docs/results.md: {missing}"
