"""Fixtures of the integration tests: a production profile (PostgreSQL + RabbitMQ) driven through subprocesses.

The test session already has its own temporary profile loaded, so everything in the production profile runs in
separate processes: ``verdi``, ``aiida-annpot`` and ``campaign_driver.py`` with ``AIIDA_PATH`` pointing at it.
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

REPOSITORY = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("campaign_driver.py")


def run_command(command: list[str], env: dict, timeout: float = 300) -> str:
    """stdout of ``command``; a non-zero exit fails the test with both streams."""
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def wait_for(predicate, timeout: float, interval: float = 2.0, what: str = "condition"):
    """The first truthy value of ``predicate()``, polled every ``interval`` s; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Profile:
    """A production profile: its name, the environment that selects it, and helpers to drive it."""

    def __init__(self, name: str, env: dict):
        self.name, self.env = name, env

    def verdi(self, *args, timeout: float = 300) -> str:
        return run_command(["verdi", "-p", self.name, *map(str, args)], self.env, timeout)

    def driver(self, *args) -> dict:
        output = run_command([sys.executable, str(DRIVER), self.name, *map(str, args)], self.env)
        return json.loads(output.splitlines()[-1])


def _running_services() -> set[str]:
    """The services of scripts/services and scripts/cluster that are running now."""
    checks = {
        "rabbitmq": ["rabbitmq-diagnostics", "-q", "check_running"],
        "postgresql": ["pg_isready", "-q"],
        "slurm": ["pgrep", "-x", "slurmctld"],
        "sshd": ["pgrep", "-f", "sshd_localcluster"],
    }
    running = set()
    for name, command in checks.items():
        try:
            if subprocess.run(command, capture_output=True, timeout=60).returncode == 0:
                running.add(name)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            pass
    return running


@pytest.fixture(scope="session", autouse=True)
def stop_services_started_here():
    """The services these tests start are stopped when the session ends (those already running are left alone)."""
    before = _running_services()
    yield
    started = sorted(_running_services() - before)
    if started:
        subprocess.run(["bash", str(REPOSITORY / "scripts/services/stop_services.sh"), *started], timeout=300)


@pytest.fixture
def production_profile(tmp_path):
    """A fresh core.psql_dos + RabbitMQ profile with the local codes and the Debian Si family; torn down after."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("starting PostgreSQL and RabbitMQ needs root on Debian")
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # verdi and aiida-annpot of this environment
    env = dict(os.environ, AIIDA_PATH=str(tmp_path / ".aiida"), PATH=path)
    name, database = f"annpot-psql-{secrets.token_hex(3)}", f"annpot_test_{secrets.token_hex(4)}"
    run_command(["bash", str(REPOSITORY / "scripts/services/start_postgres_rabbitmq.sh")], env, timeout=600)
    run_command(["bash", str(REPOSITORY / "scripts/services/make_psql_profile.sh"), name, database], env)
    profile = Profile(name, env)
    profile.driver("setup")
    yield profile
    subprocess.run(["verdi", "-p", name, "daemon", "stop"], env=env, capture_output=True, timeout=180)
    subprocess.run(["su", "postgres", "-c", f"dropdb --if-exists {database}"], capture_output=True, timeout=60)
