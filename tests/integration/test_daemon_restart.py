"""A campaign on the production stack (PostgreSQL + RabbitMQ, daemon) survives a daemon stop with DFT in flight.

The test starts PostgreSQL and RabbitMQ (``scripts/services``), makes a ``core.psql_dos`` profile in a temporary
``AIIDA_PATH``, starts a daemon with two workers and submits the fast Si campaign (two iterations). As soon as a
PwCalculation is in flight the daemon is stopped; it is started again a few seconds later. The campaign must finish,
and no structure may be labelled twice: one PwBaseWorkChain and one successful PwCalculation per structure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

REPOSITORY = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("campaign_driver.py")


def _run(command: list[str], env: dict, timeout: float = 300) -> str:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _wait_for(predicate, timeout: float, interval: float = 2.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def production_profile(tmp_path):
    """(environment, profile name) of a fresh core.psql_dos + RabbitMQ profile; torn down afterwards."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("starting PostgreSQL and RabbitMQ needs root on Debian")
    env = dict(
        os.environ, AIIDA_PATH=str(tmp_path / ".aiida"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    )
    profile, database = f"annpot-psql-{secrets.token_hex(3)}", f"annpot_test_{secrets.token_hex(4)}"
    _run(["bash", str(REPOSITORY / "scripts/services/start_postgres_rabbitmq.sh")], env, timeout=600)
    _run(["bash", str(REPOSITORY / "scripts/services/make_psql_profile.sh"), profile, database], env)
    _run([sys.executable, str(DRIVER), profile, "setup"], env)
    yield env, profile
    subprocess.run(["verdi", "-p", profile, "daemon", "stop"], env=env, capture_output=True, timeout=120)
    subprocess.run(["su", "postgres", "-c", f"dropdb --if-exists {database}"], capture_output=True, timeout=60)


def _driver(env: dict, profile: str, *args) -> dict:
    return json.loads(_run([sys.executable, str(DRIVER), profile, *map(str, args)], env).splitlines()[-1])


def test_campaign_finishes_after_a_daemon_restart_without_labelling_twice(production_profile):
    env, profile = production_profile
    _run(["verdi", "-p", profile, "daemon", "start", "2"], env)
    pk = _driver(env, profile, "submit")["pk"]

    in_flight = _wait_for(lambda: _driver(env, profile, "state", pk)["pw_in_flight"], timeout=180,
                          what="a PwCalculation in flight")  # fmt: skip
    _run(["verdi", "-p", profile, "daemon", "stop"], env, timeout=120)
    stopped = _driver(env, profile, "state", pk)
    assert not stopped["terminated"], "the campaign cannot finish while the daemon is down"
    time.sleep(5)
    _run(["verdi", "-p", profile, "daemon", "start", "2"], env)

    _wait_for(lambda: _driver(env, profile, "state", pk)["terminated"], timeout=900, interval=5,
              what="the campaign to finish")  # fmt: skip
    result = _driver(env, profile, "labels", pk)
    assert result["exit_status"] in (0, 410), result
    assert len(result["iterations"]) == 2 and result["dataset_frames"] > 0
    assert in_flight, "the daemon was stopped with DFT jobs in flight"
    twice = {uuid: n for uuid, n in result["bases"].items() if n != 1}
    assert not twice, f"structures labelled by more than one PwBaseWorkChain: {twice}"
    assert all(n == 1 for n in result["successes"].values()), result["successes"]
    assert sum(result["successes"].values()) == result["dataset_frames"]
