"""The bad-input table (issue 17): the command line used as a careless or hostile user would. Every case must meet the
promise: exit code 2, exactly one line on stderr naming the problem, and nothing written, changed or deleted (every
file under the working folder, the run folder and the shadow cache is hashed before and after).

Each row: an id, a setup (files it needs, in the test's own working folder ``tmp_path``), the command line, and a
piece of the one line that must name the problem. Cases that need a trained run get a copy of a small real one
(digits, softmax regression). The run happens in-process (click's CliRunner) with the working folder and the cache
inside ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from unlearn_audit.cli import main

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------------------------
# the trained run every forget/report case starts from
@pytest.fixture(scope="module")
def template(tmp_path_factory):
    from unlearn_audit.data import load_dataset, prepare, split_dataset
    from unlearn_audit.deletion import save_trained_run
    from unlearn_audit.hfocu import HFOCUUnlearner
    from unlearn_audit.models import build_model
    from unlearn_audit.training import SGDConfig

    ds = load_dataset("digits")
    sp = prepare(split_dataset(ds, train_fraction=0.6, test_fraction=0.2, population_fraction=0.2, seed=1,
                               max_train=120), standardize=True, unit_norm=True)
    tr = sp.train
    x, y = torch.as_tensor(tr.x), torch.as_tensor(tr.y, dtype=torch.int64)
    model = build_model("softmax", tr.feature_shape, ds.n_classes, seed=1)
    u = HFOCUUnlearner(model, SGDConfig(epochs=2, batch_size=32, lr=0.5, lam=0.01, seed=1)).fit(x, y, tr.ids)
    out = tmp_path_factory.mktemp("template") / "run"
    save_trained_run(out / "trained_run", u)
    (out / "results.json").write_text(json.dumps({"schema_version": "2.0", "verdict": {"status": "pass"},
                                                  "methods": {}, "attacks": []}))
    return out, [str(r) for r in tr.ids]


# ---------------------------------------------------------------------------------------------------------------------
# one row of the table
@dataclass
class Case:
    id: str
    args: list[str]
    names: str                                      # a piece of the one error line that names the problem
    files: dict[str, bytes | str] = field(default_factory=dict)   # written in the working folder before the run
    setup: Callable[[Path, list[str]], None] | None = None          # extra setup: (working folder, record ids)
    needs_run: bool = False                         # copy the trained run to ./run first
    code: int = 2
    skip_as_root: bool = False
    cwd: str = ""                                   # run in this subfolder of the working folder


def toml(text: str) -> dict[str, str]:
    return {"c.toml": text}


def audit(*extra: str) -> list[str]:
    return ["audit", "--config", "c.toml", "--out", "out", "--quiet", "--no-pdf", *extra]


def _corrupt_ledger_page(wd: Path, ids: list[str]) -> None:
    from unlearn_audit.deletion import forget_from_file

    (wd / "first.txt").write_text(ids[0] + "\n")
    forget_from_file(wd / "run", wd / "first.txt", epsilon=1.0, delta=1e-5)
    led = wd / "run" / "ledger.sqlite"
    con = sqlite3.connect(led)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(led.read_bytes())
    page = 4096
    for i in range(page, min(len(data), 2 * page)):        # overwrite the second page (the requests table)
        data[i] = 0xA5
    led.write_bytes(bytes(data))
    (wd / "req.txt").write_text(ids[1] + "\n")


def _two_requests_then(tamper: Callable[[Path, list[str]], None]):
    """Two real deletion requests through the command's library side, then ``tamper(wd, ids)``; the case then asks
    for a third deletion (``req.txt``)."""
    def setup(wd: Path, ids: list[str]) -> None:
        from unlearn_audit.deletion import forget_from_file

        for k in (0, 1):
            (wd / f"r{k}.txt").write_text(ids[k] + "\n")
            forget_from_file(wd / "run", wd / f"r{k}.txt", epsilon=1.0, delta=1e-5)
        (wd / "req.txt").write_text(ids[2] + "\n")
        tamper(wd, ids)
    return setup


def _sql(*statements: str):
    def tamper(wd: Path, ids: list[str]) -> None:
        con = sqlite3.connect(wd / "run" / "ledger.sqlite")
        con.execute("PRAGMA foreign_keys=ON")          # a careful forger deletes the record claims too
        with con:
            for st in statements:
                con.execute(st)
        con.close()
    return tamper


def _truncate(wd: Path, ids: list[str]) -> None:
    (wd / "run" / "ledger.sqlite").write_bytes(b"")


def _delete_ledger_and_anchor(wd: Path, ids: list[str]) -> None:
    (wd / "run" / "ledger.sqlite").unlink()
    (wd / "run" / "trained_run" / "ledger_head.json").unlink()


def _restore_older_copy(wd: Path, ids: list[str]) -> None:
    """The ledger as it was after the first request (a backup restored over the current one)."""
    import shutil as _sh

    _sh.copy(wd / "older.sqlite", wd / "run" / "ledger.sqlite")


def _two_requests_with_backup_between(wd: Path, ids: list[str]) -> None:
    from unlearn_audit.deletion import forget_from_file

    (wd / "r0.txt").write_text(ids[0] + "\n")
    forget_from_file(wd / "run", wd / "r0.txt", epsilon=1.0, delta=1e-5)
    import shutil as _sh

    _sh.copy(wd / "run" / "ledger.sqlite", wd / "older.sqlite")
    (wd / "r1.txt").write_text(ids[1] + "\n")
    forget_from_file(wd / "run", wd / "r1.txt", epsilon=1.0, delta=1e-5)
    (wd / "req.txt").write_text(ids[2] + "\n")
    _restore_older_copy(wd, ids)


def _shorten_and_reanchor(wd: Path, ids: list[str]) -> None:
    """Delete the last request and rewrite the anchor to match: only the releases still tell."""
    _sql("DELETE FROM requests WHERE applied_seq = 2")(wd, ids)
    anchor = wd / "run" / "trained_run" / "ledger_head.json"
    a = json.loads(anchor.read_text())
    con = sqlite3.connect(wd / "run" / "ledger.sqlite")
    a["n_applied"], a["head"] = 1, con.execute("SELECT chain FROM requests WHERE applied_seq = 1").fetchone()[0]
    con.close()
    anchor.write_text(json.dumps(a))


def _ledger_file(content: bytes):
    def setup(wd: Path, ids: list[str]) -> None:
        (wd / "run" / "ledger.sqlite").write_bytes(content)
        (wd / "req.txt").write_text(ids[0] + "\n")
    return setup


def _forget_once_then(second: Callable[[Path, list[str]], None]):
    def setup(wd: Path, ids: list[str]) -> None:
        from unlearn_audit.deletion import forget_from_file

        (wd / "first.txt").write_text(ids[0] + "\n")
        forget_from_file(wd / "run", wd / "first.txt", epsilon=1.0, delta=1e-5)
        second(wd, ids)
    return setup


def _req(text_of_ids: Callable[[list[str]], str], name: str = "req.txt"):
    def setup(wd: Path, ids: list[str]) -> None:
        (wd / name).write_text(text_of_ids(ids), encoding="utf-8")
    return setup


def _tamper(rel: str):
    def setup(wd: Path, ids: list[str]) -> None:
        p = wd / "run" / rel
        data = bytearray(p.read_bytes())
        data[-1] ^= 0xFF
        p.write_bytes(bytes(data))
        (wd / "req.txt").write_text(ids[0] + "\n")
    return setup


def _run_folder_with(name: str):
    def setup(wd: Path, ids: list[str]) -> None:
        out = wd / "out"
        out.mkdir()
        (out / ".unlearn-audit-run").write_text("run\n")
        (out / "results.json").write_text("{}")
        (out / name).write_bytes(b"precious")
    return setup


def _nested(depth: int) -> str:
    return '{"schema_version": "2.0", "verdict": {"status": "pass"}, "methods": {}, "attacks": [], "x": ' \
        + "[" * depth + "]" * depth + "}"


def _scores(content: bytes):
    def setup(wd: Path, ids: list[str]) -> None:
        (wd / "run" / "artefacts").mkdir(exist_ok=True)
        (wd / "run" / "artefacts" / "scores.npz").write_bytes(content)
    return setup


def _csv(rows: list[str], header: str = "a,b,label") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def _npz_bytes(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _parquet_bytes(**columns) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _image_folder(root: Path, sizes: dict[str, tuple[int, int]], mode: str = "L") -> None:
    from PIL import Image

    for rel, size in sizes.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new(mode, size).save(root / rel)


IMG_CFG = '[data]\ndataset = "image_folder"\ndata_dir = "imgs"\n'
PQ_CFG = '[data]\ndataset = "parquet"\npath = "d.parquet"\n'


SMALL = 'seed = 1\n[training]\nepochs = 2\n'

# -- plugins (issue 18): user code in ./plug, one module per case (a module name is imported once per process) ------
_PLUGIN_HEAD = ("import torch\nfrom torch import nn\n"
                "from unlearn_audit.audit.protocol import UnlearningMethod, UnlearningResult\n")


def plugin(module: str, body: str, *, method: str | None = None, factory: str | None = None,
           extra: str = "") -> dict[str, str]:
    """A config naming ``module``'s method and/or factory from ./plug, and the module's file."""
    cfg = 'seed = 1\nplugin_path = ["plug"]\n[training]\nepochs = 2\n[audit]\npairs = 8\nattacks = ["loss"]\n'
    if factory:
        cfg += f'[model]\nfactory = "{module}:{factory}"\n'
    if method:
        cfg += f'[unlearning]\nmode = "candidates"\nmethods = ["{module}:{method}"]\n'
    return {"c.toml": cfg + extra, f"plug/{module}.py": _PLUGIN_HEAD + body}


def _method(body: str) -> str:
    return f"class M(UnlearningMethod):\n    def unlearn(self, task):\n        {body}\n"


def _external(weights) -> Callable[[Path, list[str]], None]:
    """An unlearned-weights file (or raw bytes) and a forget file of two training ids of the SMALL config."""
    def setup(wd: Path, ids: list[str]) -> None:
        (wd / "forget.txt").write_text(_train_ids_of_small())
        if isinstance(weights, bytes):
            (wd / "w.npy").write_bytes(weights)
        else:
            np.save(wd / "w.npy", weights)
    return setup


def _train_ids_of_small() -> str:
    """Two training record ids of the SMALL config's split (seed 1)."""
    from unlearn_audit.config import config_from_dict
    from unlearn_audit.inputs import build_inputs

    ids = build_inputs(config_from_dict({"seed": 1})).ids
    return f"{ids[0]}\n{ids[1]}\n"


EXT_CFG = SMALL + '[unlearning]\nforget_file = "forget.txt"\nmode = "candidates"\n[audit]\npairs = 8\n'
CSV_CFG = '[data]\ndataset = "csv"\npath = "d.csv"\n'
NPZ_CFG = '[data]\ndataset = "npz"\npath = "d.npz"\n'

CASES = [
    # -- config -------------------------------------------------------------------------------------------------------
    Case("seed-1e23", audit(), "seed", toml("seed = 100000000000000000000000\n")),
    Case("lr-1e308", audit(), "training.lr", toml("[training]\nlr = 1e308\n")),
    Case("lam-1e308", audit(), "training.lam", toml("[training]\nlam = 1e308\n")),
    Case("hidden-1e12", audit(), "model.hidden", toml('[model]\nkind = "mlp"\nhidden = 1000000000000\n')),
    Case("epochs-2^63-1", audit(), "training.epochs", toml("[training]\nepochs = 9223372036854775807\n")),
    Case("batch-size-0", audit(), "training.batch_size", toml("[training]\nbatch_size = 0\n")),
    Case("batch-size-huge", audit(), "training.batch_size", toml("[training]\nbatch_size = 9223372036854775807\n")),
    Case("clip-norm-1e308", audit(), "training.clip_norm",
         toml('[training]\nclip = "per_sample"\nclip_norm = 1e308\n')),
    Case("unknown-key", audit(), "training.epoch: unknown key", toml("[training]\nepoch = 3\n")),
    Case("malformed-toml", audit(), "malformed TOML", toml("[training\nepochs = 3\n")),
    Case("toml-nan", audit(), "training.lr", toml("[training]\nlr = nan\n")),
    Case("string-for-int", audit(), "training.epochs", toml('[training]\nepochs = "30"\n')),
    Case("delta-1", audit(), "privacy.delta", toml("[privacy]\ndelta = 1.0\n")),
    Case("epsilon-0", audit(), "privacy.epsilon", toml("[privacy]\nepsilon = 0.0\n")),
    Case("epsilon-1e308", audit(), "privacy.epsilon", toml("[privacy]\nepsilon = 1e308\n")),
    Case("classic-eps-2", audit(), "privacy.mechanism", toml('[privacy]\nmechanism = "classic"\nepsilon = 2.0\n')),
    Case("fractions-over-1", audit(), "exceeds 1", toml("[data]\ntrain_fraction = 0.6\npopulation_fraction = 0.6\n")),
    Case("toml-deeply-nested", audit(), "nested too deeply", toml("a = " + "[" * 100_000 + "]" * 100_000 + "\n")),
    Case("config-missing", ["audit", "--config", "nope.toml", "--out", "out"], "config file not found"),
    Case("config-not-utf8", audit(), "not a UTF-8", {"c.toml": b"seed = 1\n# \xff\xfe\n"}),
    Case("sweep-negative", audit(), "audit.sweep_sigmas", toml("[audit]\nsweep_sigmas = [-1.0]\n")),
    Case("sweep-1e308", audit(), "audit.sweep_sigmas", toml("[audit]\nsweep_sigmas = [1e308]\n")),
    Case("lira-shadows-1e9", audit(), "audit.lira_shadows", toml("[audit]\nlira_shadows = 1000000000\n")),
    Case("methods-empty", audit(), "unlearning.methods", toml("[unlearning]\nmethods = []\n")),
    Case("dataset-unknown", audit(), "data.dataset", toml('[data]\ndataset = "imagenet"\n')),
    Case("csv-path-missing", audit(), "data.path", toml(CSV_CFG)),
    Case("forget-file-missing", audit(), "unlearning.forget_file",
         toml('[unlearning]\nforget_file = "nope.txt"\n')),
    Case("max-train-1e12", audit(), "data.max_train", toml("[data]\nmax_train = 1000000000000\n")),
    Case("cns-depth-huge", audit(), "baselines.cns_depth", toml("[baselines]\ncns_depth = 9223372036854775807\n")),
    # -- data ---------------------------------------------------------------------------------------------------------
    Case("csv-5-records", audit(), "too few",
         {**toml(CSV_CFG), "d.csv": _csv(["1,2,0", "2,3,1", "3,4,0", "4,5,1", "5,6,0"])}),
    Case("csv-non-numeric", audit(), "non-numeric", {**toml(CSV_CFG), "d.csv": _csv(["1,x,0", "2,3,1"])}),
    Case("csv-nan", audit(), "non-finite", {**toml(CSV_CFG), "d.csv": _csv(["1,nan,0", "2,3,1"])}),
    Case("csv-duplicate-id", audit(), "duplicate record id",
         {**toml(CSV_CFG), "d.csv": _csv(["r1,1,2,0", "r1,2,3,1"], "id,a,b,label")}),
    Case("csv-id-with-newline", audit(), "line break",
         {**toml(CSV_CFG), "d.csv": _csv(['"r\n1",1,2,0', "r2,2,3,1"], "id,a,b,label")}),
    Case("csv-id-with-control", audit(), "control character",
         {**toml(CSV_CFG), "d.csv": _csv(["r\x071,1,2,0", "r2,2,3,1"], "id,a,b,label")}),
    Case("csv-empty", audit(), "empty CSV", {**toml(CSV_CFG), "d.csv": b""}),
    Case("csv-ragged", audit(), "fields", {**toml(CSV_CFG), "d.csv": _csv(["1,2,0", "2,1"])}),
    Case("npz-garbage", audit(), "not an .npz file", {**toml(NPZ_CFG), "d.npz": os.urandom(256)}),
    Case("npz-object-array", audit(), "object", {**toml(NPZ_CFG), "d.npz": _npz_bytes(
        x=np.zeros((4, 2)), y=np.array([0, 1, 0, 1]), ids=np.array(["a", 1, None, 2.0], dtype=object))}),
    Case("npz-missing-y", audit(), "missing array", {**toml(NPZ_CFG), "d.npz": _npz_bytes(x=np.zeros((4, 2)))}),
    Case("npz-inf", audit(), "non-finite", {**toml(NPZ_CFG), "d.npz": _npz_bytes(
        x=np.array([[1.0, np.inf], [0, 1]]), y=np.array([0, 1]))}),
    Case("parquet-garbage", audit(), "not a readable Parquet file",
         {**toml('[data]\ndataset = "parquet"\npath = "d.parquet"\n'), "d.parquet": b"PAR1" + os.urandom(64)}),
    Case("parquet-string-feature", audit(), "feature column 'a' has type string",
         {**toml('[data]\ndataset = "parquet"\npath = "d.parquet"\n'), "d.parquet": _parquet_bytes(
             id=["r1", "r2"], a=["x", "y"], label=[0, 1])}),
    Case("image-folder-mixed-sizes", audit(), "all images must have the same size",
         toml('[data]\ndataset = "image_folder"\ndata_dir = "imgs"\n'), setup=lambda wd, ids: _image_folder(
             wd / "imgs", {"a/1.png": (4, 4), "a/2.png": (4, 4), "b/1.png": (5, 4)})),
    Case("image-folder-not-an-image", audit(), "not a readable image",
         {**toml('[data]\ndataset = "image_folder"\ndata_dir = "imgs"\n'), "imgs/a/x.png": b"not a png",
          "imgs/b/y.png": b"nor this"}),
    Case("image-folder-empty-class", audit(), "class folder 'c' holds no images", toml(IMG_CFG),
         setup=lambda wd, ids: (_image_folder(wd / "imgs", {"a/1.png": (4, 4), "b/1.png": (4, 4)}),
                                (wd / "imgs" / "c").mkdir())),
    Case("image-folder-one-class", audit(), "every record has the same label ('a'); a classifier needs records of "
         "at least 2 classes", toml(IMG_CFG),          # exit 2 only after training before, naming no dataset
         setup=lambda wd, ids: _image_folder(wd / "imgs", {"a/1.png": (4, 4), "a/2.png": (4, 4)})),
    Case("image-folder-32-bit-float", audit(), "a 32-bit float image (mode F), whose pixel range is unknown",
         toml(IMG_CFG), setup=lambda wd, ids: _image_folder(wd / "imgs", {"a/1.tif": (4, 4), "b/1.tif": (4, 4)},
                                                            mode="F")),     # read as 3 channels of 0 before
    Case("image-folder-broken-link", audit(), "b/x.png: a broken link", toml(IMG_CFG),
         setup=lambda wd, ids: (_image_folder(wd / "imgs", {"a/1.png": (4, 4), "b/1.png": (4, 4)}),
                                (wd / "imgs" / "b" / "x.png").symlink_to(wd / "nowhere.png"))),
    Case("csv-one-label", audit(), "every record has the same label ('x')",
         {**toml(CSV_CFG), "d.csv": _csv(["1,2,x", "2,3,x"])}),
    Case("parquet-label-nan", audit(), "record 'r2' has a missing label (nan)",   # was a class named 'nan'
         {**toml(PQ_CFG), "d.parquet": _parquet_bytes(id=["r1", "r2"], a=[1.0, 2.0], label=[0.0, float("nan")])}),
    Case("parquet-label-huge", audit(), "has label 1000000000: integer labels are class indices",   # was OOM-killed
         {**toml(PQ_CFG), "d.parquet": _parquet_bytes(id=["r1", "r2"], a=[1.0, 2.0], label=[0, 10**9])}),
    Case("parquet-label-list", audit(), "the label column 'label' has type list<element: int64>",
         {**toml(PQ_CFG), "d.parquet": _parquet_bytes(id=["r1", "r2"], a=[1.0, 2.0], label=[[0], [1]])}),
    Case("parquet-id-nan", audit(), "the id column 'id' is empty at row 1",       # was the record id 'nan'
         {**toml(PQ_CFG), "d.parquet": _parquet_bytes(id=[1.0, float("nan")], a=[1.0, 2.0], label=[0, 1])}),
    Case("parquet-id-not-utf8", audit(), "the id at row 0 of column 'id' is not UTF-8 text",
         {**toml(PQ_CFG), "d.parquet": _parquet_bytes(id=[b"\xff", b"\xfe"], a=[1.0, 2.0], label=[0, 1])}),
    Case("plugin-module-missing", audit(), "unlearning method 'no_such_plugin_mod:M': cannot import module",
         plugin("other_mod_h18", "", method="M") | toml(
             'plugin_path = ["plug"]\n[unlearning]\nmethods = ["no_such_plugin_mod:M"]\n')),
    Case("plugin-import-raises", audit(), "importing module 'plug_raises_on_import' raised RuntimeError: boom",
         plugin("plug_raises_on_import", "raise RuntimeError('boom')\n", method="M")),
    Case("plugin-no-attribute", audit(), "module 'plug_no_attr' has no attribute 'M'",
         plugin("plug_no_attr", "X = 1\n", method="M")),
    Case("plugin-not-a-method", audit(), "is not a subclass of unlearn_audit.audit.protocol.UnlearningMethod",
         plugin("plug_not_method", "class M:\n    pass\n", method="M")),
    Case("plugin-method-raises", audit(), "unlearning method 'plug_method_raises:M': unlearn() raised ValueError: nope",
         plugin("plug_method_raises", _method("raise ValueError('nope')"), method="M")),
    Case("plugin-method-wrong-shape", audit(), "unlearning method 'plug_wrong_shape:M': the unlearned weights have "
         "shape (3,), expected (650,)", plugin("plug_wrong_shape", _method("return torch.zeros(3)"), method="M")),
    Case("plugin-method-nan", audit(), "unlearning method 'plug_nan:M': the unlearned weights contain NaN",
         plugin("plug_nan", _method("return task.weights * float('nan')"), method="M")),
    Case("plugin-method-returns-str", audit(), "returned str as the unlearned weights",
         plugin("plug_str", _method("return 'weights'"), method="M")),
    Case("plugin-certified-without-certificate", audit(), "certificate needs the number(s) epsilon, delta",
         plugin("plug_cert", _method("return UnlearningResult(weights=task.weights, released=task.weights, "
                                     "sigma=1.0, certified=True)"), method="M")),
    Case("plugin-method-sys-exit-0", audit(), "unlearning method 'plug_exit0:M': unlearn() raised SystemExit: 0",
         plugin("plug_exit0", _method("import sys; sys.exit(0)"), method="M")),     # exited 0 ("pass") before
    Case("plugin-method-changes-x", audit(), "unlearn() changed the task's training records, model, schedule or "
         "record ids in place",
         plugin("plug_x_inplace", _method("task.x.mul_(0.0); return task.weights.clone()"), method="M")),
    Case("plugin-method-writes-schedule", audit(), "unlearn() changed the task's training records, model, schedule",
         plugin("plug_sched", _method("task.schedule.batches[0][:] = 0; return task.weights.clone()"), method="M")),
    Case("plugin-method-torch-bool", audit(), "the unlearned weights have dtype bool, expected a float vector",
         plugin("plug_bool", _method("return task.weights > 0"), method="M")),
    Case("plugin-certificate-str", audit(), "a certified result's certificate must be a dict, got str",
         plugin("plug_cert_str", _method("return UnlearningResult(weights=task.weights, released=task.weights, "
                                         "sigma=1.0, certified=True, certificate='eps=1')"), method="M")),
    Case("plugin-certificate-other-sigma", audit(), "the certificate's sigma (9.0) is not the release's sigma (1.0)",
         plugin("plug_cert_sigma", _method(
             "return UnlearningResult(weights=task.weights, released=task.weights, sigma=1.0, certified=True, "
             "certificate={'epsilon': 1.0, 'delta': 1e-5, 'sigma': 9.0, 'sensitivity': 0.1})"), method="M")),
    Case("plugin-certificate-other-epsilon", audit(), "the certificate is for epsilon = 5, delta = 1e-05, weaker than "
         "the audit judges releases at (privacy.epsilon = 1", plugin("plug_cert_eps", _method(
             "return UnlearningResult(weights=task.weights, released=task.weights, sigma=1.0, certified=True, "
             "certificate={'epsilon': 5.0, 'delta': 1e-5, 'sigma': 1.0, 'sensitivity': 0.1})"), method="M")),
    Case("plugin-extra-not-json", audit(), "its extra is not JSON-ready (TypeError: cannot convert Tensor",
         plugin("plug_extra", _method("return UnlearningResult(weights=task.weights, extra={'t': task.weights})"),
                method="M")),
    Case("plugin-request-indices", audit(), "request 0: indices must be a 1-D integer array of positions",
         plugin("plug_req", _method("from unlearn_audit.audit.protocol import RequestTiming; return UnlearningResult("
                                    "weights=task.weights, requests=[RequestTiming(torch.tensor([10**6]).numpy(), "
                                    "0.1)])"), method="M")),
    Case("plugin-paired-wrong-shape", audit(), "paired() returned shape (3,) float32; expected a float tensor of "
         "shape (8, 650)", plugin("plug_paired", _method("return task.weights")
                                  + "    def paired(self, run):\n        return torch.zeros(3)\n", method="M")),
    Case("plugin-diagnostics-raises", audit(), "diagnostics() raised RuntimeError: diag", plugin(
        "plug_diag", _method("return task.weights") + "    def diagnostics(self, res, task, w):\n"
        "        raise RuntimeError('diag')\n", method="M")),
    Case("plugin-path-missing", audit("--plugin-path", "nope"), "plugin_path: folder not found: nope",
         toml('[unlearning]\nmethods = ["some_mod_h18:M"]\n')),
    Case("factory-batchnorm-training", audit(), "model factory 'plug_bn:net': layer '2' (BatchNorm1d) is BatchNorm "
         "in training mode", plugin("plug_bn", "def net(shape, k):\n    return nn.Sequential(nn.Flatten(), "
                                    "nn.Linear(shape[0], 8), nn.BatchNorm1d(8), nn.Linear(8, k))\n", factory="net")),
    Case("factory-mixes-records", audit(), "a record's output depends on the other records of its batch",
         plugin("plug_mix", "class C(nn.Module):\n    def forward(self, x):\n        return x - x.mean(0)\n"
                "def net(shape, k):\n    return nn.Sequential(C(), nn.Linear(shape[0], k))\n", factory="net")),
    Case("factory-dropout", audit(), "is dropout (p=0.5)", plugin(
        "plug_drop", "def net(shape, k):\n    return nn.Sequential(nn.Dropout(0.5), nn.Linear(shape[0], k))\n",
        factory="net")),
    Case("factory-raises", audit(), "model factory 'plug_factory_raises:net': raised RuntimeError: no GPU",
         plugin("plug_factory_raises", "def net(shape, k):\n    raise RuntimeError('no GPU')\n", factory="net")),
    Case("factory-wrong-shape", audit(), "expected logits of shape (4, 10)", plugin(
        "plug_factory_shape", "def net(shape, k):\n    return nn.Linear(shape[0], k + 1)\n", factory="net")),
    Case("factory-sys-exit", audit(), "model factory 'plug_factory_exit:net': raised SystemExit: 3",
         plugin("plug_factory_exit", "def net(shape, k):\n    raise SystemExit(3)\n", factory="net")),   # exit 3 before
    Case("factory-complex-parameter", audit(), "parameter 'w' has dtype complex64: parameters must be real floating",
         plugin("plug_complex", "class C(nn.Module):\n    def __init__(self, d, k):\n        super().__init__()\n"
                "        self.w = nn.Parameter(torch.zeros(d, k, dtype=torch.complex64))\n"
                "    def forward(self, x):\n        return (x.to(self.w.dtype) @ self.w).real\n"
                "def net(shape, k):\n    return C(shape[0], k)\n", factory="net")),
    Case("factory-frozen-parameter", audit(), "parameter '0.weight' is frozen (requires_grad = False)",
         plugin("plug_frozen", "def net(shape, k):\n    m = nn.Sequential(nn.Linear(shape[0], 8), nn.Tanh(), "
                "nn.Linear(8, k))\n    m[0].weight.requires_grad_(False)\n    return m\n", factory="net")),
    Case("factory-huge-init-diverges", audit(), "training diverged: the weights of custom model became NaN or inf",
         plugin("plug_huge", "def net(shape, k):\n    m = nn.Linear(shape[0], k)\n    nn.init.constant_(m.weight, "
                "1e30)\n    return m\n", factory="net")),     # was 'G must be finite and >= 0 at every step'
    Case("lr-1000-diverges", audit(), "training diverged: the weights of softmax model became NaN or inf (lr 1000)",
         toml("[training]\nepochs = 2\nlr = 1000.0\n")),   # was 'measured_max_weight_norm must be a finite number'
    Case("factory-not-a-module", audit(), "returned a int, not a torch.nn.Module",
         plugin("plug_factory_int", "def net(shape, k):\n    return 3\n", factory="net")),
    Case("factory-bad-spec", audit(), "model.factory: expected 'package.module:function'",
         toml('[model]\nfactory = "not a spec"\n')),
    Case("factory-with-other-kind", audit(), "model.factory: set, but kind = 'mlp'",
         toml('[model]\nkind = "mlp"\nfactory = "a.b:c"\n')),
    Case("method-unknown-name", audit(), "unlearning.methods.0: unknown method 'newton'",
         toml('[unlearning]\nmethods = ["newton"]\n')),
    Case("external-needs-forget-file", audit("--unlearned-weights", "w.npy"), "unlearning.unlearned_weights: needs "
         "forget_file", {**toml(SMALL), "w.npy": b"x"}),
    Case("external-missing", audit("--unlearned-weights", "nope.npy"), "unlearned_weights: file not found",
         toml(EXT_CFG), setup=_external(np.zeros(650, np.float32))),
    Case("external-garbage", audit("--unlearned-weights", "w.npy"), "not an .npy file (no NumPy header)",
         toml(EXT_CFG), setup=_external(b"\x00" + os.urandom(200))),
    Case("external-npz", audit("--unlearned-weights", "w.npy"), "not an .npy file (no NumPy header)",
         toml(EXT_CFG), setup=_external(_npz_bytes(w=np.zeros(650, np.float32)))),
    Case("external-truncated", audit("--unlearned-weights", "w.npy"), "not a readable .npy array",
         toml(EXT_CFG), setup=_external(_npy_bytes(np.zeros(650, np.float32))[:300])),
    Case("external-2d", audit("--unlearned-weights", "w.npy"), "expected a 1-D float array",
         toml(EXT_CFG), setup=_external(np.zeros((10, 65), np.float32))),
    Case("external-wrong-length", audit("--unlearned-weights", "w.npy"), "the unlearned weights have shape (649,), "
         "expected (650,)", toml(EXT_CFG), setup=_external(np.zeros(649, np.float32))),
    Case("external-nan", audit("--unlearned-weights", "w.npy"), "the unlearned weights contain NaN",
         toml(EXT_CFG), setup=_external(np.full(650, np.nan, np.float32))),
    Case("forget-file-unknown-id", audit(), "not in the training set",
         {**toml('[unlearning]\nforget_file = "f.txt"\n'), "f.txt": "digits:0\nno-such-record\n"}),
    # -- --out ----------------------------------------------------------------------------------------------------
    Case("out-under-a-file", ["audit", "--config", "c.toml", "--out", "afile/sub", "--no-pdf"], "is a file",
         {**toml(SMALL), "afile": "not a folder"}),
    Case("out-is-a-file", ["audit", "--config", "c.toml", "--out", "afile", "--no-pdf"], "is a file",
         {**toml(SMALL), "afile": "not a folder"}),
    Case("out-read-only", ["audit", "--config", "c.toml", "--out", "ro/out", "--no-pdf"], "cannot write",
         toml(SMALL), setup=lambda wd, ids: ((wd / "ro").mkdir(), (wd / "ro").chmod(0o555)), skip_as_root=True),
    Case("out-cwd-empty", ["audit", "--config", "c.toml", "--out", ".", "--no-pdf"], "current folder",
         toml(SMALL)),
    Case("out-cwd-force", ["audit", "--config", "c.toml", "--out", ".", "--force", "--no-pdf"], "current folder",
         {**toml(SMALL), "mine.txt": "keep me"}),
    # ancestors of the current folder, inside the test's own folder only: never point a hostile case at "/" (code
    # without the check deletes whatever --out names)
    Case("out-parent-force", ["audit", "--config", "c.toml", "--out", "..", "--force", "--no-pdf"],
         "current folder", {"a/b/c.toml": SMALL, "a/mine.txt": "keep me"}, cwd="a/b"),
    Case("out-grandparent-force", ["audit", "--config", "c.toml", "--out", "../..", "--force", "--no-pdf"],
         "current folder", {"a/b/c.toml": SMALL, "mine.txt": "keep me"}, cwd="a/b"),
    Case("out-ancestor-absolute", ["audit", "--config", "c.toml", "--out", "{wd}", "--force", "--no-pdf"],
         "current folder", {"a/b/c.toml": SMALL}, cwd="a/b"),
    Case("out-not-empty", audit(), "not empty", {**toml(SMALL), "out/mine.txt": "keep me"}),
    Case("out-foreign-force", audit("--force"), "not a run folder", {**toml(SMALL), "out/mine.txt": "keep me"}),
    Case("out-run-with-ledger-force", audit("--force"), "ledger.sqlite", toml(SMALL),
         setup=_run_folder_with("ledger.sqlite")),
    Case("out-run-with-releases-force", audit("--force"), "releases", toml(SMALL),
         setup=_run_folder_with("releases")),
    Case("out-empty-string", ["audit", "--config", "c.toml", "--out", ""], "--out", toml(SMALL)),
    Case("precompute-out-under-a-file", ["precompute", "--out", "afile/sub"], "is a file", {"afile": "x"}),
    Case("precompute-out-cwd", ["precompute", "--out", "."], "current folder"),
    # -- command line -------------------------------------------------------------------------------------------------
    Case("usage-unknown-option", ["audit", "--bogus"], "No such option"),
    Case("usage-unknown-command", ["audits"], "No such command"),
    Case("usage-bad-float", ["calibrate", "--epsilon", "x", "--delta", "1e-5", "--sensitivity", "1"], "--epsilon"),
    Case("usage-missing-option", ["calibrate", "--epsilon", "1", "--sensitivity", "1"], "--delta"),
    Case("usage-forget-no-requests", ["forget", "run"], "--requests"),
    Case("usage-bad-choice", ["calibrate", "--epsilon", "1", "--delta", "1e-5", "--sensitivity", "1",
                              "--mechanism", "laplace"], "--mechanism"),
    # -- calibrate ----------------------------------------------------------------------------------------------------
    Case("calibrate-sensitivity-1e308", ["calibrate", "--epsilon", "1", "--delta", "1e-5", "--sensitivity", "1e308"],
         "float range"),
    Case("calibrate-tiny-both", ["calibrate", "--epsilon", "1e-300", "--delta", "1e-320", "--sensitivity", "1e10"],
         "float range"),
    Case("calibrate-epsilon-0", ["calibrate", "--epsilon", "0", "--delta", "1e-5", "--sensitivity", "1"], "epsilon"),
    Case("calibrate-epsilon-nan", ["calibrate", "--epsilon", "nan", "--delta", "1e-5", "--sensitivity", "1"],
         "epsilon"),
    Case("calibrate-delta-1", ["calibrate", "--epsilon", "1", "--delta", "1", "--sensitivity", "1"], "delta"),
    Case("calibrate-sensitivity-neg", ["calibrate", "--epsilon", "1", "--delta", "1e-5", "--sensitivity", "-1"],
         "sensitivity"),
    Case("calibrate-classic-eps-2", ["calibrate", "--epsilon", "2", "--delta", "1e-5", "--sensitivity", "1",
                                     "--mechanism", "classic"], "classic"),
    # -- report -------------------------------------------------------------------------------------------------------
    Case("report-missing-folder", ["report", "nope"], "no such run folder"),
    Case("report-no-results", ["report", "empty"], "no results.json", setup=lambda wd, ids: (wd / "empty").mkdir()),
    Case("report-malformed-json", ["report", "run", "--no-pdf"], "not valid JSON", needs_run=True,
         setup=lambda wd, ids: (wd / "run" / "results.json").write_text("{nope")),
    Case("report-deeply-nested", ["report", "run", "--no-pdf"], "nested", needs_run=True,
         setup=lambda wd, ids: (wd / "run" / "results.json").write_text(_nested(100_000))),
    Case("report-schema-9", ["report", "run", "--no-pdf"], "schema_version", needs_run=True,
         setup=lambda wd, ids: (wd / "run" / "results.json").write_text(
             '{"schema_version": "9.0", "verdict": {}, "methods": {}, "attacks": []}')),
    Case("report-garbage-scores", ["report", "run", "--no-pdf"], "scores", needs_run=True,
         setup=_scores(os.urandom(300))),
    Case("report-truncated-scores", ["report", "run", "--no-pdf"], "scores", needs_run=True,
         setup=_scores(b"PK\x03\x04 truncated")),
    # -- forget -------------------------------------------------------------------------------------------------------
    Case("forget-requests-missing", ["forget", "run", "--requests", "nope.txt"], "nope.txt", needs_run=True),
    Case("forget-requests-empty", ["forget", "run", "--requests", "req.txt"], "names no record ids",
         needs_run=True, setup=_req(lambda ids: "\n\n")),
    Case("forget-requests-binary", ["forget", "run", "--requests", "req.txt"], "UTF-8", needs_run=True,
         setup=lambda wd, ids: (wd / "req.txt").write_bytes(b"\xff\xfe\x00\x01")),
    Case("forget-unknown-id", ["forget", "run", "--requests", "req.txt"], "unknown record id", needs_run=True,
         setup=_req(lambda ids: "digits:99999\n")),
    Case("forget-duplicate-id", ["forget", "run", "--requests", "req.txt"], "twice", needs_run=True,
         setup=_req(lambda ids: f"{ids[0]}\n{ids[0]}\n")),
    Case("forget-bad-request-id", ["forget", "run", "--requests", "req.txt", "--request-id", "../x"],
         "request id", needs_run=True, setup=_req(lambda ids: f"{ids[0]}\n")),
    Case("forget-epsilon-0", ["forget", "run", "--requests", "req.txt", "--epsilon", "0"], "epsilon",
         needs_run=True, setup=_req(lambda ids: f"{ids[0]}\n")),
    Case("forget-delta-0", ["forget", "run", "--requests", "req.txt", "--delta", "0"], "delta",
         needs_run=True, setup=_req(lambda ids: f"{ids[0]}\n")),
    Case("forget-no-trained-run", ["forget", "empty", "--requests", "req.txt"], "not a trained run",
         setup=lambda wd, ids: ((wd / "empty").mkdir(), (wd / "req.txt").write_text("digits:1\n"))),
    Case("forget-tampered-weights", ["forget", "run", "--requests", "req.txt"], "weights.npy", needs_run=True,
         setup=_tamper("trained_run/weights.npy")),
    Case("forget-tampered-approximators", ["forget", "run", "--requests", "req.txt"], "chunk-000000",
         needs_run=True, setup=_tamper("trained_run/store/shard-00000/chunk-000000.npy")),
    Case("forget-ledger-garbage", ["forget", "run", "--requests", "req.txt"], "ledger", needs_run=True,
         setup=_ledger_file(os.urandom(8192))),
    Case("forget-ledger-corrupted-page", ["forget", "run", "--requests", "req.txt"], "ledger", needs_run=True,
         setup=_corrupt_ledger_page),
    Case("forget-ledger-truncated-0-bytes", ["forget", "run", "--requests", "req.txt"], "empty (0 bytes)",
         needs_run=True, setup=_two_requests_then(_truncate)),
    Case("forget-ledger-truncated-no-releases", ["forget", "run", "--requests", "req.txt"], "anchor",
         needs_run=True, setup=_two_requests_then(
             lambda wd, ids: (_truncate(wd, ids), shutil.rmtree(wd / "run" / "releases")))),
    Case("forget-ledger-last-row-deleted", ["forget", "run", "--requests", "req.txt"], "anchor",
         needs_run=True, setup=_two_requests_then(_sql("DELETE FROM requests WHERE applied_seq = 2"))),
    Case("forget-ledger-older-copy", ["forget", "run", "--requests", "req.txt"], "anchor", needs_run=True,
         setup=_two_requests_with_backup_between),
    Case("forget-ledger-row-edited", ["forget", "run", "--requests", "req.txt"], "hash chain", needs_run=True,
         setup=_two_requests_then(_sql("UPDATE requests SET sigma = sigma * 2 WHERE applied_seq = 1"))),
    Case("forget-ledger-rows-swapped", ["forget", "run", "--requests", "req.txt"], "hash chain", needs_run=True,
         setup=_two_requests_then(_sql("UPDATE requests SET applied_seq = -1 WHERE applied_seq = 1",
                                       "UPDATE requests SET applied_seq = 1 WHERE applied_seq = 2",
                                       "UPDATE requests SET applied_seq = 2 WHERE applied_seq = -1"))),
    Case("forget-ledger-and-anchor-deleted", ["forget", "run", "--requests", "req.txt"], "holds releases",
         needs_run=True, setup=_two_requests_then(_delete_ledger_and_anchor)),
    Case("forget-ledger-shortened-anchor-rewritten", ["forget", "run", "--requests", "req.txt"],
         "does not hold", needs_run=True, setup=_two_requests_then(_shorten_and_reanchor)),
    Case("forget-ledger-anchor-garbage", ["forget", "run", "--requests", "req.txt"], "ledger anchor",
         needs_run=True, setup=_two_requests_then(
             lambda wd, ids: (wd / "run" / "trained_run" / "ledger_head.json").write_text("{nope"))),
    Case("forget-already-deleted", ["forget", "run", "--requests", "again.txt"], "already deleted", needs_run=True,
         setup=_forget_once_then(lambda wd, ids: (wd / "again.txt").write_text(f"{ids[0]}\n{ids[1]}\n"))),
    Case("forget-jsonl-malformed", ["forget", "run", "--requests", "req.jsonl"], "line 2", needs_run=True,
         setup=_req(lambda ids: json.dumps(ids[0]) + "\n{not json\n", "req.jsonl")),
    Case("forget-jsonl-not-a-string", ["forget", "run", "--requests", "req.jsonl"], "line 1", needs_run=True,
         setup=_req(lambda ids: "17\n", "req.jsonl")),
    Case("forget-id-with-control", ["forget", "run", "--requests", "req.jsonl"], "control character",
         needs_run=True, setup=_req(lambda ids: json.dumps(ids[0] + "\u0007") + "\n", "req.jsonl")),
]


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under the roots: path -> sha256 of the content (or 'dir'), with the mode."""
    out = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            d = Path(dirpath)
            out[str(d)] = f"dir {stat.S_IMODE(d.stat().st_mode):o}"
            for f in filenames:
                p = d / f
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if not p.is_symlink() else "link"
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch, template):
    if case.skip_as_root and os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    wd = tmp_path / "wd"
    wd.mkdir()
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE_DIR", str(cache))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))       # an internal error would leave its traceback there
    (tmp_path / "tmp").mkdir()
    src, ids = template
    if case.needs_run:
        shutil.copytree(src, wd / "run")
    for name, content in case.files.items():
        p = wd / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content, encoding="utf-8")
    if case.setup is not None:
        case.setup(wd, ids)
    (wd / case.cwd).mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(wd / case.cwd)
    args = [a.replace("{wd}", str(wd)) for a in case.args]
    assert not any(a.strip() == "/" for a in args), "never aim a hostile case at the root folder"
    before = snapshot(tmp_path)
    res = CliRunner().invoke(main, args)
    after = snapshot(tmp_path)
    lines = res.stderr.splitlines()
    assert res.exit_code == case.code, (res.exit_code, res.stderr, res.stdout, repr(res.exception))
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert case.names in lines[0], lines[0]
    assert res.stdout == "", res.stdout
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, changed
    assert not list((tmp_path / "tmp").iterdir())


def test_table_size():
    """The issue asks for at least 60 cases across config, command line, data, request files, run folders, report
    and calibrate."""
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
