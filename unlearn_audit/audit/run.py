"""Write an audit run folder: config.toml, results.json, report.html, report.pdf, artefacts/.

``--out`` is checked before any work, everything is written into a private partial folder beside it and moved into
place at the end (:class:`unlearn_audit.outputs.OutputFolder`): an interrupted or failed run leaves nothing
half-written, and ``--force`` replaces only a previous run folder, never a file the run did not write.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from unlearn_audit.audit.methods import resolve_methods
from unlearn_audit.audit.pipeline import Progress, run_audit
from unlearn_audit.common import to_jsonable
from unlearn_audit.config import AuditConfig
from unlearn_audit.deletion import save_trained_run
from unlearn_audit.outputs import OutputDirError, OutputFolder, check_output_path
from unlearn_audit.pseudonyms import KEY_FILE, write_key
from unlearn_audit.report import write_report
from unlearn_audit.schema import AuditResults

__all__ = ["OutputDirError", "RUN_FILES", "check_out_dir", "default_run_dir", "execute_audit", "preflight"]

# What a run folder holds: `--force` replaces a previous run folder only if it holds nothing else (a deletion ledger
# or releases written by `forget` are never deleted).
RUN_FILES = frozenset({"config.toml", "results.json", "report.html", "report.pdf", "artefacts", "trained_run",
                       KEY_FILE})


def default_run_dir(base: Path = Path("reports")) -> Path:
    return base / datetime.now(timezone.utc).strftime("run-%Y%m%d-%H%M%S")


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse, before any work, an ``--out`` the run could not or must not write (:func:`check_output_path`)."""
    check_output_path(Path(out_dir), force=force, allowed=RUN_FILES)


def preflight(cfg: AuditConfig) -> None:
    """Import and check the user code and files the config names (unlearning methods, external weights, the model
    factory), before anything is written or trained: PluginError / MethodError / ModelError naming the plugin. The
    model factory's module itself is checked when the data's shape is known (first thing in the audit)."""
    from unlearn_audit.models import ModelError
    from unlearn_audit.plugins import load_plugin

    resolve_methods(cfg)
    if cfg.model.factory is not None:
        fn, info = load_plugin(cfg.model.factory, cfg.plugin_path, what="model factory")
        if not callable(fn):
            raise ModelError(f"model factory '{cfg.model.factory}': '{info.attribute}' is a {type(fn).__name__}, "
                             "not a function")


def execute_audit(cfg: AuditConfig, out_dir: Path, *, force: bool = False, pdf: bool = True,
                  progress: Progress | None = None) -> dict:
    """Run the audit and write its folder; returns the results dict."""
    out_dir = Path(out_dir)
    with OutputFolder(out_dir, force=force, allowed=RUN_FILES) as folder:
        results, artefacts = run_audit(cfg, progress)
        tmp = folder.path
        scores = artefacts.scores
        # the schema object: an unknown or private top-level key, or a malformed verdict, stops here
        results = AuditResults.model_validate(to_jsonable(results)).model_dump(mode="json", exclude_unset=True)
        (tmp / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
        (tmp / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        art = tmp / "artefacts"
        art.mkdir()
        for name, w in artefacts.weights.items():
            np.save(art / f"weights_{name}.npy", w, allow_pickle=False)
        score_arrays: dict[str, Any] = {f"{k}/members": m for k, (m, _) in scores.items()}
        score_arrays.update({f"{k}/nonmembers": n for k, (_, n) in scores.items()})
        np.savez(art / "scores.npz", allow_pickle=False, **score_arrays)
        per_record: dict[str, Any] = dict(artefacts.per_example)
        np.savez(art / "per_example.npz", allow_pickle=False, **per_record)
        (art / "forget_ids.txt").write_text("\n".join(artefacts.forget_ids) + "\n", encoding="utf-8")
        if artefacts.context is not None:       # the key of the record pseudonyms in results.json (never shown)
            write_key(tmp, artefacts.context.record_id_key)
        # The trained model and its approximators, so `unlearn-audit forget RUN_DIR` can serve deletion requests.
        if artefacts.context is not None and artefacts.context.unlearner.mode != "replay":
            save_trained_run(tmp / "trained_run", artefacts.context.unlearner,
                             data_config=cfg.model_dump(mode="json"))
        if progress:
            progress("writing report", 0, 1)
        write_report(tmp, results, pdf=pdf)
        if progress:
            progress("writing report", 1, 1)
        folder.commit()
    return results
