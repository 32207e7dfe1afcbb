"""Output folders written all at once: checked before any work, filled in a private partial folder beside them, and
swapped into place at the end. Nothing the tool did not create is ever deleted.

``OutputFolder(out, force)`` is the one implementation (the audit's ``--out``):

* :func:`check_output_path` runs before any work: ``out`` must not be the current folder or one of its ancestors,
  must not lie under a file, its first existing ancestor must be writable, and an existing ``out`` must be empty, or,
  with ``force``, a previous run folder of this tool holding only the files a run writes (the marker file
  :data:`MARKER` says the tool made it). A ledger, releases or any other file the run did not write is never
  replaced.
* ``__enter__`` creates the partial folder ``.<name>.partial-<random>`` beside ``out`` (mode 0700: other users
  cannot read the record ids it holds while the run is in progress) and holds an exclusive lock on a file inside it;
  partial folders of earlier runs whose lock is free (their process died, e.g. SIGKILL) are removed first. A failure
  or an interrupt (exception, SIGINT, SIGTERM turned into SystemExit by the CLI) removes the partial folder and every
  parent folder it created.
* ``commit()`` checks ``out`` again and swaps: a previous run folder is renamed aside, the partial folder renamed to
  ``out``, and only then the previous folder deleted.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["MARKER", "OutputDirError", "OutputFolder", "check_output_path", "remove_stale_partials"]

MARKER = ".unlearn-audit-run"
_LOCK = ".lock"
_MARKER_TEXT = "unlearn-audit run folder: `unlearn-audit audit --force` may replace it\n"


class OutputDirError(ValueError):
    """An output folder that cannot be used: a file, under a file, not writable, the current folder or one of its
    ancestors, not empty (without ``--force``), or holding files the tool did not write."""


def _first_existing(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_output_path(out: Path, *, force: bool = False, allowed: frozenset[str] = frozenset(),
                      option: str = "--out") -> None:
    """Refuse, before any work, an output folder the run could not or must not replace (see the module docstring).

    ``allowed``: the names a previous run folder may hold (with the marker) for ``force`` to replace it.
    Raises :class:`OutputDirError` with a one-line message naming the folder and the problem."""
    out = Path(out)
    if str(out).strip() == "":
        raise OutputDirError(f"{option}: empty path")
    try:
        real = Path(os.path.realpath(out))
        cwd = Path.cwd().resolve()
    except (OSError, RuntimeError) as exc:
        raise OutputDirError(f"{option} {out}: cannot resolve the path ({exc})") from None
    if real == cwd or real in cwd.parents:
        raise OutputDirError(f"{option} {out}: is the current folder or contains it; name a new folder for the run")
    if os.path.lexists(out):
        if out.is_symlink():
            raise OutputDirError(f"{option} {out}: is a symbolic link; name a real folder")
        if not out.is_dir():
            raise OutputDirError(f"{option} {out}: exists and is not a folder")
        entries = sorted(os.listdir(out))
        if entries:
            if not force:
                raise OutputDirError(f"{option} {out}: folder is not empty (use --force to replace a previous run "
                                     "folder)")
            if MARKER not in entries:
                raise OutputDirError(f"{option} {out}: not empty and not a run folder of this tool; --force only "
                                     "replaces a previous run folder")
            foreign = [e for e in entries if e not in allowed and e != MARKER]
            if foreign:
                raise OutputDirError(f"{option} {out}: holds '{foreign[0]}', which a run does not write; --force "
                                     "never deletes it (move it away first)")
        base = out.parent
    else:
        base = _first_existing(out.parent if str(out.parent) else Path("."))
        if not base.is_dir():
            raise OutputDirError(f"{option} {out}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputDirError(f"{option} {out}: cannot write in {base} (permission denied)")


def _lock(fd: int, blocking: bool) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no lock, stale folders are kept
        return not blocking
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


def remove_stale_partials(out: Path) -> list[Path]:
    """Remove the partial folders of ``out`` left by runs that died (SIGKILL, power loss): those holding this module's
    lock file with no process holding its lock. Folders in use, or not made by this module, are left alone."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    removed: list[Path] = []
    try:
        candidates = list(parent.glob(f".{out.name}.partial-*"))
    except OSError:
        return removed
    for d in candidates:
        lock = d / _LOCK
        if d.is_symlink() or not d.is_dir() or not lock.is_file():
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            if _lock(fd, blocking=False):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
        finally:
            os.close(fd)
    return removed


class OutputFolder:
    """The output folder of one run (see the module docstring). Use as a context manager; write into ``.path``;
    call ``commit()`` last."""

    def __init__(self, out: Path, *, force: bool = False, allowed: frozenset[str] = frozenset(),
                 option: str = "--out"):
        self.out = Path(out)
        self.force = force
        self.allowed = frozenset(allowed)
        self.option = option
        self._path: Path | None = None          # the partial folder while inside the with block
        self._fd: int | None = None
        self._created: list[Path] = []
        self.committed = False

    @property
    def path(self) -> Path:
        """The private partial folder to write into (only inside the with block)."""
        if self._path is None:
            raise RuntimeError("OutputFolder.path is only there inside the with block")
        return self._path

    def __enter__(self) -> "OutputFolder":
        check_output_path(self.out, force=self.force, allowed=self.allowed, option=self.option)
        parent = self.out.parent if str(self.out.parent) else Path(".")
        missing = []
        p = parent
        while not os.path.lexists(p) and p != p.parent:
            missing.append(p)
            p = p.parent
        try:
            for d in reversed(missing):
                d.mkdir()
                self._created.append(d)
            remove_stale_partials(self.out)
            self._path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=parent))
            # locked before it gets its name, so no other run ever sees this folder's lock file free
            self._fd = os.open(self._path / f"{_LOCK}.new", os.O_RDWR | os.O_CREAT, 0o600)
            _lock(self._fd, blocking=True)
            os.replace(self._path / f"{_LOCK}.new", self._path / _LOCK)
        except OSError as exc:
            self._cleanup()
            raise OutputDirError(f"{self.option} {self.out}: cannot create a folder there "
                                 f"({exc.strerror or exc})") from None
        return self

    def commit(self) -> Path:
        """Move the finished partial folder to ``out`` (replacing a previous run folder, checked again now)."""
        path = self.path
        check_output_path(self.out, force=self.force, allowed=self.allowed, option=self.option)
        (path / MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
        (path / _LOCK).unlink()                  # the lock stays held through the open descriptor until __exit__
        path.chmod(0o755)
        old = None
        if os.path.lexists(self.out):
            if any(self.out.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=path.parent))
                os.replace(self.out, old / "run")
            else:
                self.out.rmdir()
        os.replace(path, self.out)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def _cleanup(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None and not self.committed:
            shutil.rmtree(self._path, ignore_errors=True)
        if not self.committed:
            for d in reversed(self._created):
                try:
                    d.rmdir()
                except OSError:
                    break

    def __exit__(self, *exc) -> None:
        self._cleanup()
