"""`unlearn-audit report RUN_DIR` on bad input (exit 2, one line, nothing written), and the audit's progress output."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

from unlearn_audit.cli import _Progress, main

GOOD = {"schema_version": "2.0", "verdict": {"status": "pass"}, "methods": {}, "attacks": []}


@pytest.mark.parametrize("content, expected", [
    (None, "no results.json"),
    ("{not json", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    ("[1, 2, 3]", "expected a JSON object"),
    (json.dumps({"schema_version": "2.0"}), "missing key 'verdict'"),
    (json.dumps({**GOOD, "schema_version": "1.0"}), "schema_version 1.0 is not supported"),
    (json.dumps({**GOOD, "methods": [1]}), "'methods' must be a JSON object"),
    (json.dumps({**GOOD, "attacks": {}}), "'attacks' must be a JSON array"),
], ids=["missing", "malformed", "binary", "array", "missing-key", "schema", "methods-type", "attacks-type"])
def test_report_on_bad_results_exits_2_one_line(tmp_path, content, expected):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        p = run / "results.json"
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
    res = CliRunner().invoke(main, ["report", str(run)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.stderr
    assert sorted(x.name for x in run.iterdir()) == ([] if content is None else ["results.json"])


def test_report_on_missing_folder(tmp_path):
    res = CliRunner().invoke(main, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run folder"


def test_report_on_unreadable_scores(tmp_path):
    run = tmp_path / "run"
    (run / "artefacts").mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(GOOD))
    (run / "artefacts" / "scores.npz").write_bytes(b"PK\x03\x04 truncated")
    res = CliRunner().invoke(main, ["report", str(run), "--no-pdf"])
    assert res.exit_code == 2 and "unreadable attack scores" in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (run / "report.html").exists()


def test_report_of_a_minimal_results_file_renders(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(GOOD))
    res = CliRunner().invoke(main, ["report", str(run), "--no-pdf"])
    assert res.exit_code == 0, res.output
    assert "PASS" in (run / "report.html").read_text()


def test_report_help_has_an_example():
    res = CliRunner().invoke(main, ["report", "--help"])
    assert res.exit_code == 0 and "unlearn-audit report reports/example" in res.output


def _console(terminal: bool):
    from rich.console import Console

    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=100), buf


def test_progress_without_a_terminal_prints_one_line_per_finished_step():
    console, buf = _console(False)
    p = _Progress(console)
    with p.bar:
        for step, total in (("loading data", 1), ("training with approximators", 5)):
            for done in range(total + 1):
                p(step, done, total)
        p("training with approximators", 5, 5)          # a repeated final call prints nothing more
    lines = buf.getvalue().splitlines()
    assert [ln.split(" (")[0] for ln in lines] == ["done: loading data", "done: training with approximators"]


def test_progress_on_a_terminal_draws_bars():
    console, buf = _console(True)
    p = _Progress(console)
    with p.bar:
        for done in range(4):
            p("attacks", done, 3)
    out = buf.getvalue()
    assert "attacks" in out and "3/3" in out and "━" in out
