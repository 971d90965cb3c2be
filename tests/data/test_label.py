"""annpot.label: one structure's reference label in the engine's units, checked when it is built."""

from __future__ import annotations

import math

import numpy as np
import pytest
from aiida.orm import load_node
from aiida.plugins import DataFactory

from aiida_annpot.data import LabelData

UUID = "0c3f5e3a-1111-4a4b-9c9d-000000000001"


def test_entry_point_loads_the_class():
    assert DataFactory("annpot.label") is LabelData


def test_a_stored_label_keeps_energy_forces_stress_and_its_calculation(aiida_profile):
    forces = np.arange(24, dtype=float).reshape(8, 3) / 10
    stress = np.array([[-0.03, 0.002, -0.001], [0.002, -0.025, 0.0006], [-0.001, 0.0006, -0.02]])
    node = LabelData.build(-850.25, forces, stress, calculation_uuid=UUID, code="quantumespresso").store()
    loaded = load_node(node.pk)
    assert isinstance(loaded, LabelData)
    assert loaded.energy == -850.25 and loaded.calculation_uuid == UUID and loaded.code == "quantumespresso"
    np.testing.assert_array_equal(loaded.forces, forces)
    np.testing.assert_array_equal(loaded.stress, stress)
    assert loaded.base.attributes.get("n_atoms") == 8


def test_a_voigt_stress_becomes_the_symmetric_tensor_and_none_stays_none(aiida_profile):
    voigt = [1.0, 2.0, 3.0, 0.4, 0.5, 0.6]  # xx yy zz yz xz xy
    label = LabelData.build(-1.0, np.zeros((2, 3)), voigt, calculation_uuid=UUID, code="test")
    np.testing.assert_array_equal(label.stress, [[1.0, 0.6, 0.5], [0.6, 2.0, 0.4], [0.5, 0.4, 3.0]])
    assert LabelData.build(-1.0, np.zeros((2, 3)), None, calculation_uuid=UUID, code="test").stress is None


@pytest.mark.parametrize(
    ("energy", "forces", "stress", "message"),
    [
        (None, np.zeros((8, 3)), None, r"no finite total energy \(energy = None\)"),
        (math.nan, np.zeros((8, 3)), None, r"no finite total energy \(energy = nan\)"),
        (math.inf, np.zeros((8, 3)), None, r"no finite total energy \(energy = inf\)"),
        (-1.0, np.full((8, 3), np.nan), None, r"forces of shape \(8, 3\) or not finite"),
        (-1.0, np.zeros((8, 2)), None, r"forces of shape \(8, 2\) or not finite"),
        (-1.0, np.zeros(24), None, r"forces of shape \(24,\) or not finite"),
        (-1.0, np.zeros((8, 3)), np.zeros((2, 3)), r"stress of shape \(2, 3\) or not finite"),
        (-1.0, np.zeros((8, 3)), np.full((3, 3), np.inf), r"stress of shape \(3, 3\) or not finite"),
    ],
)
def test_an_unusable_label_is_refused_when_built(aiida_profile, energy, forces, stress, message):
    with pytest.raises(ValueError, match=message):
        LabelData.build(energy, forces, stress, calculation_uuid=UUID, code="test")
