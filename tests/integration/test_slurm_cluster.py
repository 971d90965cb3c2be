"""A campaign iteration through Slurm over SSH, and recovery from an SSH outage.

The fixtures start PostgreSQL and RabbitMQ (``scripts/services``) and a local "remote cluster"
(``scripts/cluster/start_local_cluster.sh``: munge, slurmctld and slurmd, sshd on 127.0.0.1:2222), then register
the AiiDA computer ``localcluster`` (``core.ssh_async`` + ``core.slurm``) with the pw.x and annpot codes. A
one-iteration campaign is submitted to the daemon. Once a DFT job is in Slurm's hands, sshd and its sessions are
stopped. AiiDA's transport tasks fail and, after their retries (shortened here to 1 s, 2 s, 4 s), the affected
processes pause. sshd comes back 20 s later; ``aiida-annpot resume`` plays the paused processes, and the campaign
finishes with every DFT and training job run by Slurm.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from .conftest import REPOSITORY, run_command, wait_for

pytestmark = pytest.mark.services

OUTAGE_SECONDS = 20


def _stop_sshd() -> None:
    """Stop the cluster's sshd: the listener and every session it forked (AiiDA keeps connections open)."""
    subprocess.run(["pkill", "-f", "sshd_localcluster"], check=False)
    subprocess.run(["pkill", "-f", "sshd: root@notty"], check=False)


@pytest.fixture
def cluster_profile(production_profile):
    run_command(["bash", str(REPOSITORY / "scripts/cluster/start_local_cluster.sh")], production_profile.env, 600)
    production_profile.driver("setup-cluster")
    production_profile.verdi("config", "set", "transport.task_retry_initial_interval", 1)
    production_profile.verdi("config", "set", "transport.task_maximum_attempts", 3)
    yield production_profile
    run_command(["bash", str(REPOSITORY / "scripts/cluster/start_local_cluster.sh")], production_profile.env, 600)


def test_campaign_runs_through_slurm_and_recovers_from_an_ssh_outage(cluster_profile):
    profile = cluster_profile
    profile.verdi("daemon", "start", 2)
    pk = profile.driver("submit", "localcluster", 1)["pk"]

    def queued_dft():
        return [j for j in profile.driver("jobs", pk)["jobs"] if j["label"] == "PwCalculation" and j["job_id"]]

    wait_for(queued_dft, timeout=240, what="a DFT job handed to Slurm")
    _stop_sshd()
    paused = wait_for(
        lambda: profile.driver("paused", pk)["paused"],
        timeout=120,
        what="AiiDA to pause a process whose transport failed",
    )
    time.sleep(OUTAGE_SECONDS)
    run_command(["bash", str(REPOSITORY / "scripts/cluster/start_local_cluster.sh")], profile.env, 600)

    def finished_after_resume():
        if profile.driver("paused", pk)["paused"]:
            run_command(["aiida-annpot", "-p", profile.name, "resume", str(pk)], profile.env)
        return profile.driver("state", pk)["terminated"]

    wait_for(finished_after_resume, timeout=900, interval=5, what="the campaign to finish after the outage")
    state = profile.driver("state", pk)
    assert state["exit_status"] in (0, 410), state
    assert paused, "the outage paused at least one process"
    jobs = profile.driver("jobs", pk)["jobs"]
    for label in ("PwCalculation", "AnnTrainCalculation", "AnnExploreCalculation"):
        ran = [j for j in jobs if j["label"] == label and j["ok"]]
        assert ran, f"no successful {label}"
        for job in ran:
            assert job["computer"] == "localcluster" and job["job_id"] and job["job_id"].isdigit(), job
    result = profile.driver("labels", pk)
    assert result["dataset_frames"] > 0 and all(n == 1 for n in result["bases"].values())
    assert set(result["runs"]) == set(result["bases"]) and all(n == 1 for n in result["runs"].values())
