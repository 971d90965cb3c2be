"""annpot.potential: model files in the repository, attributes, export, calculator, mismatched members."""

import numpy as np
import pytest
import torch
from aiida.orm import QueryBuilder, load_node
from aiida.plugins import DataFactory
from ase.build import bulk

from aiida_annpot.common.config import ChebyshevConfig, NetworkConfig
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.errors import ModelFileError
from aiida_annpot.core.model import Potential
from aiida_annpot.core.modelfile import save_model
from aiida_annpot.data import AnnPotential


def member(path, seed: int, radial_order: int = 4):
    potential = Potential(
        ["Cu"], ChebyshevConfig(radial_order=radial_order, angular_order=2), NetworkConfig(hidden=[6])
    )
    potential.double().networks.reset_parameters(torch.Generator().manual_seed(seed))
    potential.feature_std.fill_(2.0)
    return save_model(potential, path, metrics={"validation": {"force_rmse": 0.01 * (seed + 1)}}, dataset_hash="abc")


@pytest.fixture
def members(tmp_path):
    return [member(tmp_path / f"m{seed}.safetensors", seed) for seed in range(3)]


def test_entry_point_loads_the_class():
    assert DataFactory("annpot.potential") is AnnPotential


def test_files_are_stored_verbatim_and_attributes_are_queryable(members, tmp_path):
    node = AnnPotential.from_files(members).store()
    loaded = load_node(node.pk)
    exported = loaded.export(tmp_path / "export")
    assert [p.read_bytes() for p in exported] == [p.read_bytes() for p in members]
    assert loaded.committee_size == 3 and loaded.elements == ["Cu"]
    assert loaded.base.attributes.get("descriptor")["radial_order"] == 4
    assert [m["validation"]["force_rmse"] for m in loaded.base.attributes.get("metrics")] == [0.01, 0.02, 0.03]
    query = QueryBuilder().append(AnnPotential, filters={"attributes.committee_size": 3, "id": node.pk})
    assert query.count() == 1


def test_calculator_matches_the_files(members):
    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=3)
    reference = atoms.copy()
    reference.calc = AnnCalculator([str(p) for p in members])
    atoms.calc = AnnPotential.from_files(members).store().calculator()
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-12)
    assert atoms.calc.results["max_force_std"] > 0  # three different members


def test_members_of_different_architectures_are_rejected(tmp_path, members):
    other = member(tmp_path / "other.safetensors", 0, radial_order=6)
    with pytest.raises(ModelFileError, match="does not match"):
        AnnPotential.from_files([members[0], other])
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(ModelFileError):
        AnnPotential.from_files([tmp_path / "junk.safetensors"])
