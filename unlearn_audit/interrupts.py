"""SIGINT and SIGTERM as one orderly stop: the signal raises :class:`Stopped` where the process is, the code unwinds
like after any failure (partial outputs are removed, a pending deletion is rolled back), and the process exits
128 + the signal's number (130 for SIGINT, 143 for SIGTERM).

:class:`Stopped` is a ``SystemExit``, never a ``KeyboardInterrupt``: CPython turns a ``KeyboardInterrupt`` that
reaches the top into a death by SIGINT (a caller sees returncode -2, not 130), and cannot be told from a hard kill.
After the first signal both are ignored, so a second Ctrl-C (or a supervisor's SIGTERM after SIGINT) neither cuts
the clean-up short nor turns the exit code into a death by signal; SIGKILL still stops everything, and the next
start removes what it left. A signal the parent set to be ignored (a background job of a non-interactive shell
starts with SIGINT ignored) stays ignored.

In-process callers (tests through click's CliRunner, a notebook) get their handlers back when the command ends. The
console script is the process itself (:func:`process_exit`): there both signals stay ignored from the end of the
command until the interpreter has exited, so a late signal cannot turn a decided exit code into a death by signal.
"""

from __future__ import annotations

import signal
from types import TracebackType

__all__ = ["StopSignals", "Stopped", "process_exit"]

_STOP = (signal.SIGINT, signal.SIGTERM)
_PROCESS_EXIT = False           # set by process_exit(): this command is the whole process


def process_exit() -> None:
    """Declare that the command running now is the whole process (the console script, ``python -m``): when it
    ends, SIGINT and SIGTERM stay ignored instead of being restored."""
    global _PROCESS_EXIT
    _PROCESS_EXIT = True


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
    """Context manager: inside it SIGINT and SIGTERM raise :class:`Stopped` (one that was ignored when it was entered
    stays ignored). On leaving, the previous handlers come back, unless this is the whole process
    (:func:`process_exit`), in which case both stay ignored until it has exited. Outside the main thread it does
    nothing (Python allows handlers there only)."""

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        # later signals are swallowed by a Python handler, not SIG_IGN: a signal already delivered but not yet handled
        # when the disposition becomes SIG_IGN makes CPython print "Signal N ignored due to race condition"
        for sig in self._previous:
            signal.signal(sig, _swallow)
        raise Stopped(signum)

    def __enter__(self) -> StopSignals:
        try:
            previous = {sig: signal.getsignal(sig) for sig in _STOP}
            self._previous = {sig: h for sig, h in previous.items() if h is not signal.SIG_IGN}
            for sig in self._previous:
                signal.signal(sig, self._handler)
        except ValueError:                                  # not the main thread: leave signals alone
            self._previous = {}
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if _PROCESS_EXIT:
            _ignore_stop_signals()
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)                      # type: ignore[arg-type]


def _swallow(signum, frame) -> None:
    """A stop signal after the first one: ignored while the clean-up runs."""


def _ignore_stop_signals() -> None:
    # SIG_IGN, not a Python handler: the interpreter resets Python handlers to the default when it finalises, and a
    # signal then would still kill the process
    for sig in _STOP:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, signal.SIG_IGN)
