"""Running several tasks side by side so that each model call serves all of them.

Exploration runs one MD trajectory per start structure and stage. A call of the committee on a small cell costs
much more than its share of a call on several such cells, so :class:`Lockstep` advances up to ``width``
trajectories together: each runs, as it would alone, until it asks for an evaluation; once every running task waits
for one, their requests go to ``evaluate_many`` in a single call, and each task continues with its own result. A
task that ends frees its place for the next one; the others are not disturbed.

ASE's integrators ask for forces in the middle of a step, so a step cannot be cut in two from outside: each task is
a greenlet, a coroutine with a stack of its own on the calling thread, suspended where it asks for an evaluation.
Control passes between them in a fixed order (the tasks' order), so what tasks do (frames written, messages)
happens in the same order every run. Threads would do the same at a cost: the operating system wakes each task on
whichever core is free, and its data crosses the caches (a 64-atom trajectory's step was 5 % slower on a thread,
16 of them side by side 12 % slower than as greenlets; bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import greenlet

__all__ = ["Cancelled", "Lockstep"]

#: A task's handle on the model: called with one request's arguments, returns that request's result.
Evaluate = Callable[..., Any]
Task = Callable[[Evaluate], None]


class Cancelled(BaseException):
    """Raised in a task waiting for its evaluation when the run ends early (another task failed, or an interrupt).

    A BaseException, like GeneratorExit, so that a task's ``except Exception`` does not keep it running.
    """


class _Strand:
    """One task as a greenlet. It runs only while :meth:`start` or :meth:`resume` waits for it to ask for an
    evaluation (its arguments are then :attr:`request`) or to end; its exception is raised there."""

    def __init__(self, task: Task):
        self._greenlet = greenlet.greenlet(lambda: task(self._evaluate))
        self._cancelled = False
        self.request: tuple | None = None  # the arguments of the evaluation the task waits for; None once it ended

    def start(self) -> bool:
        """Run the task up to its first request; False if it ended without one."""
        return self._switch()

    def resume(self, result: Any) -> bool:
        """Give the task its result and run it up to its next request; False if it ended instead."""
        return self._switch(result)

    def cancel(self) -> None:
        """End a task that waits for a result: :class:`Cancelled` is raised in it, and it unwinds."""
        if self.request is not None:
            self.request, self._cancelled = None, True
            with contextlib.suppress(Cancelled):  # the task ends with it, unless it catches it and returns
                self._greenlet.throw(Cancelled)

    def _switch(self, *result) -> bool:
        self.request = None
        request = self._greenlet.switch(*result)
        if self._greenlet.dead:
            return False
        self.request = request
        return True

    def _evaluate(self, *request) -> Any:
        """Called by the task: hand the request to the scheduler and sleep until the result comes back."""
        if self._cancelled:  # code that runs while Cancelled unwinds the task gets no evaluation
            raise Cancelled
        return self._greenlet.parent.switch(request)


class Lockstep:
    """Runs tasks up to ``width`` at a time, with one ``evaluate_many`` call per round of their requests.

    A task is a function of one argument, ``evaluate``: it calls ``evaluate(*request)`` wherever it needs the model
    and gets that request's result. Tasks run on the calling thread; with ``width`` 1, one after another, each
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
        task starts any more: the running ones finish). An exception in a task or in ``evaluate_many``, or an
        interrupt, cancels the running tasks and is raised here."""
        tasks = iter(tasks)
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
