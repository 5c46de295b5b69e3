"""A polite stop: SIGTERM or SIGUSR2 (SLURM's preemption and time-limit warnings, sent on
through prunegen's SLURM job) ask the cell to stop. The training loop looks after every
step; when asked, it checkpoints where it is, mid-epoch, and raises `StopRequested`, so a
requeued cell loses at most the step that was running (and resumes to the same bits).

A flag, not work in the handler: a signal lands between two Python bytecodes, possibly
inside a torch.save; the loop acts on it at the next step boundary."""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
_asked: list[int] = []  # the signals received, in order


class StopRequested(Exception):
    """The cell stopped at a signal after saving its checkpoint; run it again to resume."""

    def __init__(self, signum: int, where: str):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name} {where}; its checkpoint is saved: "
                         "run the cell again to resume it")


def install() -> None:
    """From now on SIGTERM and SIGUSR2 ask for a stop (main thread only, as Python requires)."""
    _asked.clear()
    for sig in SIGNALS:
        signal.signal(sig, _ask)


def _ask(signum, frame) -> None:
    _asked.append(signum)


def ask(signum: int) -> None:
    """Ask for a stop as a signal would (a warm worker whose cell's job was cancelled)."""
    _asked.append(signum)


def requested() -> int | None:
    """The first signal that asked for a stop, or None."""
    return _asked[0] if _asked else None


def reset() -> None:
    _asked.clear()
