"""Runs inside a production profile for the integration tests (``AIIDA_PATH`` and the profile from argv).

``python campaign_driver.py PROFILE setup`` registers codes and the Debian pseudo family; ``submit`` submits the fast Si
campaign to the daemon and prints its PK; ``state PK`` and ``labels PK`` print JSON about the campaign.
"""

from __future__ import annotations

import collections
import json
import shutil
import sys

from aiida import load_profile

load_profile(sys.argv[1])

from aiida.engine import submit  # noqa: E402
from aiida.orm import CalcJobNode, StructureData, WorkflowNode, load_code, load_computer, load_node  # noqa: E402
from ase.build import bulk  # noqa: E402

from aiida_annpot.tools.local_setup import annpot_executable, ensure_code, ensure_debian_pseudo_family  # noqa: E402
from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain  # noqa: E402

FAMILY = "Si-LDA-debian"


def setup() -> dict:
    computer = load_computer("localhost")
    computer.set_minimum_job_poll_interval(0.0)
    ensure_code("pw", computer, shutil.which("pw.x"), "quantumespresso.pw")
    ensure_code("annpot", computer, annpot_executable(), "annpot.train")
    return {"family": ensure_debian_pseudo_family(FAMILY)}


def submit_campaign() -> dict:
    structure = StructureData(ase=bulk("Si", "diamond", a=5.43, cubic=True))
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        load_code("pw@localhost"), load_code("annpot@localhost"), {"si": structure}, FAMILY, protocol="fast",
        overrides={"max_iterations": 2},
    )  # fmt: skip
    return {"pk": submit(builder).pk}


def _pw_calculations(node) -> list[CalcJobNode]:
    return [d for d in node.called_descendants if d.process_label == "PwCalculation"]


def state(pk: int) -> dict:
    node = load_node(pk)
    in_flight = [c.pk for c in _pw_calculations(node) if not c.is_terminated]
    return {"terminated": node.is_terminated, "state": node.process_state.value, "exit_status": node.exit_status,
            "pw_in_flight": in_flight, "pw_total": len(_pw_calculations(node))}  # fmt: skip


def labels(pk: int) -> dict:
    """Per labelled structure (UUID): its PwBaseWorkChains and its successful PwCalculations."""
    node = load_node(pk)
    bases = collections.Counter()
    successes = collections.Counter()
    for base in (d for d in node.called_descendants if isinstance(d, WorkflowNode)):
        if base.process_label != "PwBaseWorkChain":
            continue
        structure = base.inputs.pw.structure.uuid
        bases[structure] += 1
        successes[structure] += sum(1 for c in base.called if c.process_label == "PwCalculation" and c.is_finished_ok)
    rows = node.outputs.iterations.get_list() if "iterations" in node.outputs else []
    return {"bases": dict(bases), "successes": dict(successes), "exit_status": node.exit_status, "iterations": rows,
            "dataset_frames": node.outputs.dataset.n_frames if "dataset" in node.outputs else 0}  # fmt: skip


if __name__ == "__main__":
    command = sys.argv[2]
    result = {"setup": setup, "submit": submit_campaign}.get(command)
    output = result() if result else {"state": state, "labels": labels}[command](int(sys.argv[3]))
    print(json.dumps(output))
