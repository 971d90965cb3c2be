"""``annpot label``: a structure labelled by a registered ASE calculator, exactly as ASE gives it; an import path
or a structure the calculator cannot evaluate is bad input (exit 2, status file says why), nothing imported."""

from __future__ import annotations

import json
import sys

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from click.testing import CliRunner

from aiida_annpot.core.ase_label import process_seconds
from aiida_annpot.core.cli import cli


def label(tmp_path, atoms, **settings):
    ase.io.write(tmp_path / "structure.json", atoms, format="json")
    (tmp_path / "label.yaml").write_text(json.dumps({"structure": "structure.json", **settings}))
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = CliRunner().invoke(cli, ["label", str(tmp_path / "label.yaml"), "--workdir", str(workdir)])
    status = json.loads((workdir / "annpot_status.json").read_text())
    output = json.loads((workdir / "label.json").read_text()) if (workdir / "label.json").exists() else None
    return result, status, output


def test_label_is_emt_with_its_timings(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.65, cubic=True)
    atoms.rattle(0.05, seed=2)
    result, status, output = label(tmp_path, atoms, calculator="emt")
    assert result.exit_code == 0 and status["status"] == "finished"
    atoms.calc = EMT()
    assert output["energy"] == atoms.get_potential_energy()  # the structure file keeps every bit
    np.testing.assert_array_equal(output["forces"], atoms.get_forces())
    np.testing.assert_array_equal(output["stress"], atoms.get_stress(voigt=False))
    assert output["calculator"] == "emt" and 0 < output["compute_seconds"] < output["process_seconds"]


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"calculator": "evil.Calculator"}, "calculator 'evil.Calculator' is not a registered ASE calculator"),
        ({"calculator": "lj", "parameters": {"epsilon": 1.0, "command": "x"}}, "does not take parameter(s) command"),
    ],
)
def test_an_unregistered_calculator_is_bad_input(tmp_path, settings, expected):
    result, status, output = label(tmp_path, bulk("Cu", cubic=True), **settings)
    assert result.exit_code == 2 and status["status"] == "input_error" and expected in status["message"]
    assert output is None and "evil" not in sys.modules


def test_an_element_the_calculator_lacks_is_bad_input(tmp_path):
    result, status, _ = label(tmp_path, bulk("Si", "diamond", a=5.43), calculator="emt")
    assert result.exit_code == 2 and status["message"].startswith("emt cannot label Si2")


def test_process_seconds_counts_from_the_interpreter_start():
    assert process_seconds() > 0.1  # this process started a while ago (pytest's own start-up alone takes longer)
