"""The finished validation of the fast Si campaign's potential, shared by the work chain and the ``plot`` tests.

Imported as a fixture by both test modules; the finished node is looked up in the session's profile first, so the
validation runs once per session however many modules use it.
"""

from __future__ import annotations

import pytest
from aiida.common.links import LinkType

from aiida_annpot.workflows.validation import ValidationWorkChain

#: Five volumes of ±8 %, the vacancy in the 8-atom cell, 0.4 ps of NVE on it: a few minutes with pw.x on 2 cores.
SI_CONFIG = {
    "equation_of_state": {"points": 5, "max_volume_strain": 0.08},
    "vacancy": {"supercell": [1, 1, 1], "site": 0},
    "md_stability": {"supercell": [1, 1, 1], "temperature": 300.0, "steps": 400, "timestep": 1.0,
                     "sample_interval": 5},
}  # fmt: skip


def _finished(potential):
    for link in potential.base.links.get_outgoing(link_type=LinkType.INPUT_WORK).all():
        node = link.node
        if node.process_label == "ValidationWorkChain" and node.inputs.config.get_dict() == SI_CONFIG:
            return node
    return None


@pytest.fixture(scope="session")
def si_validation(fast_si_campaign):
    """(builder, node) of ValidationWorkChain on the fast Si campaign's potential with :data:`SI_CONFIG`."""
    from aiida.engine import run_get_node

    _, campaign = fast_si_campaign
    builder = ValidationWorkChain.get_builder_from_campaign(campaign, config=SI_CONFIG)
    node = _finished(campaign.outputs.potential)
    if node is None:
        _, node = run_get_node(builder)
    return builder, node
