"""Stopping a fit cleanly: SIGTERM stops it like Ctrl-C, and cleanup never hides the error that ended it.

:class:`StopOnSignal` turns SIGTERM into :class:`StopRequested` while a fit runs: the round in progress is
abandoned (the last checkpoint, written atomically, stays valid), the fit's cleanup releases the run folder's
lock, and the command line says so in one line and exits with ``128 + signal`` (143). ``StopRequested`` is a
``BaseException`` but not a ``KeyboardInterrupt``: no per-client ``except Exception`` swallows it, and
Lightning's ``Trainer`` (which turns a ``KeyboardInterrupt`` into ``sys.exit(1)``) passes it on unchanged.

:func:`run_cleanup` runs every cleanup step even when one fails; the error that ended the fit stays the one
raised, and each cleanup failure is added to it as a note (or, after a clean fit, the first cleanup failure
is raised with the later ones noted).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Any, Callable, Iterator, Sequence


class StopRequested(BaseException):
    """A stop signal arrived during a fit; the round in progress was abandoned."""

    def __init__(self, signum: int, round_idx: int | None = None, checkpoint: str | None = None,
                 next_round: int | None = None) -> None:
        super().__init__(signum)
        self.signum, self.round, self.checkpoint, self.next_round = signum, round_idx, checkpoint, next_round

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by this signal (143 for SIGTERM)."""
        return 128 + self.signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        if self.round is None:
            where = " before the first round"
        elif self.next_round == self.round + 1:
            where = f" after round {self.round}, once its checkpoint was written"
        else:
            where = f" during round {self.round}, which was abandoned"
        kept = (f"; the last checkpoint {self.checkpoint} (next round {self.next_round}) is kept: resume with "
                "--ckpt_path last" if self.checkpoint else "; no checkpoint was written")
        return f"stopped by {name}{where}{kept}"


class StopOnSignal:
    """While entered (in the main thread), SIGTERM raises :class:`StopRequested`; the old handler comes back after.

    After :meth:`disarm` (the fit's cleanup has begun) a signal is only recorded, so that cleanup finishes,
    and :class:`StopRequested` is raised when the block ends.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)) -> None:
        self.signals = tuple(signals)
        self.armed = False
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._outer: StopOnSignal | None = None

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
            self.armed = True
            self._outer, _ACTIVE[0] = _ACTIVE[0], self
        return self

    def disarm(self) -> None:
        """From now on a signal is recorded, not raised (cleanup runs to its end)."""
        self.armed = False

    def raise_if_received(self) -> None:
        """Raise the stop a signal asked for, if it arrived and the fit is still running.

        The handler raises where the signal lands; when that is inside a ``__del__`` or a weakref callback
        (garbage collection runs them at any point), Python only prints the exception and carries on. The
        fit calls this at every round boundary, so such a stop still ends it within a round.
        """
        if self.received is not None:
            self.armed = False
            raise StopRequested(self.received)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self.armed:
            self.armed = False  # a second signal during cleanup does not interrupt it
            raise StopRequested(signum)

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if self._previous:
            _ACTIVE[0] = self._outer
        self._previous = {}
        if error is None and self.received is not None:
            raise StopRequested(self.received)


#: the :class:`StopOnSignal` of the fit running in this process (the innermost), if any
_ACTIVE: list[StopOnSignal | None] = [None]


@contextlib.contextmanager
def critical_section() -> Iterator[None]:
    """A block a stop signal must not cut in half (a checkpoint write): the signal waits for its end.

    A library's own cleanup can mask the stop when it is cut short (torch's zip writer raises its own error
    then), so the stop is raised only once the block has finished.
    """
    stop = _ACTIVE[0]
    if stop is None or not stop.armed:
        yield
        return
    stop.armed = False
    try:
        yield
    finally:
        stop.armed = True
    stop.raise_if_received()


def run_cleanup(steps: Sequence[tuple[str, Callable[[], Any]]], failure: BaseException | None = None) -> None:
    """Run every ``(name, step)``; never let a cleanup error replace ``failure`` (the error that ended the fit).

    With ``failure``, each cleanup error becomes a note on it and nothing is raised here (the caller re-raises
    ``failure``); without, the first cleanup error is raised with the later ones as notes.
    """
    errors: list[tuple[str, Exception]] = []
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - every step must run; the errors are reported below
            errors.append((name, exc))
    if not errors:
        return
    first = failure if failure is not None else errors[0][1]
    for name, exc in errors if failure is not None else errors[1:]:
        first.add_note(f"then, during cleanup, {name} failed: {type(exc).__name__}: {exc}")
    if failure is None:
        raise errors[0][1]


def cleanup_notes(error: BaseException) -> list[str]:
    """The cleanup failures :func:`run_cleanup` noted on ``error``."""
    return [note for note in getattr(error, "__notes__", []) if note.startswith("then, during cleanup, ")]
