"""assemble_committee: single-model potentials of parallel trainings become one committee, members in key order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from aiida_annpot.calcfunctions import assemble_committee
from aiida_annpot.common.config import ChebyshevConfig, NetworkConfig, TrainingConfig, load_config
from aiida_annpot.core.errors import ModelFileError
from aiida_annpot.core.model import Potential
from aiida_annpot.core.modelfile import read_metadata, save_model
from aiida_annpot.core.training import MODEL, Trainer
from aiida_annpot.data import AnnPotential


@pytest.fixture(scope="module")
def second_model(trained_model, training_settings, write_config, tmp_path_factory):
    """The ``trained_model`` training again with seed 1: same architecture, different weights."""
    folder = tmp_path_factory.mktemp("second_model")
    settings = training_settings(
        seed=1,
        dataset=str(trained_model.parent / "train.extxyz"),
        validation_dataset=str(trained_model.parent / "validation.extxyz"),
    )
    config = load_config(write_config(folder / "train.yaml", settings), TrainingConfig)
    assert Trainer(config, folder, log=lambda line: None).run().status == "finished"
    return folder / MODEL


@pytest.fixture(scope="module")
def singles(trained_model, second_model):
    """The two trainings as stored single-member potentials (seed 0, seed 1)."""
    return [AnnPotential.from_files([path]).store() for path in (trained_model, second_model)]


def test_two_singles_make_a_committee_of_two_in_key_order(trained_model, second_model, singles):
    assert trained_model.read_bytes() != second_model.read_bytes()
    # keys deliberately given in reverse: the order of the members is that of the sorted keys
    committee = assemble_committee(member_1=singles[1], member_0=singles[0])

    assert isinstance(committee, AnnPotential) and committee.is_stored
    assert committee.committee_size == 2 and committee.elements == ["Cu"]
    assert committee.member_bytes(0) == singles[0].member_bytes(0) == trained_model.read_bytes()
    assert committee.member_bytes(1) == singles[1].member_bytes(0) == second_model.read_bytes()
    assert committee.base.attributes.get("descriptor") == singles[0].base.attributes.get("descriptor")
    assert committee.base.attributes.get("network") == singles[0].base.attributes.get("network")
    metrics = [read_metadata(path)["metrics"]["validation"] for path in (trained_model, second_model)]
    stored = [member["validation"] for member in committee.base.attributes.get("metrics")]
    assert [m["force_rmse"] for m in stored] == pytest.approx([m["force_rmse"] for m in metrics], rel=1e-12)
    assert stored[0]["force_rmse"] != pytest.approx(stored[1]["force_rmse"], rel=1e-9)

    creator = committee.creator
    assert creator.process_label == "assemble_committee"
    incoming = {link.link_label: link.node.uuid for link in creator.base.links.get_incoming().all()}
    assert incoming == {"member_0": singles[0].uuid, "member_1": singles[1].uuid}


def test_member_order_is_numeric_not_lexical(singles):
    """member_2 comes before member_10, so member k of the committee is input member_k (warm starts rely on it)."""
    committee = assemble_committee(member_10=singles[1], member_2=singles[0])
    assert committee.member_bytes(0) == singles[0].member_bytes(0)
    assert committee.member_bytes(1) == singles[1].member_bytes(0)


def test_the_committee_predicts_as_its_members(singles):
    committee = assemble_committee(member_0=singles[0], member_1=singles[1])
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=3)
    energies = []
    for single in singles:
        atoms.calc = single.calculator()
        energies.append(atoms.get_potential_energy())
    atoms.calc = committee.calculator()
    assert energies[0] != pytest.approx(energies[1], abs=1e-9)  # the seeds made different models
    assert atoms.get_potential_energy() == pytest.approx(np.mean(energies), abs=1e-10)
    assert atoms.calc.results["max_force_std"] > 0


def test_a_committee_member_input_contributes_all_its_members(singles):
    pair = assemble_committee(member_0=singles[0], member_1=singles[1])
    triple = assemble_committee(a=pair, b=singles[0])
    assert triple.committee_size == 3
    assert [triple.member_bytes(i) for i in range(3)] == [
        pair.member_bytes(0),
        pair.member_bytes(1),
        singles[0].member_bytes(0),
    ]


def test_mismatched_architectures_raise(singles, trained_model, tmp_path):
    metadata = read_metadata(trained_model)
    descriptor = ChebyshevConfig.model_validate(metadata["descriptor"])
    other = Potential(["Cu"], descriptor, NetworkConfig(hidden=[6]))  # one hidden layer of 6, not 8
    other.double().networks.reset_parameters(torch.Generator().manual_seed(0))
    mismatched = AnnPotential.from_files([save_model(other, tmp_path / "other.safetensors")]).store()

    with pytest.raises(ModelFileError, match="committee members need the same elements, descriptor and network"):
        assemble_committee(member_0=singles[0], member_1=mismatched)


def test_no_member_raises():
    with pytest.raises(ValueError, match="at least one member potential"):
        assemble_committee()
