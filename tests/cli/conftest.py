"""Fixtures of the ``aiida-annpot`` command tests: invoking the command, writing campaign files, counting processes,
campaign-like nodes made by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiida.common.links import LinkType
from aiida.orm import WorkChainNode
from click.testing import CliRunner
from plumpy import ProcessState

from aiida_annpot.workflows.active_learning import ITERATIONS_EXTRA, ActiveLearningWorkChain


@pytest.fixture
def run_cli(aiida_profile):
    """Factory ``run_cli(*args) -> click Result``: ``aiida-annpot ARGS`` on the loaded test profile.

    Exceptions are not caught, so an unexpected traceback fails the test instead of passing as a nonzero exit code.
    """
    from aiida_annpot.cli import cmd_root

    def run(*args):
        try:
            return CliRunner().invoke(cmd_root, [str(arg) for arg in args], catch_exceptions=False)
        finally:
            _restore_process_logging()

    return run


def _restore_process_logging() -> None:
    """Undo what the CLI's verbosity option did to logging in this process.

    The option calls ``configure_logging()`` without the ORM handler, so processes run later in the same test
    session would store no report messages. A real ``aiida-annpot`` call loads its profile afterwards, which
    configures the handler again; here the profile is already loaded.
    """
    from aiida.common import log

    log.CLI_ACTIVE, log.CLI_LOG_LEVEL = None, None
    log.configure_logging(with_orm=True)


@pytest.fixture
def write_campaign(tmp_path, pw_code, annpot_code, si_pseudo_family):
    """Factory ``write_campaign(element="Si", **changes) -> Path``: a valid campaign file (fast protocol) for one
    diamond or fcc cell written as CIF next to it; ``changes`` replace top-level keys (``None`` removes one)."""
    import ase.io
    import yaml
    from ase.build import bulk

    def write(element: str = "Si", **changes) -> Path:
        atoms = bulk("Si", "diamond", a=5.43, cubic=True) if element == "Si" else bulk(element, "fcc", a=3.61)
        ase.io.write(tmp_path / "cell.cif", atoms)
        campaign = {
            "label": "cli-test",
            "protocol": "fast",
            "structures": {"cell": "cell.cif"},
            "pseudo_family": si_pseudo_family,
            "codes": {"reference": pw_code.full_label, "annpot": annpot_code.full_label},
            "overrides": {},
            "options": {},
        }
        campaign.update(changes)
        path = tmp_path / "campaign.yaml"
        path.write_text(yaml.safe_dump({k: v for k, v in campaign.items() if v is not None}, sort_keys=False))
        return path

    return write


@pytest.fixture
def count_processes(aiida_profile):
    """Factory ``count_processes() -> int``: ProcessNodes in the profile."""
    from aiida.orm import ProcessNode, QueryBuilder

    return lambda: QueryBuilder().append(ProcessNode).count()


#: Iteration rows as a running campaign publishes them: one finished iteration and the running one.
ROWS = [
    {
        "iteration": 1,
        "labels_submitted": 4,
        "labels_added": 4,
        "labels_failed": 0,
        "dataset_frames": 4,
        "validation": {"energy_rmse": 12.5, "force_rmse": 0.21},
        "frames": 20,
        "ratios": {"accurate": 0.6, "candidate": 0.3, "failed": 0.1},
        "out_of_range": 0.25,
        "selected": 3,
        "last_stage_ratios": {"accurate": 0.55, "candidate": 0.35, "failed": 0.1},
        "test_labels_failed": 1,
        "test": {"energy_rmse": 8.25, "force_rmse": 0.123, "bulk_modulus_error": -0.052, "vacancy_error": 0.41},
        "converged": False,
        "unmet": ["last stage accurate 0.600 < 0.9"],
    },
    {
        "iteration": 2,
        "labels_submitted": 3,
        "labels_added": 3,
        "labels_failed": 0,
        "dataset_frames": 7,
        "running": True,
    },
]


@pytest.fixture
def fake_campaign(aiida_profile):
    """Factory ``fake_campaign(rows=ROWS, paused=(), label="fake") -> WorkChainNode``: a waiting
    ActiveLearningWorkChain node with ``rows`` in its extra; ``paused`` names child work chains that are paused."""

    def make(rows=ROWS, paused=(), label="fake"):
        node = _process(ActiveLearningWorkChain.build_process_type(), "ActiveLearningWorkChain", label=label)
        node.store()
        node.base.extras.set(ITERATIONS_EXTRA, list(rows))
        for child_label in paused:
            child = _process("aiida.workflows:annpot.reference", "ReferenceWorkChain")
            child.base.links.add_incoming(node, LinkType.CALL_WORK, child_label)
            child.store()
            child.pause()
        return node

    return make


def _process(process_type: str, process_label: str, label: str = "") -> WorkChainNode:
    node = WorkChainNode(label=label)
    node.process_type = process_type
    node.set_process_label(process_label)
    node.set_process_state(ProcessState.WAITING)
    return node
