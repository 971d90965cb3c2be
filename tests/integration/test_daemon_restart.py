"""A campaign on the production stack (PostgreSQL + RabbitMQ, daemon) survives a daemon stop with DFT in flight.

The fixture starts PostgreSQL and RabbitMQ (``scripts/services``) and makes a ``core.psql_dos`` profile in a
temporary ``AIIDA_PATH``. The test starts a daemon with two workers and submits the fast Si campaign (two
iterations). As soon as a PwCalculation is in flight the daemon is stopped; it is started again a few seconds later.
The campaign must finish, and no structure may be labelled twice: one labelling work chain, one PwBaseWorkChain and
one successful PwCalculation per structure.
"""

from __future__ import annotations

import time

import pytest

from .conftest import run_command, wait_for

pytestmark = pytest.mark.services


def test_campaign_finishes_after_a_daemon_restart_without_labelling_twice(production_profile):
    profile = production_profile
    profile.verdi("daemon", "start", 2)
    pk = profile.driver("submit")["pk"]

    in_flight = wait_for(
        lambda: profile.driver("state", pk)["pw_in_flight"], timeout=180, what="a PwCalculation in flight"
    )
    profile.verdi("daemon", "stop", timeout=180)
    assert not profile.driver("state", pk)["terminated"], "the campaign cannot finish while the daemon is down"
    time.sleep(5)
    profile.verdi("daemon", "start", 2)

    wait_for(lambda: profile.driver("state", pk)["terminated"], timeout=900, interval=5, what="the campaign to finish")
    result = profile.driver("labels", pk)
    assert result["exit_status"] in (0, 410), result
    assert len(result["iterations"]) == 2 and result["dataset_frames"] > 0
    assert in_flight, "the daemon was stopped with DFT jobs in flight"
    twice = {uuid: n for uuid, n in result["runs"].items() if n != 1}
    assert not twice, f"structures labelled by more than one labelling work chain: {twice}"
    assert set(result["runs"]) == set(result["bases"]), "every label ran its pw.x through one PwBaseWorkChain"
    twice = {uuid: n for uuid, n in result["bases"].items() if n != 1}
    assert not twice, f"structures labelled by more than one PwBaseWorkChain: {twice}"
    assert all(n == 1 for n in result["successes"].values()), result["successes"]
    assert sum(result["successes"].values()) == result["dataset_frames"]


def test_pause_and_kill_reach_every_process_of_the_campaign(production_profile):
    """``aiida-annpot pause`` holds the campaign and every work chain it called, so no new DFT job is created while
    it is paused; ``resume`` plays them all; ``kill`` leaves no descendant running; ``status`` names what was killed."""
    profile = production_profile
    profile.verdi("daemon", "start", 2)
    pk = profile.driver("submit")["pk"]
    wait_for(lambda: profile.driver("state", pk)["pw_in_flight"], timeout=180, what="a PwCalculation in flight")

    def annpot(*args):
        return run_command(["aiida-annpot", "-p", profile.name, *map(str, args)], profile.env)

    output = annpot("pause", pk)
    assert f"paused ActiveLearningWorkChain<{pk}>" in output and "paused ReferenceWorkChain<" in output, output

    def processes_when(condition):
        snapshot = profile.driver("processes", pk)
        return snapshot if condition(snapshot) else None

    held = wait_for(
        lambda: processes_when(lambda p: not p["workflows_not_paused"]),
        timeout=60,
        what="every active work chain to be paused",
    )
    time.sleep(20)  # long enough for several 8-atom labels: none may start while paused
    assert profile.driver("processes", pk)["pw_total"] == held["pw_total"]
    assert "paused: " in annpot("status", pk)

    output = annpot("resume", pk)
    try:
        wait_for(
            lambda: profile.driver("processes", pk)["pw_total"] > held["pw_total"],
            timeout=120,
            what="new DFT jobs after resume",
        )
    except AssertionError as error:
        listing = profile.verdi("process", "list", "-a", "-p", "1")
        raise AssertionError(f"{error}\nresume said:\n{output}\n{listing}\n{profile.driver('processes', pk)}") from None
    output = annpot("kill", pk)
    assert f"killed ActiveLearningWorkChain<{pk}>" in output, output
    ended = wait_for(
        lambda: processes_when(lambda p: not p["active"]), timeout=120, what="every process of the campaign to end"
    )
    assert ended["state"] == "killed" and pk in ended["killed"]
    status = annpot("status", pk)
    assert "killed: " in status, status
