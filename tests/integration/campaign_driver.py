"""Runs inside a production profile for the integration tests (``AIIDA_PATH`` and the profile from argv).

``python campaign_driver.py PROFILE setup`` registers codes and the Debian pseudo family; ``setup-cluster`` the
Slurm computer ``localcluster`` (core.ssh_async) and its codes; ``submit [COMPUTER [ITERATIONS]]`` submits the fast
Si campaign to the daemon and prints its PK; ``state PK``, ``labels PK``, ``jobs PK``, ``paused PK`` and
``processes PK`` print JSON about the campaign.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

from aiida import load_profile

load_profile(sys.argv[1])

from aiida.engine import submit  # noqa: E402
from aiida.orm import CalcJobNode, StructureData, WorkflowNode, load_code, load_computer, load_node  # noqa: E402
from ase.build import bulk  # noqa: E402

from aiida_annpot.tools.local_setup import ensure_campaign_codes, workstation_setup  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.small_campaign
from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain  # noqa: E402
from tests.small_campaign import NO_TEST_SET, SMALL_CAMPAIGN  # noqa: E402

FAMILY = "Si-LDA-debian"


def setup() -> dict:
    return {"family": workstation_setup(FAMILY)[2]}


def setup_cluster() -> dict:
    """The local Slurm cluster over core.ssh_async (host ``localcluster`` from ~/.ssh/config) with its codes."""
    from aiida.common.exceptions import NotExistent
    from aiida.orm import Computer

    try:
        computer = load_computer("localcluster")
    except NotExistent:
        computer = Computer(
            label="localcluster",
            hostname="localcluster",
            transport_type="core.ssh_async",
            scheduler_type="core.slurm",
            workdir="/tmp/annpot_cluster_work/{username}",
        ).store()
        computer.set_default_mpiprocs_per_machine(1)
        computer.configure(host="localcluster", safe_interval=0.0, use_login_shell=False)
    computer.set_minimum_job_poll_interval(1.0)
    ensure_campaign_codes(computer, "/usr/bin/pw.x")
    return {"computer": computer.label}


def submit_campaign(computer: str = "localhost", iterations: str = "2") -> dict:
    structure = StructureData(ase=bulk("Si", "diamond", a=5.43, cubic=True))
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        load_code(f"pw@{computer}"),
        load_code(f"annpot@{computer}"),
        {"si": structure},
        FAMILY,
        protocol="fast",
        overrides={**SMALL_CAMPAIGN, **NO_TEST_SET, "max_iterations": int(iterations)},
    )
    return {"pk": submit(builder).pk}


def jobs(pk: int) -> dict:
    """Every CalcJob of the campaign: process label, computer and scheduler job id."""
    node = load_node(pk)
    calcjobs = [d for d in node.called_descendants if isinstance(d, CalcJobNode)]
    return {
        "jobs": [
            {
                "pk": c.pk,
                "label": c.process_label,
                "computer": c.computer.label,
                "job_id": c.get_job_id(),
                "ok": c.is_finished_ok,
            }
            for c in calcjobs
        ]
    }


def paused(pk: int) -> dict:
    node = load_node(pk)
    return {"paused": [d.pk for d in [node, *node.called_descendants] if getattr(d, "paused", False)]}


def processes(pk: int) -> dict:
    """The campaign and its descendants: which are active (not terminated), paused, killed; PwCalculations made."""
    node = load_node(pk)
    every = [node, *node.called_descendants]
    return {
        "active": [p.pk for p in every if not p.is_terminated],
        "workflows_not_paused": [
            p.pk for p in every if isinstance(p, WorkflowNode) and not p.is_terminated and not p.paused
        ],
        "killed": [p.pk for p in every if p.is_killed],
        "pw_total": len(_pw_calculations(node)),
        "state": node.process_state.value,
    }


def _pw_calculations(node) -> list[CalcJobNode]:
    return [d for d in node.called_descendants if d.process_label == "PwCalculation"]


def state(pk: int) -> dict:
    node = load_node(pk)
    in_flight = [c.pk for c in _pw_calculations(node) if not c.is_terminated]
    return {
        "terminated": node.is_terminated,
        "state": node.process_state.value,
        "exit_status": node.exit_status,
        "pw_in_flight": in_flight,
        "pw_total": len(_pw_calculations(node)),
    }


def labels(pk: int) -> dict:
    """Per labelled structure (UUID): its labelling work chains (the labeller's, ``annpot.labelling.<name>``), its
    PwBaseWorkChains and its successful PwCalculations."""
    node = load_node(pk)
    runs, bases, successes = collections.Counter(), collections.Counter(), collections.Counter()
    for workflow in (d for d in node.called_descendants if isinstance(d, WorkflowNode)):
        if (workflow.process_type or "").startswith("aiida.workflows:annpot.labelling."):
            runs[workflow.inputs.structure.uuid] += 1
        if workflow.process_label != "PwBaseWorkChain":
            continue
        structure = workflow.inputs.pw.structure.uuid
        bases[structure] += 1
        successes[structure] += sum(
            1 for c in workflow.called if c.process_label == "PwCalculation" and c.is_finished_ok
        )
    rows = node.outputs.iterations.get_list() if "iterations" in node.outputs else []
    return {
        "runs": dict(runs),
        "bases": dict(bases),
        "successes": dict(successes),
        "exit_status": node.exit_status,
        "iterations": rows,
        "dataset_frames": node.outputs.dataset.n_frames if "dataset" in node.outputs else 0,
    }


if __name__ == "__main__":
    command, arguments = sys.argv[2], sys.argv[3:]
    if command in ("setup", "setup-cluster", "submit"):
        output = {"setup": setup, "setup-cluster": setup_cluster, "submit": submit_campaign}[command](*arguments)
    else:
        commands = {"state": state, "labels": labels, "jobs": jobs, "paused": paused, "processes": processes}
        output = commands[command](int(arguments[0]))
    print(json.dumps(output))
