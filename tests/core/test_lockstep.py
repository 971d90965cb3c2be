"""Tests for :class:`~aiida_annpot.core.lockstep.Lockstep`: tasks side by side, one evaluation call per round."""

from __future__ import annotations

import threading

import pytest

from aiida_annpot.core.lockstep import Cancelled, Lockstep


class Recorder:
    """``evaluate_many`` that squares numbers and remembers the size of every call."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, requests):
        self.calls.append(len(requests))
        return [value**2 for (value,) in requests]


def counting_task(name: str, steps: int, log: list):
    """A task that asks for ``steps`` evaluations, logging each result."""

    def task(evaluate):
        for step in range(steps):
            log.append((name, step, evaluate(10 * step + len(name))))

    return task


@pytest.mark.parametrize("width", [1, 2, 3, 8])
def test_every_task_gets_its_own_results_in_any_width(width):
    serial: list = []
    Lockstep(Recorder(), 1).run(counting_task(name, steps, serial) for name, steps in [("a", 3), ("bb", 5), ("c", 2)])
    side_by_side: list = []
    tasks = [counting_task(name, steps, side_by_side) for name, steps in [("a", 3), ("bb", 5), ("c", 2)]]
    Lockstep(Recorder(), width).run(tasks)
    assert sorted(side_by_side) == sorted(serial)
    assert [entry for entry in side_by_side if entry[0] == "bb"] == [("bb", s, (10 * s + 2) ** 2) for s in range(5)]


def test_rounds_batch_the_running_tasks_and_refill_freed_places():
    """Width 2 over tasks of 3, 1, 0 and 2 evaluations: the short task's place goes to the next ones at once."""
    recorder, log = Recorder(), []
    tasks = [counting_task("a", 3, log), counting_task("b", 1, log), counting_task("-", 0, log)]
    Lockstep(recorder, 2).run([*tasks, counting_task("c", 2, log)])
    assert recorder.calls == [2, 2, 2]  # (a, b), (a, c), (a, c)
    assert [name for name, _, _ in log] == ["a", "b", "a", "c", "a", "c"]  # in task order within each round


@pytest.mark.parametrize("width", [1, 2])
def test_tasks_run_on_the_calling_thread(width):
    """Torch's thread settings and grad mode, and the OpenMP pool, are per thread: every task shares the caller's."""
    threads = []

    def task(evaluate):
        threads.append(threading.current_thread())
        evaluate(1)
        threads.append(threading.current_thread())

    recorder = Recorder()
    Lockstep(recorder, width).run([task, task])
    assert threads == [threading.main_thread()] * 4
    assert recorder.calls == ([1, 1] if width == 1 else [2])


@pytest.mark.parametrize("width", [1, 4])
def test_a_refused_admission_starts_no_further_task_and_lets_running_ones_finish(width):
    log: list = []
    asked = []

    def admit():
        asked.append(len(log))
        return False

    Lockstep(Recorder(), width).run([counting_task("a", 3, log), counting_task("b", 3, log)], admit=admit)
    assert [name for name, _, _ in log] == ["a"] * 3  # the first task always runs, to its end
    assert asked == ([0] if width > 1 else [3])  # asked once, when a place is free: a refusal is final


def test_a_failing_task_cancels_the_others_and_raises():
    unwound, log = [], []

    def patient(evaluate):
        try:
            while True:
                log.append(evaluate(1))
        except Cancelled:
            unwound.append(True)
            with pytest.raises(Cancelled):
                evaluate(2)  # a task still asking while it unwinds gets no evaluation either
            raise

    def failing(evaluate):
        evaluate(1)
        raise KeyError("broken")

    with pytest.raises(KeyError, match="broken"):
        Lockstep(Recorder(), 3).run([patient, failing, patient])
    assert unwound == [True, True]
    assert log == [1]  # the first task had its result when the second failed; the third never got its own


def test_a_failing_evaluation_cancels_every_task():
    unwound = []

    def task(evaluate):
        try:
            evaluate(1)
        except Cancelled:
            unwound.append(True)
            raise

    def broken(requests):
        raise ValueError("model failed")

    with pytest.raises(ValueError, match="model failed"):
        Lockstep(broken, 2).run([task, task, task])
    assert unwound == [True, True]  # the third never started


def test_width_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Lockstep(Recorder(), 0)
