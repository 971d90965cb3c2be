"""select_candidates: frames files as ``annpot explore`` or ``annpot score`` write them → classification, the engine's
picks (the same as ``annpot select``'s), each naming its start structure, and links."""

from __future__ import annotations

import io
import math

import ase.io
import numpy as np
import pytest
from aiida.orm import ArrayData, Dict, SinglefileData, StructureData
from ase import Atoms
from ase.build import bulk

from aiida_annpot.calcfunctions import select_candidates
from aiida_annpot.common.config import SelectionConfig
from aiida_annpot.core import selection
from aiida_annpot.core.explored import read_explored_frames

#: trust window [0.05, 0.5) eV/Å, candidates closer than 1.8 Å are unphysical, at most 3 picks
SETTINGS = {"trust_lo": 0.05, "trust_hi": 0.5, "min_distance": 1.8, "duplicate_threshold": 0.0, "max_candidates": 3}

#: (stage, σ_F^max in eV/Å, smallest distance in Å) per frame of the two exploration jobs
FRAMES_A = [
    (0, 0.01, 2.2),
    (0, 0.02, 2.25),
    (0, 0.10, 2.2),
    (0, 0.20, 2.3),
    (1, 0.04, 2.2),
    (1, 0.30, 1.5),
    (1, 0.70, 2.0),
    (1, 0.15, 2.1),
]
FRAMES_B = [(0, 0.03, math.inf), (1, 0.25, 2.3), (1, 0.45, 2.2), (1, math.nan, 1.0)]


def explored_frames(rows, structure: int, seed: int, start: str | None = None) -> list[Atoms]:
    """Frames with the info and arrays of ``aiida_annpot.core.scoring.record_frame``; fingerprints in 5-D. Without
    ``start`` (and without ``extrapolation``) they are frames of a file written before those were recorded."""
    rng = np.random.default_rng(seed)
    frames = []
    for step, (stage, sigma, distance) in enumerate(rows, start=1):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.positions += np.round(rng.normal(scale=0.05, size=atoms.positions.shape), 6)
        frame = Atoms(
            numbers=atoms.numbers,
            positions=atoms.positions,
            cell=atoms.cell.array,
            pbc=atoms.pbc,
            momenta=rng.normal(scale=0.1, size=atoms.positions.shape),
        )
        frame.info.update(
            {
                "structure": structure,
                "stage": stage,
                "step": 10 * step,
                "temperature": 300.0 * (stage + 1),
                "energy": -40.0 + 0.01 * step,
                "energy_std": sigma / 10,
                "max_force_std": sigma,
                "min_distance": distance,
                "fingerprint": np.round(rng.uniform(-1.0, 1.0, size=5), 6),
            }
        )
        if start is not None:
            frame.info["start"] = start
        frame.arrays["forces_std"] = np.abs(rng.normal(scale=0.05, size=(len(frame), 3)))
        frames.append(frame)
    return frames


def frames_file(frames: list[Atoms]) -> SinglefileData:
    """The frames as the ``frames`` output of an exploration job (one extxyz file; empty without frames)."""
    text = io.StringIO()
    for frame in frames:  # one write per frame, like the engine
        ase.io.write(text, frame, format="extxyz")
    return SinglefileData(io.BytesIO(text.getvalue().encode()), filename="frames.extxyz")


def engine_arrays(*files: SinglefileData):
    """σ, smallest distances, stages, fingerprints and frames of ``files`` concatenated, read as the engine does."""
    frames, prints = [], []
    for node in files:
        with node.as_path() as path:
            part, fingerprints = read_explored_frames(path)
        frames.extend(part)
        if part:
            prints.append(fingerprints)
    sigma = np.array([f.info["max_force_std"] for f in frames], dtype=float)
    distance = np.array([f.info["min_distance"] for f in frames], dtype=float)
    stage = np.array([f.info["stage"] for f in frames], dtype=int)
    return sigma, distance, stage, np.concatenate(prints), frames


@pytest.fixture(scope="module")
def files():
    return {
        "a": frames_file(explored_frames(FRAMES_A, 0, seed=1, start="si_bulk")),
        "b": frames_file(explored_frames(FRAMES_B, 1, seed=2)),  # written before frames named their start
    }


@pytest.fixture(scope="module")
def outputs(files):
    return select_candidates(selection_settings=Dict(SETTINGS), frames_a=files["a"], frames_b=files["b"])


def test_the_files_keep_the_values_written(files):
    sigma, distance, stage, fingerprints, frames = engine_arrays(files["a"], files["b"])
    rows = FRAMES_A + FRAMES_B
    np.testing.assert_array_equal(sigma, [row[1] for row in rows])  # NaN included
    np.testing.assert_array_equal(distance, [row[2] for row in rows])
    assert stage.tolist() == [row[0] for row in rows] and fingerprints.shape == (12, 5)
    assert all(frame.calc is None and "forces_std" in frame.arrays for frame in frames)


def test_classification_overall_and_per_stage(outputs):
    summary = outputs["summary"].get_dict()
    # accurate σ < 0.05: 0.01 0.02 0.04 0.03; failed σ ≥ 0.5 or NaN: 0.70 NaN; the other six are candidates
    assert summary["frames"] == 12
    assert summary["counts"] == {"accurate": 4, "candidate": 6, "failed": 2}
    assert summary["ratios"] == pytest.approx({"accurate": 4 / 12, "candidate": 6 / 12, "failed": 2 / 12})
    stages = {entry["stage"]: entry for entry in summary["stages"]}
    assert [entry["stage"] for entry in summary["stages"]] == [0, 1]
    assert stages[0]["frames"] == 5 and stages[0]["counts"] == {"accurate": 3, "candidate": 2, "failed": 0}
    assert stages[0]["ratios"] == pytest.approx({"accurate": 0.6, "candidate": 0.4, "failed": 0.0})
    assert stages[1]["frames"] == 7 and stages[1]["counts"] == {"accurate": 1, "candidate": 4, "failed": 2}
    assert stages[1]["ratios"] == pytest.approx({"accurate": 1 / 7, "candidate": 4 / 7, "failed": 2 / 7})
    # one candidate (σ 0.30) has atoms 1.5 Å apart: 5 physical candidates, 3 picked
    assert summary["selection_counts"] == {
        "accurate": 4,
        "failed": 2,
        "too_close": 1,
        "duplicate": 0,
        "not_selected": 2,
        "selected": 3,
    }


def test_the_picks_are_the_engines_in_the_same_order(files, outputs):
    sigma, distance, stage, fingerprints, frames = engine_arrays(files["a"], files["b"])
    expected = selection.select_candidates(sigma, distance, fingerprints, SelectionConfig(**SETTINGS))
    assert len(expected.selected) == 3
    assert sigma[expected.selected[0]] == 0.45  # without a reference set the largest σ is picked first

    picks = outputs["summary"]["selected"]
    origin = ["frames_a"] * len(FRAMES_A) + ["frames_b"] * len(FRAMES_B)
    assert [(p["origin"], p["structure"], p["stage"], p["step"]) for p in picks] == [
        (origin[i], int(frames[i].info["structure"]), int(stage[i]), int(frames[i].info["step"]))
        for i in expected.selected
    ]
    assert [p["max_force_std"] for p in picks] == pytest.approx(sigma[expected.selected].tolist())
    assert [p["start"] for p in picks] == [frames[i].info.get("start") for i in expected.selected]
    assert {p["origin"]: p["start"] for p in picks} == {"frames_a": "si_bulk", "frames_b": None}

    structures = sorted(key for key in outputs if key.startswith("structure_"))
    assert structures == ["structure_000", "structure_001", "structure_002"]
    for key, index in zip(structures, expected.selected, strict=True):
        node = outputs[key]
        assert isinstance(node, StructureData)
        atoms = node.get_ase()
        np.testing.assert_allclose(atoms.positions, frames[index].positions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(atoms.cell.array, frames[index].cell.array, rtol=0, atol=1e-12)
        assert atoms.get_chemical_symbols() == ["Si"] * 8 and atoms.pbc.all()


def rounded(value):
    """``value`` with every float rounded to 12 significant digits (NaN and None kept), containers recursed."""
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item) for item in value]
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.12g}")
    return value


def test_annpot_select_over_the_same_files_picks_the_same(files, outputs, tmp_path):
    """The calcfunction and ``annpot select`` go through one selection: the same summary and the same structures,
    apart from how the origin is named (the input link label there, the file path here)."""
    paths = []
    for key in ("a", "b"):
        paths.append(tmp_path / f"{key}.extxyz")
        paths[-1].write_bytes(files[key].get_content(mode="rb"))
    summary = selection.select_from_files(
        [str(path) for path in paths], SelectionConfig(**SETTINGS), output=tmp_path / "selected.extxyz"
    )
    expected = outputs["summary"].get_dict()
    origin = {str(paths[0]): "frames_a", str(paths[1]): "frames_b"}
    renamed = {**summary, "selected": [{**pick, "origin": origin[pick["origin"]]} for pick in summary["selected"]]}
    assert rounded(renamed) == rounded(expected)  # a Dict node keeps floats to about 14 digits
    written = ase.io.read(tmp_path / "selected.extxyz", ":")
    for rank, atoms in enumerate(written):
        np.testing.assert_allclose(atoms.positions, outputs[f"structure_{rank:03d}"].get_ase().positions, atol=1e-12)
        assert atoms.info.get("start") == expected["selected"][rank]["start"]  # absent where unknown


def test_the_deviations_array(files, outputs):
    sigma, distance, stage, fingerprints, _ = engine_arrays(files["a"], files["b"])
    deviations = outputs["deviations"]
    assert isinstance(deviations, ArrayData)
    np.testing.assert_array_equal(deviations.get_array("max_force_std"), sigma)  # key order a, b; NaN kept
    assert deviations.get_array("stage").tolist() == stage.tolist()
    expected = selection.select_candidates(sigma, distance, fingerprints, SelectionConfig(**SETTINGS))
    mask = deviations.get_array("selected")
    assert mask.dtype == bool and np.flatnonzero(mask).tolist() == sorted(expected.selected.tolist())


def test_the_picks_are_linked_to_the_frames_they_came_from(files, outputs):
    creator = outputs["structure_000"].creator
    assert creator.process_label == "select_candidates"
    assert {outputs[key].creator.uuid for key in outputs} == {creator.uuid}
    incoming = {link.link_label: link.node.uuid for link in creator.base.links.get_incoming().all()}
    assert incoming["frames_a"] == files["a"].uuid and incoming["frames_b"] == files["b"].uuid
    assert "selection_settings" in incoming
    outgoing = {link.link_label for link in creator.base.links.get_outgoing().all()}
    assert outgoing == {"structure_000", "structure_001", "structure_002", "summary", "deviations"}


def test_files_are_read_in_key_order(files):
    swapped = select_candidates(selection_settings=Dict(SETTINGS), frames_x=files["b"], frames_w=files["a"])
    sigma_a = [row[1] for row in FRAMES_A]
    sigma_b = [row[1] for row in FRAMES_B]
    np.testing.assert_array_equal(swapped["deviations"].get_array("max_force_std"), sigma_a + sigma_b)
    origins = {pick["origin"] for pick in swapped["summary"]["selected"]}
    assert origins <= {"frames_w", "frames_x"}
    reverse = select_candidates(selection_settings=Dict(SETTINGS), frames_1=files["b"], frames_2=files["a"])
    np.testing.assert_array_equal(reverse["deviations"].get_array("max_force_std"), sigma_b + sigma_a)


def test_reference_fingerprints_trigger_the_duplicate_filter(files):
    sigma, distance, _, fingerprints, _ = engine_arrays(files["a"], files["b"])
    top = int(np.nanargmax(np.where(sigma < 0.5, sigma, -1.0)))  # the σ 0.45 candidate, picked first without reference
    reference = ArrayData()
    reference.set_array("fingerprints", fingerprints[[top]] + 1e-4)
    settings = {**SETTINGS, "duplicate_threshold": 0.01}
    result = select_candidates(
        selection_settings=Dict(settings), reference_fingerprints=reference, frames_a=files["a"], frames_b=files["b"]
    )

    expected = selection.select_candidates(
        sigma, distance, fingerprints, SelectionConfig(**settings), reference.get_array("fingerprints")
    )
    assert expected.status[top] == "duplicate" and top not in expected.selected
    summary = result["summary"].get_dict()
    assert summary["selection_counts"]["duplicate"] == 1 and summary["selection_counts"]["selected"] == 3
    assert [p["max_force_std"] for p in summary["selected"]] == pytest.approx(sigma[expected.selected].tolist())
    assert 0.45 not in [p["max_force_std"] for p in summary["selected"]]
    assert not result["deviations"].get_array("selected")[top]
    link = result["summary"].creator.base.links.get_incoming(link_label_filter="reference_fingerprints").one()
    assert link.node.uuid == reference.uuid


def test_an_empty_frames_file_gives_zero_frames(files):
    empty = frames_file([])
    result = select_candidates(selection_settings=Dict(SETTINGS), frames_0=empty)
    summary = result["summary"].get_dict()
    assert summary["frames"] == 0 and summary["stages"] == [] and summary["selected"] == []
    assert summary["counts"] == {"accurate": 0, "candidate": 0, "failed": 0}
    assert summary["ratios"] == {"accurate": 0.0, "candidate": 0.0, "failed": 0.0}
    assert not [key for key in result if key.startswith("structure_")]
    assert result["deviations"].get_array("max_force_std").shape == (0,)

    mixed = select_candidates(selection_settings=Dict(SETTINGS), frames_0=empty, frames_1=files["b"])
    assert mixed["summary"]["frames"] == len(FRAMES_B)
    np.testing.assert_array_equal(mixed["deviations"].get_array("max_force_std"), [row[1] for row in FRAMES_B])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trust_lo": 0.5, "trust_hi": 0.1}, r"trust_lo \(0.5\) must be below trust_hi \(0.1\)"),
        ({"trust_lo": 0.2, "trust_hi": 0.2}, r"trust_lo \(0.2\) must be below trust_hi \(0.2\)"),
        ({"max_candidate": 3}, "max_candidate: Extra inputs are not permitted"),
    ],
)
def test_invalid_selection_settings_raise(files, changes, message):
    with pytest.raises(ValueError, match=message):
        select_candidates(selection_settings=Dict({**SETTINGS, **changes}), frames_a=files["a"])
