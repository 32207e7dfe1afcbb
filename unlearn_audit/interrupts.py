"""SIGINT and SIGTERM as one orderly stop: the signal raises :class:`Stopped` where the process is, the code unwinds
like after any failure (partial outputs are removed, a pending deletion is rolled back), and the process exits
128 + the signal's number (130 for SIGINT, 143 for SIGTERM).

:class:`Stopped` is a ``SystemExit``, never a ``KeyboardInterrupt``: CPython turns a ``KeyboardInterrupt`` that
reaches the top into a death by SIGINT (a caller sees returncode -2, not 130), and cannot be told from a hard kill.
After the first signal both are ignored, so a second Ctrl-C (or a supervisor's SIGTERM after SIGINT) neither cuts
the clean-up short nor turns the exit code into a death by signal; SIGKILL still stops everything, and the next
start removes what it left.
"""

from __future__ import annotations

import signal
from types import TracebackType

__all__ = ["StopSignals", "Stopped"]

_STOP = (signal.SIGINT, signal.SIGTERM)


class Stopped(SystemExit):
    """The process was asked to stop by ``signum``; ``code`` = 128 + signum (the shell's convention)."""

    def __init__(self, signum: int):
        self.signame = signal.Signals(signum).name
        super().__init__(128 + signum)

    @property
    def message(self) -> str:
        verb = "terminated" if self.signame == "SIGTERM" else "interrupted"
        return f"{verb} ({self.signame}); nothing of the interrupted step was kept"


class StopSignals:
    """Context manager: inside it SIGINT and SIGTERM raise :class:`Stopped`. On leaving, the previous handlers come
    back (for an in-process caller: tests, a notebook) unless a signal arrived, in which case the process is on its
    way out and both stay ignored. Outside the main thread it does nothing (Python allows handlers there only)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        _ignore_stop_signals()
        raise Stopped(signum)

    def __enter__(self) -> StopSignals:
        try:
            self._previous = {sig: signal.signal(sig, self._handler) for sig in _STOP}
        except ValueError:                                  # not the main thread: leave signals alone
            self._previous = {}
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.received is None:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)                  # type: ignore[arg-type]


def _ignore_stop_signals() -> None:
    for sig in _STOP:
        signal.signal(sig, signal.SIG_IGN)
