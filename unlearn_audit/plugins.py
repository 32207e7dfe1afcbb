"""User code named by the config: ``"package.module:name"`` (a model factory, an unlearning method).

Importing a module runs its code. The tool imports user code only where the config (``model.factory``,
``unlearning.methods``) or the command line names it, from the environment's importable packages or from the folders
listed in ``plugin_path`` / ``--plugin-path`` (put first on ``sys.path`` for the import; no bytecode is written
there). What was imported is recorded (:class:`PluginInfo`: the module, its file's SHA-256 and its version) in
results.json and in a trained run's spec, so a report says exactly which code produced it.

Every problem is a :class:`PluginError` with one line naming the plugin: a malformed name, a module that cannot be
imported (or raises while importing), a missing attribute. Code that calls into a plugin (the factory, a method's
``unlearn``) reports its failures the same way: :func:`user_failure` says which exceptions are the plugin's failure
(``sys.exit()`` in a plugin included), :func:`describe_error` gives the one-line text.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from unlearn_audit.common import file_sha256
from unlearn_audit.interrupts import Stopped

__all__ = ["PLUGIN_PATTERN", "PluginError", "PluginInfo", "describe_error", "is_plugin_spec", "load_plugin",
           "user_failure"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
PLUGIN_PATTERN = rf"^{_NAME}(\.{_NAME})*:{_NAME}$"
"""``package.module:attribute``: a dotted module path, a colon, one attribute name."""


class PluginError(ValueError):
    """User code named by the config cannot be used. The message is one line and names the plugin."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class PluginInfo:
    """Which user code was imported: the spec as written, its module and attribute, the module's file and that
    file's SHA-256 (None for a module without a file), and its version (``__version__`` of the module or its top
    package, else the installed distribution's version, else "unknown")."""

    spec: str
    module: str
    attribute: str
    file: str | None
    sha256: str | None
    version: str

    def to_dict(self) -> dict:
        return {"spec": self.spec, "module": self.module, "attribute": self.attribute, "file": self.file,
                "sha256": self.sha256, "version": self.version}


def is_plugin_spec(text: str) -> bool:
    """Whether ``text`` has the form ``package.module:attribute``."""
    return re.fullmatch(PLUGIN_PATTERN, text) is not None


def _version(module, top: str) -> str:
    for mod in (module, sys.modules.get(top)):
        v = getattr(mod, "__version__", None)
        if isinstance(v, str) and v:
            return v
    try:
        dists = importlib.metadata.packages_distributions().get(top) or []
        for dist in dists:
            return importlib.metadata.version(dist)
    except Exception:                          # noqa: BLE001 - broken metadata never stops an audit
        pass
    return "unknown"


def describe_error(err: BaseException, limit: int = 200) -> str:
    """``"Type: message"`` on one line, the message cut to ``limit`` characters."""
    text = " ".join(str(err).split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def user_failure(err: BaseException) -> bool:
    """Whether ``err``, raised inside user code, is that code's failure, to be reported as an input error naming the
    plugin: any Exception, and any SystemExit the plugin raised (``sys.exit(0)`` in a plugin must not end the audit
    with the plugin's exit code: 0 would read as a pass). The command line's stop on SIGINT or SIGTERM
    (:class:`~unlearn_audit.interrupts.Stopped`), KeyboardInterrupt and GeneratorExit are not: they pass through."""
    return isinstance(err, Exception) or (isinstance(err, SystemExit) and not isinstance(err, Stopped))


_CACHE: dict[tuple[str, tuple[str, ...]], tuple[object, PluginInfo]] = {}


def load_plugin(spec: str, plugin_path: Sequence[str] = (), *, what: str = "plugin") -> tuple[object, PluginInfo]:
    """Import ``spec`` (``package.module:attribute``) and return the attribute and what was imported.

    ``plugin_path``: folders put first on ``sys.path`` (each must exist); ``what`` names the plugin's role in error
    messages ("model factory", "unlearning method"). The same spec and path are imported once per process.
    """
    key = (spec, tuple(str(p) for p in plugin_path))
    if key in _CACHE:
        return _CACHE[key]
    label = f"{what} '{spec}'"
    if not is_plugin_spec(spec):
        raise PluginError(f"{label}: expected 'package.module:name' (a dotted module path, a colon, a name)")
    module_name, attribute = spec.split(":")
    folders = []
    for p in plugin_path:
        resolved = Path(p).expanduser().resolve()
        if not resolved.is_dir():
            raise PluginError(f"{label}: plugin path '{p}' is not a folder")
        folders.append(str(resolved))
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    importlib.invalidate_caches()
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True                 # importing must not write __pycache__ into the user's folders
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.split(".")[: len(err.name.split("."))] == err.name.split("."):
            where = "plugin_path / --plugin-path" if not folders else ", ".join(folders)
            raise PluginError(f"{label}: cannot import module '{module_name}' (no module named '{err.name}'; "
                              f"is it installed, or in {where}?)") from None
        raise PluginError(f"{label}: importing module '{module_name}' failed: {describe_error(err)}") from None
    except BaseException as err:                   # noqa: BLE001 - user code may raise anything while importing
        if not user_failure(err):
            raise
        raise PluginError(f"{label}: importing module '{module_name}' raised {describe_error(err)}") from None
    finally:
        sys.dont_write_bytecode = dont_write
    if not hasattr(module, attribute):
        raise PluginError(f"{label}: module '{module_name}' has no attribute '{attribute}'")
    obj = getattr(module, attribute)
    file = getattr(module, "__file__", None)
    sha = file_sha256(file) if file and Path(file).is_file() else None
    info = PluginInfo(spec=spec, module=module_name, attribute=attribute, file=file, sha256=sha,
                      version=_version(module, module_name.split(".")[0]))
    _CACHE[key] = (obj, info)
    return obj, info
