"""Stopping long runs cleanly: a wall-time budget and SIGTERM (what Slurm sends at its time limit).

Training and exploration poll :meth:`StopRequest.due` at their natural checkpoints (an epoch, a recorded frame),
write what a resume needs, and the ``annpot`` command exits with
:data:`~aiida_annpot.core.errors.EXIT_WALL_TIME` so that a scheduler restart continues with ``--resume``.
"""

from __future__ import annotations

import signal
import time


class StopRequest:
    """Tells a loop whether to stop now; a context manager that installs (and restores) the SIGTERM handler.

    :param wall_time: seconds the run may take from entering the context, or None for no budget.
    """

    def __init__(self, wall_time: float | None = None):
        self.wall_time = wall_time
        self.signalled = False
        self._started = time.perf_counter()
        self._previous = None

    def __enter__(self) -> StopRequest:
        self._started = time.perf_counter()
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: only the budget applies
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame) -> None:
        self.signalled = True

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def due(self, margin: float = 0.0) -> bool:
        """True after SIGTERM, or when less than ``margin`` seconds (the next unit of work) of the budget remain."""
        return self.signalled or (self.wall_time is not None and self.elapsed + margin > self.wall_time)
