"""StopRequest: the wall-time budget and SIGTERM handling shared by training and exploration."""

import signal
import time

from aiida_annpot.core.interrupt import StopRequest


def test_sigterm_requests_a_stop_and_the_handler_is_restored():
    previous = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.due()
        signal.raise_signal(signal.SIGTERM)  # what Slurm sends at the time limit: must not kill the process
        assert stop.due()
    assert signal.getsignal(signal.SIGTERM) is previous


def test_budget_counts_the_margin_of_the_next_unit_of_work():
    with StopRequest(wall_time=0.2) as stop:
        assert not stop.due()
        assert stop.due(margin=0.5)  # the next unit would overrun the budget
        time.sleep(0.25)
        assert stop.due()
    assert not StopRequest(wall_time=None).due(margin=1e9)
