"""The import rules of docs/architecture.md, checked by parsing every module's imports with ``ast`` (lazy imports
inside functions included): imports point one way, ``unlearn_audit.stats`` imports no torch (not even through
another module), ``attacks`` never imports ``unlearn_audit``, ``hfocu`` is the engine only, the report imports
nothing of the pipeline, and the CLI holds no logic."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Which parts of unlearn_audit each part may import (a part is a subpackage or a top-level module). A new arrow is a
# design decision: add it here and to docs/architecture.md, pointing down the layers, never up.
ALLOWED: dict[str, set[str]] = {
    "common": set(),
    "outputs": set(),                                     # output folders written all at once (audit, precompute)
    "interrupts": set(),                                  # SIGINT/SIGTERM as one orderly stop (exit 130/143)
    "pseudonyms": set(),                                  # keyed record-id hashes; the key stays in the run folder
    "schema": set(),                                      # results.json's pydantic models: audit writes, report reads
    "plugins": {"common", "interrupts"},                  # user code named by the config: imported, hashed, recorded
    "data": {"common"},
    "config": {"data", "common", "plugins"},              # dataset names and plugin names are validated
    "models": {"common", "plugins"},
    "training": {"models", "common"},
    "stats": {"common"},
    "certify": {"training", "common"},
    "hfocu": {"certify", "models", "training", "common"},
    "baselines": {"certify", "hfocu", "models", "training", "common"},
    "inputs": {"config", "data", "models", "training", "plugins"},
    "deletion": {"certify", "hfocu", "inputs", "config", "data", "models", "training", "common", "outputs",
                 "pseudonyms"},
    "report": {"stats", "config", "common", "schema"},
    "audit": {"deletion", "hfocu", "certify", "baselines", "stats", "report", "inputs", "config", "data", "models",
              "training", "common", "outputs", "pseudonyms", "schema", "plugins", "__init__"},
    "cli": {"audit", "deletion", "hfocu", "certify", "report", "config", "data", "models", "plugins", "interrupts"},
    "__init__": set(),
}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                out.add(".".join(base + ([node.module] if node.module else [])))
            else:
                out.add(node.module)
    return out


def _part(module: str) -> str | None:
    """The part of unlearn_audit a module name belongs to (None outside unlearn_audit)."""
    p = module.split(".")
    if p[0] != "unlearn_audit":
        return None
    return p[1] if len(p) > 1 else "__init__"


def _part_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT / "unlearn_audit").with_suffix("").parts
    return rel[0]


def test_every_part_is_in_the_table():
    parts = {_part_of_file(p) for p in _modules("unlearn_audit")}
    assert parts == set(ALLOWED), f"parts without rules: {parts - set(ALLOWED)}; rules without parts: " \
                                  f"{set(ALLOWED) - parts}"


@pytest.mark.parametrize("path", _modules("unlearn_audit"), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path):
    me = _part_of_file(path)
    bad = sorted(m for m in _imports(path) if (_part(m) is not None and _part(m) != me
                                                 and _part(m) not in ALLOWED[me]))
    assert not bad, f"{path.relative_to(ROOT)} ({me}) imports {bad}: not allowed by docs/architecture.md"


def test_attacks_never_imports_unlearn_audit():
    bad = {str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if m.split(".")[0] == "unlearn_audit")
           for p in _modules("attacks")}
    assert not {k: v for k, v in bad.items() if v}


def test_stats_imports_no_torch_even_indirectly():
    """Follow every import of unlearn_audit.stats through the project's modules: none may import torch."""
    by_name = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in _modules("unlearn_audit")}
    todo = [n for n in by_name if n.startswith("unlearn_audit.stats")]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for m in _imports(by_name[name]):
            assert m.split(".")[0] != "torch", f"{name} imports {m} (stats must stay torch-free)"
            # a module, or the package it is a name of: follow both up to the project's own files
            for cand in (m, m.rsplit(".", 1)[0]):
                if cand in by_name and cand not in seen:
                    todo.append(cand)
    assert "unlearn_audit.common" in seen                  # the walk really followed stats' imports


def test_hfocu_is_the_engine_only():
    """hfocu never reaches up to storage/serving, the audit, the CLI or the config."""
    for p in _modules("unlearn_audit/hfocu"):
        parts = {_part(m) for m in _imports(p)}
        assert not parts & {"deletion", "audit", "cli", "report", "config", "inputs", "baselines"}, p


CLI_CALLS_IN_LOOPS = {"echo"}


def test_cli_holds_no_logic():
    """unlearn_audit/cli.py parses, calls the library, prints and maps errors: no numerics (numpy/torch), no
    comprehensions, and every loop only prints."""
    tree = ast.parse((ROOT / "unlearn_audit" / "cli.py").read_text(encoding="utf-8"))
    roots = {m.split(".")[0] for m in _imports(ROOT / "unlearn_audit" / "cli.py")}
    assert not roots & {"numpy", "torch", "scipy", "pandas", "sklearn"}
    for node in ast.walk(tree):
        assert not isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.While)), \
            f"cli.py line {node.lineno}: computation belongs in the library"
        if isinstance(node, ast.For):
            for stmt in node.body:
                call = stmt.value if isinstance(stmt, ast.Expr) else None
                name = getattr(getattr(call, "func", None), "attr", None)
                assert isinstance(call, ast.Call) and name in CLI_CALLS_IN_LOOPS, \
                    f"cli.py line {stmt.lineno}: a loop in the CLI may only print"
