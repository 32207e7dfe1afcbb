"""Write an audit run folder: config.toml, results.json, report.html, report.pdf, artefacts/.

Everything is written into a sibling temporary folder first and moved into place at the end, so an interrupted or
failed run leaves nothing half-written at ``out_dir``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from unlearn_audit.audit.pipeline import Progress, run_audit
from unlearn_audit.common import to_jsonable
from unlearn_audit.config import AuditConfig
from unlearn_audit.deletion import save_trained_run
from unlearn_audit.report import write_report


class OutputDirError(ValueError):
    """The output folder exists and is not empty (and ``--force`` was not given), or cannot be created."""


def default_run_dir(base: Path = Path("reports")) -> Path:
    return base / datetime.now(timezone.utc).strftime("run-%Y%m%d-%H%M%S")


def check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirError(f"--out {out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise OutputDirError(f"--out {out_dir}: folder is not empty (use --force to replace it)")


def execute_audit(cfg: AuditConfig, out_dir: Path, *, force: bool = False, pdf: bool = True,
                  progress: Progress | None = None) -> dict:
    """Run the audit and write its folder; returns the results dict."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, force)
    results, artefacts = run_audit(cfg, progress)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        scores = results.pop("_plot_data")
        results = to_jsonable(results)
        (tmp / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        art = tmp / "artefacts"
        art.mkdir()
        for name, w in artefacts.weights.items():
            np.save(art / f"weights_{name}.npy", w, allow_pickle=False)
        np.savez(art / "scores.npz", **{f"{k}/members": m for k, (m, _) in scores.items()},
                 **{f"{k}/nonmembers": n for k, (_, n) in scores.items()})
        (art / "forget_ids.txt").write_text("\n".join(artefacts.forget_ids) + "\n", encoding="utf-8")
        # The trained model and its approximators, so `unlearn-audit forget RUN_DIR` can serve deletion requests.
        if artefacts.context is not None and artefacts.context.unlearner.mode != "replay":
            save_trained_run(tmp / "trained_run", artefacts.context.unlearner)
        if progress:
            progress("writing report", 0, 1)
        write_report(tmp, results, pdf=pdf)
        if progress:
            progress("writing report", 1, 1)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return results
