"""Extrapolation detection from descriptor ranges (ænet's approach): ranges from training, grades, model files,
the calculator's on-request properties, what ``annpot explore`` records and what ``annpot select`` picks with them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aiida_annpot.common.config import (
    ChebyshevConfig,
    ExplorationConfig,
    NetworkConfig,
    SelectionConfig,
    TrainingConfig,
)
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.cli import cli
from aiida_annpot.core.dataset import FeatureSet, read_frames
from aiida_annpot.core.exploration import FRAMES, SUMMARY, read_explored_frames, run_exploration
from aiida_annpot.core.model import RANGE_WIDTH_FLOOR, Potential
from aiida_annpot.core.modelfile import has_feature_ranges, load_potential, read_metadata, save_model
from aiida_annpot.core.selection import select_candidates, select_from_files
from aiida_annpot.core.training import Trainer, split_indices

QUIET = {"log": lambda line: None}


def grade(calc: AnnCalculator, atoms) -> float:
    return calc.get_property("extrapolation", atoms.copy())


def scaled(atoms, factor: float):
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell * factor, scale_atoms=True)
    return atoms


def per_element_ranges(potential: Potential, frames) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, D) minima and maxima of the features of ``frames``, element by element (a plain loop: the reference)."""
    features = FeatureSet(frames, potential, potential.dtype)
    species = torch.cat([item.species for item in features.items])
    stacked = torch.cat([item.features for item in features.items])
    rows = [stacked[species == element] for element in range(len(potential.elements))]
    return torch.stack([r.amin(0) for r in rows]), torch.stack([r.amax(0) for r in rows])


@pytest.fixture(scope="module")
def cu_au(tmp_path_factory, emt_frames, write_frames, training_settings):
    """A Cu + Au model trained on an internal 75/25 split of 16 frames: (config, model file)."""
    folder = tmp_path_factory.mktemp("ranges")
    write_frames(folder / "data.extxyz", emt_frames(n=8, seed=3) + emt_frames(n=8, seed=4, element="Au"))
    settings = training_settings(dataset=str(folder / "data.extxyz"), validation_fraction=0.25, max_epochs=2)
    config = TrainingConfig(**settings)
    assert Trainer(config, folder / "run", **QUIET).run().status == "finished"
    return config, folder / "run" / "model.safetensors"


# --- ranges from training --------------------------------------------------------------------------------------------


def test_ranges_are_the_training_splits_per_element_min_and_max(cu_au):
    config, model = cu_au
    frames = read_frames(config.dataset)
    train, validation = split_indices(len(frames), config)
    potential = load_potential(model)
    assert potential.elements == ["Au", "Cu"] and potential.feature_min.shape == (1, 2, potential.descriptor.n_features)
    lower, upper = per_element_ranges(potential, [frames[i] for i in train])
    assert torch.equal(potential.feature_min[0], lower) and torch.equal(potential.feature_max[0], upper)
    assert not torch.equal(lower[0], lower[1])  # per element: Au and Cu environments differ
    # the validation frames are not part of the ranges: some of them lie outside
    calc = AnnCalculator(potential)
    assert max(grade(calc, frames[i]) for i in validation) > 0.0
    assert [grade(calc, frames[i]) for i in train] == [0.0] * len(train)


def test_warm_start_sets_the_ranges_of_the_new_training_set(
    trained_model, emt_frames, write_frames, training_settings, tmp_path
):
    write_frames(tmp_path / "wide.extxyz", emt_frames(n=6, seed=7, strain=0.08))
    write_frames(tmp_path / "val.extxyz", emt_frames(n=2, seed=8))
    settings = training_settings(
        dataset=str(tmp_path / "wide.extxyz"),
        validation_dataset=str(tmp_path / "val.extxyz"),
        init_model=str(trained_model),
        max_epochs=1,
    )
    Trainer(TrainingConfig(**settings), tmp_path / "run", **QUIET).run()
    parent, child = load_potential(trained_model), load_potential(tmp_path / "run" / "model.safetensors")
    assert torch.equal(child.feature_mean, parent.feature_mean)  # standardisation inherited ...
    lower, upper = per_element_ranges(child, read_frames(tmp_path / "wide.extxyz"))
    assert torch.equal(child.feature_min[0], lower) and torch.equal(child.feature_max[0], upper)  # ... ranges not
    assert not torch.equal(child.feature_min, parent.feature_min)


# --- grades --------------------------------------------------------------------------------------------------------


def test_grade_formula_per_element_over_the_committee_union():
    """Against a per-atom loop: union of two members' ranges, a zero-width feature, an element without ranges."""
    descriptor = ChebyshevConfig(radial_order=3, angular_order=1, radial_cutoff=4.0, angular_cutoff=3.0)
    potential = Potential(["Au", "Cu"], descriptor, NetworkConfig(hidden=[4]), n_members=2).double()
    generator = torch.Generator().manual_seed(0)
    n_features = potential.descriptor.n_features
    low = torch.rand((2, n_features), generator=generator, dtype=torch.float64)
    potential.feature_min[:, 1] = low
    potential.feature_max[:, 1] = low + torch.rand((2, n_features), generator=generator, dtype=torch.float64)
    potential.feature_max[:, 1, 0] = potential.feature_min[:, 1, 0] = 0.5  # constant in training
    features = 2.0 * torch.rand((30, n_features), generator=generator, dtype=torch.float64) - 0.5
    species = torch.arange(30) % 2  # Au (no ranges: infinite) and Cu alternate
    grades = potential.extrapolation_grade(features, species)

    lo, hi = potential.feature_min[:, 1].amin(0), potential.feature_max[:, 1].amax(0)
    for atom in range(30):
        if species[atom] == 0:
            assert grades[atom] == 0.0
            continue
        g = features[atom]
        excess = torch.clamp(torch.maximum(lo - g, g - hi), min=0.0) / torch.clamp(hi - lo, min=RANGE_WIDTH_FLOOR)
        assert grades[atom] == pytest.approx(float(excess.max()), rel=1e-12)
    inside = potential.extrapolation_grade(torch.stack([lo, hi, (lo + hi) / 2]), torch.ones(3, dtype=torch.long))
    assert inside.tolist() == [0.0, 0.0, 0.0]
    # within rounding of a bound (features computed by other loops or in float32) is inside; beyond it is not
    scale = torch.maximum(lo.abs(), hi.abs())
    near = torch.stack([hi + 8 * 2.2e-16 * scale, lo - 8 * 2.2e-16 * scale, hi + 1e-9 * scale])
    assert potential.extrapolation_grade(near, torch.ones(3, dtype=torch.long)).tolist()[:2] == [0.0, 0.0]
    assert potential.extrapolation_grade(near, torch.ones(3, dtype=torch.long))[2] > 0.0
    single = potential.extrapolation_grade((hi + 1e-9 * scale).float().unsqueeze(0), torch.ones(1, dtype=torch.long))
    assert single.tolist() == [0.0]  # float32 features: 1e-9 relative is within their rounding


def test_training_frames_are_inside_and_strained_copies_outside(trained_model):
    """Every training frame (as read from the training file) grades exactly 0; a 10 % compressed and a 10 % expanded
    copy are flagged; a copy rattled by 0.01 Å, well inside the 0.1 Å rattles of the training set, is not."""
    calc = AnnCalculator(trained_model)
    frames = read_frames(trained_model.parent / "train.extxyz")
    assert [grade(calc, frame) for frame in frames] == [0.0] * len(frames)
    assert grade(calc, scaled(frames[0], 0.90)) > 1.0  # measured 3.4
    assert grade(calc, scaled(frames[0], 1.10)) > 0.5  # measured 1.5
    rattled = frames[0].copy()
    rattled.rattle(0.01, seed=5)
    assert grade(calc, rattled) == 0.0
    # in float32 the calculator's features round differently from the training features: tiny, not zero, grades
    calc32 = AnnCalculator(trained_model, dtype="float32")
    assert 0.0 <= max(grade(calc32, frame) for frame in frames) < 1e-4


def test_grades_are_invariant_under_translation_rotation_and_permutation(trained_model):
    calc = AnnCalculator(trained_model)
    atoms = scaled(read_frames(trained_model.parent / "train.extxyz")[0], 0.93).repeat((2, 1, 1))
    atoms.rattle(0.15, seed=1)
    reference = calc.get_property("extrapolation_atoms", atoms.copy())
    assert reference.shape == (len(atoms),) and reference.max() > 0.0 and reference.min() >= 0.0
    assert calc.get_property("extrapolation", atoms.copy()) == reference.max()

    moved = atoms.copy()
    moved.translate([0.37, -1.21, 2.05])
    moved.wrap()
    rotated = atoms.copy()
    rotated.rotate(37.0, (1.0, 2.0, 3.0), rotate_cell=True)
    perm = np.random.default_rng(0).permutation(len(atoms))
    for other, order in ((moved, slice(None)), (rotated, slice(None)), (atoms[perm], perm)):
        np.testing.assert_allclose(calc.get_property("extrapolation_atoms", other), reference[order], atol=1e-9)


def test_grades_are_computed_on_request_only(trained_model):
    calc = AnnCalculator(trained_model)
    atoms = scaled(bulk("Cu", "fcc", a=3.61, cubic=True), 0.9)
    atoms.calc = calc
    atoms.get_forces()
    assert "extrapolation" not in calc.results and "extrapolation_atoms" not in calc.results
    evaluation = calc._last
    assert calc.get_property("extrapolation", atoms) > 1.0
    assert calc._last is evaluation  # from the stored features: no new evaluation
    assert calc.get_property("fingerprint", atoms).shape == (calc.potential.descriptor.n_features,)
    assert calc._last is evaluation and {"extrapolation", "extrapolation_atoms", "forces"} <= set(calc.results)


# --- model files ---------------------------------------------------------------------------------------------------


def test_ranges_round_trip_through_the_model_file(trained_model, tmp_path):
    potential = load_potential(trained_model)
    assert torch.isfinite(potential.feature_min).all() and has_feature_ranges(trained_model)
    again = load_potential(save_model(potential, tmp_path / "copy.safetensors"))
    for name in ("feature_min", "feature_max"):
        assert torch.equal(getattr(again, name), getattr(potential, name))
    committee = load_potential([trained_model, tmp_path / "copy.safetensors"])
    assert committee.feature_min.shape[0] == 2 and torch.equal(committee.feature_min[1], potential.feature_min[0])


def old_model_file(model: Path, path: Path) -> Path:
    """``model`` as written before ranges were stored: the same tensors and metadata without the two ranges, format
    version 1 (before the digest)."""
    tensors = {name: t for name, t in load_file(model).items() if name not in ("feature_min", "feature_max")}
    metadata = {key: value for key, value in read_metadata(model).items() if key != "digest"}
    save_file(tensors, str(path), metadata={"annpot": json.dumps({**metadata, "format_version": 1})})
    return path


def test_a_model_file_without_ranges_loads_with_infinite_ranges(trained_model, tmp_path):
    old = old_model_file(trained_model, tmp_path / "old.safetensors")
    with safe_open(str(old), framework="pt") as handle:
        stored = set(handle.keys())
    assert "feature_min" not in stored and "feature_max" not in stored and "feature_mean" in stored
    assert not has_feature_ranges(old)
    potential = load_potential(old)
    assert (potential.feature_min == -math.inf).all() and (potential.feature_max == math.inf).all()
    compressed = scaled(read_frames(trained_model.parent / "train.extxyz")[0], 0.8)
    calc_old, calc_new = AnnCalculator(old), AnnCalculator(trained_model)
    assert calc_old.get_property("extrapolation_atoms", compressed.copy()).tolist() == [0.0] * len(compressed)
    assert grade(calc_new, compressed) > 1.0
    assert calc_old.get_potential_energy(compressed.copy()) == calc_new.get_potential_energy(compressed.copy())

    runner = CliRunner()
    assert "ranges:       training feature ranges stored" in runner.invoke(cli, ["info", str(trained_model)]).stdout
    assert "ranges:       none (extrapolation grade is 0)" in runner.invoke(cli, ["info", str(old)]).stdout


# --- exploration -----------------------------------------------------------------------------------------------------

#: a cold stage and a hot stage that leaves the training range of the small model
STAGES = [
    {"temperature": 50.0, "steps": 20, "sample_interval": 5},
    {"temperature": 3000.0, "steps": 40, "sample_interval": 5},
]


@pytest.fixture(scope="module")
def explored(trained_model, tmp_path_factory):
    """One committee member (σ = 0: the committee calls every frame accurate) from the training lattice and from a
    10 % compressed start, through both stages; ``annpot select`` over its frames ignores, then uses, the grades.
    (workdir, exploration summary, {mode: (selection summary, selected.extxyz)})."""
    folder = tmp_path_factory.mktemp("explore_extrapolation")
    starts = [bulk("Cu", "fcc", a=3.61, cubic=True), bulk("Cu", "fcc", a=0.9 * 3.61, cubic=True)]
    ase.io.write(folder / "start.extxyz", starts)
    config = ExplorationConfig(
        models=[str(trained_model)], structures=str(folder / "start.extxyz"), threads=1, stages=STAGES, seed=1
    )
    summary = run_exploration(config, folder / "run", **QUIET)
    selections = {}
    for mode in ("ignore", "candidate"):
        settings = SelectionConfig(extrapolation=mode, extrapolation_tolerance=0.01, max_candidates=3)
        output = folder / mode / "selected.extxyz"
        output.parent.mkdir()
        selections[mode] = (select_from_files([str(folder / "run" / FRAMES)], settings, output=output), output)
    return folder / "run", summary, selections


def test_exploration_records_out_of_range_frames_and_selection_counts_them(explored):
    workdir, summary, selections = explored
    frames, _ = read_explored_frames(workdir / FRAMES)
    grades = np.array([f.info["extrapolation"] for f in frames])
    structure = np.array([f.info["structure"] for f in frames])
    stage = np.array([f.info["stage"] for f in frames])
    assert len(frames) == summary["frames"] == 24 and np.isfinite(grades).all() and (grades >= 0).all()
    assert (grades[structure == 1] > 1.0).all()  # the compressed start, cold or hot
    assert (grades[(structure == 0) & (stage == 0)] <= 0.01).all()  # 50 K on the training lattice: inside
    assert grades[(structure == 0) & (stage == 1)][-1] > 1.0  # 3000 K leaves the range
    # the exploration records grades; the selection counts them
    assert "extrapolation" not in summary and "extrapolation" not in json.loads((workdir / SUMMARY).read_text())
    selection, output = selections["candidate"]
    out = grades > 0.01
    assert selection["extrapolation"] == {
        "tolerance": 0.01,
        "out_of_range": int(out.sum()),
        "ratio": pytest.approx(out.mean()),
        "promoted": int(out.sum()),
    }
    for entry in selection["stages"]:
        mine = stage == entry["stage"]
        assert entry["extrapolation"]["out_of_range"] == int(out[mine].sum())
        assert entry["extrapolation"]["ratio"] == pytest.approx(out[mine].mean())
    assert selection["stages"][1]["extrapolation"]["ratio"] > selection["stages"][0]["extrapolation"]["ratio"]
    on_disk = json.loads((output.parent / "selection.json").read_text())
    assert on_disk["extrapolation"] == selection["extrapolation"]


def test_selection_promotes_only_with_candidate(explored):
    workdir, _, selections = explored
    (ignore, _), (candidate, candidate_file) = selections["ignore"], selections["candidate"]
    frames, fingerprints = read_explored_frames(workdir / FRAMES)
    grades = np.array([f.info["extrapolation"] for f in frames])
    assert ignore["counts"] == {"accurate": 24, "candidate": 0, "failed": 0}  # a committee of one always agrees
    assert ignore["selected"] == [] and ignore["extrapolation"]["promoted"] == 0
    assert candidate["counts"] == ignore["counts"]  # the committee's classification is unchanged
    assert candidate["extrapolation"]["promoted"] == int((grades > 0.01).sum()) > 3
    picks = candidate["selected"]
    assert len(picks) == sum(pick["promoted"] for pick in picks) == 3  # the cap, all of them promoted
    assert all(pick["extrapolation"] > 0.01 for pick in picks)
    # the picks the exploration engine made when it still selected: the same call on the recorded quantities
    sigma, distance = (np.array([f.info[key] for f in frames]) for key in ("max_force_std", "min_distance"))
    config = SelectionConfig(extrapolation="candidate", extrapolation_tolerance=0.01, max_candidates=3)
    engine = select_candidates(sigma, distance, fingerprints, config, None, grades)
    keys = ("structure", "stage", "step")
    assert [tuple(p[key] for key in keys) for p in picks] == [
        tuple(int(frames[i].info[key]) for key in keys) for i in engine.selected
    ]
    written = ase.io.read(candidate_file, index=":")
    assert [tuple(atoms.info[key] for key in keys) for atoms in written] == [
        tuple(p[key] for key in keys) for p in picks
    ]
    assert [atoms.info["extrapolation"] for atoms in written] == pytest.approx([p["extrapolation"] for p in picks])
    assert [str(atoms.info["start"]) for atoms in written] == [str(p["structure"]) for p in picks]
