"""Running several tasks side by side so that each model call serves all of them.

Exploration runs one MD trajectory per start structure and stage. A call of the committee on a 64-atom cell costs
much more than its share of a call on 16 such cells, so :class:`Lockstep` advances up to ``width`` trajectories
together: each runs, as it would alone, until it asks for an evaluation; once every running task waits for one,
their requests go to ``evaluate_many`` in a single call, and each task continues with its own result. A task that
ends frees its place for the next one; the others are not disturbed.

ASE's integrators ask for forces in the middle of a step, so a step cannot be cut in two from outside: each task
runs on a thread of its own, as a coroutine. Only one thread runs at a time and control passes between them in a
fixed order (the tasks' order), so what tasks do (frames written, messages) happens in the same order every run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["Cancelled", "Lockstep"]

#: A task's handle on the model: called with one request's arguments, returns that request's result.
Evaluate = Callable[..., Any]
Task = Callable[[Evaluate], None]

_REQUEST, _RESULT, _ENDED, _FAILED, _CANCEL = "request", "result", "ended", "failed", "cancel"


class Cancelled(BaseException):
    """Raised in a task waiting for its evaluation when the run ends early (another task failed, or an interrupt).

    A BaseException, like GeneratorExit, so that a task's ``except Exception`` does not keep it running.
    """


class _Strand:
    """One task on its own thread. It runs only while :meth:`start` or :meth:`resume` waits for it to ask for an
    evaluation (its arguments are then :attr:`request`) or to end."""

    def __init__(self, task: Task):
        self._to_task: queue.SimpleQueue = queue.SimpleQueue()
        self._from_task: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, args=(task,), daemon=True)
        self._cancelled = False
        self.request: tuple | None = None  # the arguments of the evaluation the task waits for; None once it ended

    def start(self) -> bool:
        """Run the task up to its first request; False if it ended without one. Its exception is raised here."""
        self._thread.start()
        return self._wait()

    def resume(self, result: Any) -> bool:
        """Give the task its result and run it up to its next request; False if it ended instead."""
        self._to_task.put((_RESULT, result))
        return self._wait()

    def cancel(self) -> None:
        """End a task that waits for a result: :class:`Cancelled` is raised in it and its thread is joined."""
        if self.request is not None:
            self.request = None
            self._to_task.put((_CANCEL, None))
            self._thread.join()

    def _wait(self) -> bool:
        kind, value = self._from_task.get()
        self.request = value if kind == _REQUEST else None
        if kind == _FAILED:
            self._thread.join()
            raise value
        return kind == _REQUEST

    def _main(self, task: Task) -> None:
        try:
            task(self._evaluate)
        except Cancelled:
            return
        except BaseException as exc:  # re-raised on the scheduling thread, which stops the others
            self._from_task.put((_FAILED, exc))
            return
        self._from_task.put((_ENDED, None))

    def _evaluate(self, *request) -> Any:
        """Called by the task on its own thread: hand over the request and sleep until the result comes back."""
        if self._cancelled:  # code that runs while Cancelled unwinds the task gets no evaluation
            raise Cancelled
        self._from_task.put((_REQUEST, request))
        kind, value = self._to_task.get()
        if kind == _CANCEL:
            self._cancelled = True
            raise Cancelled
        return value


class Lockstep:
    """Runs tasks up to ``width`` at a time, with one ``evaluate_many`` call per round of their requests.

    A task is a function of one argument, ``evaluate``: it calls ``evaluate(*request)`` wherever it needs the model
    and gets that request's result. With ``width`` 1 the tasks run one after another on the calling thread, each
    request evaluated alone.

    :param evaluate_many: list of requests (argument tuples) → list of results, in the same order.
    :param width: most tasks in one round.
    """

    def __init__(self, evaluate_many: Callable[[Sequence[tuple]], Sequence[Any]], width: int):
        if width < 1:
            raise ValueError(f"width must be at least 1, got {width}")
        self.evaluate_many = evaluate_many
        self.width = width

    def run(self, tasks: Iterable[Task], admit: Callable[[], bool] = lambda: True) -> None:
        """Run ``tasks`` in order; a task after the first starts only while ``admit()`` is true (once false, no
        task starts any more: the running ones finish). An exception in a task, in ``evaluate_many`` or an
        interrupt cancels the running tasks and is raised here."""
        tasks = iter(tasks)
        if self.width == 1:
            for index, task in enumerate(tasks):
                if index and not admit():
                    return
                task(self._evaluate_alone)
            return
        waiting: list[_Strand] = []  # tasks that wait for a result, in the order they started
        started, admitting = 0, True
        try:
            while True:
                waiting = [strand for strand in waiting if strand.request is not None]  # drop the ended ones
                while admitting and len(waiting) < self.width:
                    task = next(tasks, None)
                    if task is None or (started and not admit()):
                        admitting = False
                        break
                    started += 1
                    strand = _Strand(task)
                    waiting.append(strand)
                    if not strand.start():
                        waiting.pop()  # ended without asking for an evaluation
                if not waiting:
                    return
                results = self.evaluate_many([strand.request for strand in waiting])
                for strand, result in zip(waiting, results, strict=True):
                    strand.resume(result)
        finally:  # normally none is left; after an exception, the others stop at their request
            for strand in waiting:
                strand.cancel()

    def _evaluate_alone(self, *request) -> Any:
        (result,) = self.evaluate_many([request])
        return result
