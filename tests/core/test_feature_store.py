"""Bounded-memory training: features on disk give the batches, statistics and trained weights of features in
memory; the size estimate, the memory budget and the cgroup limit choose between them up front."""

from __future__ import annotations

import csv
import itertools
import threading

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from safetensors.torch import load_file

from aiida_annpot.common.config import ChebyshevConfig, ConfigError, NetworkConfig, TrainingConfig, load_config
from aiida_annpot.core import disk_features, feature_store
from aiida_annpot.core.dataset import FeatureSet
from aiida_annpot.core.disk_features import DiskFeatureSet
from aiida_annpot.core.errors import InputDataError
from aiida_annpot.core.feature_statistics import FeatureStatistics
from aiida_annpot.core.feature_store import SCRATCH_FOLDER, STRUCTURE_OVERHEAD, estimate_feature_bytes
from aiida_annpot.core.model import Potential
from aiida_annpot.core.training import CURVE, MODEL, Trainer

DESCRIPTOR = ChebyshevConfig(radial_order=6, angular_order=3, radial_cutoff=4.5, angular_cutoff=3.5)
SETTINGS = {
    "descriptor": DESCRIPTOR.model_dump(),
    "network": {"hidden": [8, 8]},
    "loss": {"energy_weight": 10.0, "force_weight": 1.0, "stress_weight": 0.1},
    "learning_rate": 1e-2,
    "lr_patience": 1,
    "batch_size": 3,
    "max_epochs": 4,
    "checkpoint_interval": 1,
    "dtype": "float64",
    "seed": 2,
    "threads": 1,
}


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def labelled(atoms: Atoms, *labels: str) -> Atoms:
    atoms.calc = EMT()
    values = {name: atoms.calc.get_property(name, atoms) for name in labels}
    atoms.calc = SinglePointCalculator(atoms, **values)
    return atoms


def cu_au_frames(n: int, seed: int = 0) -> list[Atoms]:
    """Rattled CuAu cells (8 to 32 atoms) with energy, forces and stress; frame 1 lacks stress, frame 2 forces, and
    frame 3 is a non-periodic cluster (no volume)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.7 * rng.uniform(0.98, 1.02), cubic=True).repeat((1 + k % 2, 2, 1 + k % 3 // 2))
        atoms.numbers[rng.random(len(atoms)) < 0.4] = 79
        atoms.rattle(0.08, seed=int(rng.integers(1 << 31)))
        if k == 3:
            atoms.pbc = False
        labels = ("energy", "forces", "stress") if atoms.pbc.all() and k != 1 else ("energy", "forces")
        frames.append(labelled(atoms, *(label for label in labels if not (k == 2 and label == "forces"))))
    return frames


@pytest.fixture(scope="module")
def frames():
    return cu_au_frames(14)


@pytest.fixture(scope="module")
def potential():
    return Potential(["Au", "Cu"], DESCRIPTOR, NetworkConfig(hidden=[8])).to(torch.float64)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "cu_au.extxyz"
    frames = cu_au_frames(16, seed=1)
    ase.io.write(path, [f for k, f in enumerate(frames) if k != 2])  # forces everywhere: training needs them
    return path


def assert_batches_identical(disk, memory) -> None:
    for name in ("species", "features", "jacobian", "structure_index", "n_atoms", "volumes", "energy", "forces"):
        a, b = getattr(disk, name), getattr(memory, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=name)
    for name in ("first", "second", "vectors"):
        assert torch.equal(getattr(disk.pairs, name), getattr(memory.pairs, name)), name
    assert disk.pairs.n_atoms == memory.pairs.n_atoms
    assert (disk.stress is None) == (memory.stress is None)
    if memory.stress is not None:
        assert torch.equal(disk.stress, memory.stress)


# ------------------------------------------------------------------------------------------------ the disk store


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_disk_batches_are_bitwise_those_in_memory(frames, tmp_path, dtype):
    """Any selection of structures, in any order, with labels missing here and there (stress, forces, a volume)."""
    potential = Potential(["Au", "Cu"], DESCRIPTOR, NetworkConfig(hidden=[8])).to(dtype)
    memory = FeatureSet(frames, potential, dtype, chunk_pairs=2000)
    disk = DiskFeatureSet(frames, potential, tmp_path / "store", dtype, chunk_pairs=2000)
    assert len(disk) == len(memory) == len(frames)
    groups = [[0], [5, 4, 0], [0, 1, 2, 3], list(range(len(frames)))[::-1], torch.tensor([7, 7, 13])]
    for indices in groups:
        assert_batches_identical(disk.batch(indices), memory.batch(indices))
    read_ahead = list(disk.batches(iter(groups)))  # the next batch read by a background thread
    assert len(read_ahead) == len(groups)
    for batch, indices in zip(read_ahead, groups, strict=True):
        assert_batches_identical(batch, memory.batch(indices))
    early = disk.batches(groups)
    assert_batches_identical(next(early), memory.batch(groups[0]))
    early.close()  # a consumer that stops early (training diverged) leaves no reader thread behind
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("feature-reader")]
    assert disk.batch([0, 4]).stress is not None and disk.batch([0, 1]).stress is None
    assert torch.isnan(disk.batch([2]).forces).all()
    atoms, pairs = sum(disk.n_atoms), sum(disk.n_pairs)
    n = potential.descriptor.n_features
    assert disk.nbytes == atoms * (8 + (n + 3) * dtype.itemsize) + pairs * (16 + (3 * n + 3) * dtype.itemsize)


def test_the_store_is_removed_when_closed_or_collected_and_replaces_a_stale_one(frames, potential, tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "left_by_a_killed_run.bin").write_bytes(b"x")
    store = DiskFeatureSet(frames[:3], potential, folder, torch.float64)
    arrays = ("species", "features", "forces", "first", "second", "vectors", "jacobian")
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.bin" for name in arrays)
    store.close()
    assert not folder.exists()
    DiskFeatureSet(frames[:3], potential, folder, torch.float64)  # never closed: collected at once
    assert not folder.exists()


# ------------------------------------------------------------------------------------------------ statistics


def test_streamed_statistics_equal_those_of_all_features_at_once(frames, potential, tmp_path, monkeypatch):
    """A feature set in memory is one chunk: bit for bit torch's mean and population std (the standardisation
    before streaming). The disk store's chunks (here 37 atoms, cutting through structures) agree to rounding."""
    memory = FeatureSet(frames, potential, torch.float64)
    monkeypatch.setattr(disk_features, "CHUNK_ATOMS", 37)
    disk = DiskFeatureSet(frames, potential, tmp_path / "store", torch.float64)
    assert len(list(disk.feature_chunks())) > 5
    n_features = potential.descriptor.n_features
    whole = FeatureStatistics.of(memory.feature_chunks(), 2, n_features, torch.float64)
    streamed = FeatureStatistics.of(disk.feature_chunks(), 2, n_features, torch.float64)
    species = torch.cat([item.species for item in memory.items])
    features = torch.cat([item.features for item in memory.items])
    for element in (0, 1):
        values = features[species == element]
        assert whole.count[element] == streamed.count[element] == values.shape[0]
        assert torch.equal(whole.mean[element], values.mean(0))
        assert torch.equal(whole.std[element], values.std(0, unbiased=False))
        assert torch.equal(streamed.minimum[element], values.min(0).values)
        assert torch.equal(streamed.maximum[element], values.max(0).values)
    torch.testing.assert_close(streamed.mean, whole.mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(streamed.std, whole.std, rtol=1e-12, atol=1e-14)


def test_chunked_variance_is_stable_far_from_zero():
    """Values 1e6 ± 1e-2 in 200 uneven chunks: the merged standard deviation keeps nine digits of the exact one (two
    passes over the values less 1e6, a subtraction without rounding), where Σx²/n - mean² in float64 keeps none."""
    generator = torch.Generator().manual_seed(0)
    values = 1e6 + 1e-2 * torch.randn(20_000, 3, generator=generator, dtype=torch.float64)
    species = torch.zeros(20_000, dtype=torch.long)
    cuts = sorted(torch.randint(1, 20_000, (199,), generator=generator).tolist())
    chunks = [(species[a:b], values[a:b]) for a, b in itertools.pairwise([0, *cuts, 20_000])]
    statistics = FeatureStatistics.of(chunks, 1, 3, torch.float64)
    exact_std, exact_mean = (values - 1e6).std(0, unbiased=False), (values - 1e6).mean(0)
    torch.testing.assert_close(statistics.std[0], exact_std, rtol=1e-9, atol=0)
    torch.testing.assert_close(statistics.mean[0] - 1e6, exact_mean, rtol=0, atol=1e-9)
    naive = ((values**2).mean(0) - values.mean(0) ** 2).clamp(min=0).sqrt()
    assert ((naive - exact_std).abs() / exact_std).min() > 0.5


# ------------------------------------------------------------------------------------------------ training


def read_curve(workdir) -> list[dict]:
    with (workdir / CURVE).open() as handle:
        return [{k: float(v) for k, v in row.items() if k != "elapsed"} for row in csv.DictReader(handle)]


def test_training_on_disk_with_stops_and_resumes_matches_training_in_memory(dataset, tmp_path):
    """In memory, uninterrupted; on disk, stopped by the wall time after every epoch and resumed by new Trainers
    (each rebuilds the store). Same weights, curve and metrics to rounding; the store is gone after every run."""
    lines = []
    memory = Trainer(TrainingConfig(dataset=str(dataset), feature_store="memory", **SETTINGS), tmp_path / "m", quiet)
    outcome_memory = memory.run()
    interrupted = TrainingConfig(dataset=str(dataset), feature_store="disk", wall_time=1e-9, **SETTINGS)
    for _ in range(10):
        trainer = Trainer(interrupted, tmp_path / "d", log=lines.append)
        assert (tmp_path / "d" / SCRATCH_FOLDER / "train" / "jacobian.bin").is_file()
        outcome_disk = trainer.run(resume=True)
        assert not (tmp_path / "d" / SCRATCH_FOLDER / "train").exists()
        if outcome_disk.status == "finished":
            break
    assert outcome_disk.epochs == outcome_memory.epochs == 4
    assert lines[0].startswith("features and Jacobians on disk (") and lines[0].endswith("; set by feature_store")
    weights_memory, weights_disk = load_file(tmp_path / "m" / MODEL), load_file(tmp_path / "d" / MODEL)
    for name, value in weights_memory.items():
        torch.testing.assert_close(weights_disk[name], value, rtol=1e-9, atol=1e-12, msg=name)
    for row_disk, row_memory in zip(read_curve(tmp_path / "d"), read_curve(tmp_path / "m"), strict=True):
        assert row_disk == pytest.approx(row_memory, rel=1e-8)
    assert outcome_disk.metrics["validation"] == pytest.approx(
        outcome_memory.metrics["validation"], rel=1e-8, nan_ok=True
    )
    assert outcome_disk.metrics["train"] == pytest.approx(outcome_memory.metrics["train"], rel=1e-8, nan_ok=True)
    assert outcome_memory.metrics["feature_store"]["kind"] == "memory"
    assert outcome_disk.metrics["feature_store"]["kind"] == "disk"
    estimate = outcome_memory.metrics["feature_store"]["estimated_gib"]
    assert outcome_disk.metrics["feature_store"]["estimated_gib"] == estimate > 0


def quiet(line: str) -> None:
    pass


# ------------------------------------------------------------------------------------------------ the plan


def test_the_estimate_of_a_short_list_is_its_exact_size(frames, potential):
    """Every frame is in the sample: the estimate is the arrays a FeatureSet holds plus the per-structure allowance."""
    memory = FeatureSet(frames, potential, torch.float64)
    arrays = sum(
        tensor.numel() * tensor.element_size()
        for item in memory.items
        for tensor in (
            item.species,
            item.features,
            item.jacobian,
            item.pairs.first,
            item.pairs.second,
            item.pairs.vectors,
            item.forces if item.forces is not None else torch.zeros(len(item.species), 3, dtype=torch.float64),
            torch.zeros(3, 3, dtype=torch.float64),  # the stress allowance, whether labelled or not
        )
    )
    assert estimate_feature_bytes(frames, potential, torch.float64) == arrays + len(frames) * STRUCTURE_OVERHEAD


def test_the_estimate_of_a_long_list_comes_from_a_sample(potential):
    """100 frames, 64 sampled: within 5 % of the exact size (cells of 8 to 32 atoms, rattled)."""
    frames = cu_au_frames(100, seed=4)
    memory = FeatureSet(frames, potential, torch.float64)
    exact = estimate_feature_bytes(frames[:50], potential, torch.float64) + estimate_feature_bytes(
        frames[50:], potential, torch.float64
    )
    assert len(memory) == 100
    assert estimate_feature_bytes(frames, potential, torch.float64) == pytest.approx(exact, rel=0.05)


@pytest.mark.parametrize(
    ("settings", "kind", "reason"),
    [
        ({"memory_budget": 1e-6}, "disk", "over the 0.0 GiB budget (memory_budget)"),
        ({"memory_budget": 100.0}, "memory", "within the 100.0 GiB budget (memory_budget)"),
        ({}, "memory", "GiB budget (50% of the "),
        ({"memory_budget": 1e-6, "feature_store": "memory"}, "memory", "set by feature_store"),
    ],
)
def test_the_plan_follows_the_budget_unless_the_store_is_set(frames, potential, tmp_path, settings, kind, reason):
    config = TrainingConfig(dataset="x", **settings)
    plan = feature_store.plan_feature_store(config, frames, potential, torch.float64, tmp_path)
    assert plan.kind == kind and reason in plan.reason
    assert plan.estimated_bytes == estimate_feature_bytes(frames, potential, torch.float64)


def test_a_disk_too_small_for_the_features_is_refused_up_front(frames, potential, tmp_path, monkeypatch):
    usage = feature_store.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(feature_store.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    config = TrainingConfig(dataset="x", feature_store="disk")
    with pytest.raises(InputDataError, match=r"need about [\d.]+ GiB on disk in .*, which has 0\.0 GiB free"):
        feature_store.plan_feature_store(config, frames, potential, torch.float64, tmp_path)
    memory = TrainingConfig(dataset="x", feature_store="memory")
    assert feature_store.plan_feature_store(memory, frames, potential, torch.float64, tmp_path).kind == "memory"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_cgroup_limit_is_the_smallest_on_the_path_to_the_root(tmp_path, version):
    """A batch job's limit often sits on a parent of the process's cgroup, whose own limit is unset."""
    mount = tmp_path / "cgroup"
    if version == "v2":
        membership, root, name, unlimited = "0::/job/step/task\n", mount, "memory.max", "max"
    else:
        membership, root, name, unlimited = (
            "5:memory:/job/step/task\n3:cpu:/x\n",
            mount / "memory",
            "memory.limit_in_bytes",
            str(2**63 - 4096),
        )
    for folder, value in (
        ("", unlimited),
        ("job", str(8 << 30)),
        ("job/step", str(16 << 30)),
        ("job/step/task", unlimited),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_text(value + "\n")
    (tmp_path / "cgroup.txt").write_text(membership)
    assert feature_store._cgroup_limit(tmp_path / "cgroup.txt", mount) == 8 << 30
    (root / "job" / name).unlink()
    assert feature_store._cgroup_limit(tmp_path / "cgroup.txt", mount) == 16 << 30
    assert feature_store._cgroup_limit(tmp_path / "missing.txt", mount) is None
    assert feature_store.available_memory() > 0


# ------------------------------------------------------------------------------------------------ configuration


def test_the_settings_are_validated_and_left_out_of_dumps_unless_set():
    default = TrainingConfig(dataset="x").model_dump(mode="json", by_alias=True)
    assert "feature_store" not in default and "memory_budget" not in default
    chosen = TrainingConfig(dataset="x", feature_store="disk", memory_budget=12.5).model_dump(mode="json")
    assert chosen["feature_store"] == "disk" and chosen["memory_budget"] == 12.5
    for bad in ({"feature_store": "ssd"}, {"memory_budget": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            load_config({"dataset": "x", **bad}, TrainingConfig)
