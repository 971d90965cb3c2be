"""A campaign on the production stack (PostgreSQL + RabbitMQ, daemon) survives a daemon stop with DFT in flight.

The fixture starts PostgreSQL and RabbitMQ (``scripts/services``) and makes a ``core.psql_dos`` profile in a
temporary ``AIIDA_PATH``. The test starts a daemon with two workers and submits the fast Si campaign (two
iterations). As soon as a PwCalculation is in flight the daemon is stopped; it is started again a few seconds later.
The campaign must finish, and no structure may be labelled twice: one PwBaseWorkChain and one successful
PwCalculation per structure.
"""

from __future__ import annotations

import time

import pytest

from .conftest import wait_for

pytestmark = pytest.mark.services


def test_campaign_finishes_after_a_daemon_restart_without_labelling_twice(production_profile):
    profile = production_profile
    profile.verdi("daemon", "start", 2)
    pk = profile.driver("submit")["pk"]

    in_flight = wait_for(lambda: profile.driver("state", pk)["pw_in_flight"], timeout=180,
                         what="a PwCalculation in flight")  # fmt: skip
    profile.verdi("daemon", "stop", timeout=180)
    assert not profile.driver("state", pk)["terminated"], "the campaign cannot finish while the daemon is down"
    time.sleep(5)
    profile.verdi("daemon", "start", 2)

    wait_for(lambda: profile.driver("state", pk)["terminated"], timeout=900, interval=5, what="the campaign to finish")
    result = profile.driver("labels", pk)
    assert result["exit_status"] in (0, 410), result
    assert len(result["iterations"]) == 2 and result["dataset_frames"] > 0
    assert in_flight, "the daemon was stopped with DFT jobs in flight"
    twice = {uuid: n for uuid, n in result["bases"].items() if n != 1}
    assert not twice, f"structures labelled by more than one PwBaseWorkChain: {twice}"
    assert all(n == 1 for n in result["successes"].values()), result["successes"]
    assert sum(result["successes"].values()) == result["dataset_frames"]
