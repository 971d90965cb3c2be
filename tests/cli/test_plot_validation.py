"""``aiida-annpot plot`` on a finished validation: the energy–volume curves and the NVE energy as PNG files; a node
that is neither a campaign nor a validation is still refused with a clear error."""

from __future__ import annotations

import pytest
from aiida.orm import Int

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_plot_of_a_validation_draws_the_energy_volume_curves(run_cli, si_validation, tmp_path):
    _, node = si_validation
    result = run_cli("plot", node.pk, "-o", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    for name in ("equation_of_state.png", "md_energy.png"):
        path = tmp_path / "plots" / name
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 10_000, name
        assert str(path) in result.output


@pytest.mark.slow
def test_plot_refuses_a_child_of_the_validation(run_cli, si_validation, tmp_path):
    _, node = si_validation
    reference = node.base.links.get_outgoing(link_label_filter="reference").one().node
    result = run_cli("plot", reference.pk, "-o", tmp_path / "out")
    assert result.exit_code != 0
    assert (
        f"node {reference.pk} is a WorkChainNode (ReferenceWorkChain), not an active-learning campaign or a validation"
    ) in result.output
    assert not (tmp_path / "out").exists()


def test_plot_refuses_a_data_node(run_cli, tmp_path):
    node = Int(5).store()
    result = run_cli("plot", node.pk, "-o", tmp_path / "out")
    assert result.exit_code != 0
    assert f"node {node.pk} is an Int, not an active-learning campaign or a validation" in result.output
    assert not (tmp_path / "out").exists()
