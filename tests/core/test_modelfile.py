"""Model files: safetensors round trips, metadata, no unpickling, and clear errors for bad or mismatched files."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
import torch
from ase.build import bulk
from safetensors.torch import save_file

import aiida_annpot
from aiida_annpot.common.config import G2, G4, BehlerParrinelloConfig, ChebyshevConfig, NetworkConfig
from aiida_annpot.core.errors import ModelFileError
from aiida_annpot.core.geometry import NeighborSearch
from aiida_annpot.core.model import Potential
from aiida_annpot.core.modelfile import content_digest, load_potential, read_metadata, save_model

DESCRIPTOR = ChebyshevConfig(
    radial_order=5, radial_cutoff=4.5, angular_order=3, angular_cutoff=3.5, type_weights={"Au": 1.5, "Cu": -0.5}
)
NETWORK = NetworkConfig(hidden=[7, 5], activation="silu")


def make_potential(
    n_members: int = 1, seed: int = 0, descriptor=DESCRIPTOR, network=NETWORK, elements=("Cu", "Au")
) -> Potential:
    """Random weights and random (non-trivial) standardisation, reference energies and scales for every member."""
    potential = Potential(list(elements), descriptor, network, n_members=n_members).double()
    generator = torch.Generator().manual_seed(seed)
    potential.networks.reset_parameters(generator)
    with torch.no_grad():
        for bias in potential.networks.biases:
            bias.copy_(0.1 * torch.randn(bias.shape, generator=generator, dtype=torch.float64))
        shape = potential.feature_mean.shape
        potential.feature_mean.copy_(torch.rand(shape, generator=generator, dtype=torch.float64) * 3)
        potential.feature_std.copy_(0.5 + torch.rand(shape, generator=generator, dtype=torch.float64) * 2)
        potential.reference_energy.copy_(
            -3 - torch.rand(potential.reference_energy.shape, generator=generator, dtype=torch.float64)
        )
        potential.energy_scale.copy_(0.2 + torch.rand(n_members, generator=generator, dtype=torch.float64))
    return potential


def write_with_digest(tensors: dict, metadata: dict, path):
    """A model file whose digest matches its (deliberately wrong) content: it tests the checks behind the digest."""
    metadata = {**metadata, "digest": content_digest(tensors, metadata)}
    save_file(tensors, str(path), metadata={"annpot": json.dumps(metadata)})
    return path


def save_members(potential: Potential, folder, **extra) -> list:
    return [
        save_model(potential, folder / f"member{k}.safetensors", member=k, **extra) for k in range(potential.n_members)
    ]


def structure():
    atoms = bulk("CuAu", "rocksalt", a=4.2, cubic=True)
    atoms.rattle(stdev=0.1, seed=3)
    return atoms


def predict(potential: Potential):
    atoms = structure()
    pairs = NeighborSearch(potential.descriptor.cutoff)(atoms.positions, atoms.cell.array, atoms.pbc)
    prediction = potential(atoms.numbers, pairs, volume=atoms.get_volume())
    return prediction.energy.detach(), prediction.forces.detach(), prediction.stress.detach()


def test_round_trip_single_model(tmp_path):
    potential = make_potential()
    path = save_model(potential, tmp_path / "model.safetensors")
    loaded = load_potential(path)
    assert loaded.n_members == 1 and loaded.dtype == torch.float64
    assert loaded.elements == potential.elements
    assert loaded.descriptor_config == potential.descriptor_config
    assert loaded.network_config == potential.network_config
    for name, value in potential.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    for original, restored in zip(predict(potential), predict(loaded), strict=True):
        assert torch.equal(original, restored)


def test_round_trip_committee(tmp_path):
    potential = make_potential(n_members=3, seed=1)
    loaded = load_potential(save_members(potential, tmp_path))
    assert loaded.n_members == 3
    for original, restored in zip(predict(potential), predict(loaded), strict=True):
        torch.testing.assert_close(restored, original, rtol=0, atol=1e-12)
    assert len(loaded.metadata) == 3
    # a single member of the committee file set is that member alone
    second = load_potential(tmp_path / "member1.safetensors")
    torch.testing.assert_close(predict(second)[0][0], predict(potential)[0][1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["chebyshev", "bp"])
def test_descriptor_configuration_survives(tmp_path, family):
    if family == "bp":
        pytest.importorskip("aiida_annpot.core.descriptors.behler_parrinello")
        descriptor = BehlerParrinelloConfig(
            cutoff=4.0, g2=[G2(eta=0.1), G2(eta=1.0, r_s=2.0)], g4=[G4(eta=0.01, zeta=2.0, lambda_=-1)]
        )
    else:
        descriptor = DESCRIPTOR
    potential = make_potential(descriptor=descriptor, network=NetworkConfig(hidden=[4], activation="tanh"))
    loaded = load_potential(save_model(potential, tmp_path / "m.safetensors"))
    assert loaded.descriptor_config == descriptor
    assert loaded.network_config == NetworkConfig(hidden=[4], activation="tanh")
    torch.testing.assert_close(predict(loaded)[1], predict(potential)[1], rtol=0, atol=1e-12)


def test_metadata(tmp_path):
    potential = make_potential()
    metrics = {"validation": {"force_rmse": 0.042, "energy_rmse": 1.5}, "epochs": 12}
    path = save_model(potential, tmp_path / "model.safetensors", dataset_hash="abc123", metrics=metrics)
    metadata = read_metadata(path)
    assert metadata["format"] == "annpot-model"
    assert metadata["elements"] == ["Au", "Cu"]
    assert metadata["descriptor"] == DESCRIPTOR.model_dump(mode="json", by_alias=True)
    assert metadata["descriptor"]["type"] == "chebyshev"
    assert metadata["network"] == {"hidden": [7, 5], "activation": "silu"}
    assert metadata["dtype"] == "float64"
    assert metadata["versions"]["aiida-annpot"] == aiida_annpot.__version__
    assert metadata["versions"]["torch"] == torch.__version__
    assert "python" in metadata["versions"]
    assert metadata["dataset_hash"] == "abc123"
    assert metadata["metrics"] == metrics
    assert load_potential(path).metadata == [metadata]


def test_file_is_safetensors_and_loading_never_unpickles(tmp_path, monkeypatch):
    potential = make_potential()
    path = save_model(potential, tmp_path / "model.safetensors", metrics={"a": 1})
    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 little-endian JSON header length
    assert 8 + header_length <= len(raw)
    header = json.loads(raw[8 : 8 + header_length])
    assert "annpot" in header["__metadata__"]
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert 8 + header_length + max(v["data_offsets"][1] for v in tensors.values()) == len(raw)
    assert raw[:2] != b"\x80\x02" and b"PK\x03\x04" not in raw[:4]  # not a pickle, not a torch zip archive

    def forbidden(*args, **kwargs):
        raise AssertionError("model loading must not unpickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    loaded = load_potential(path)
    read_metadata(path)
    monkeypatch.undo()
    assert torch.equal(predict(loaded)[0], predict(potential)[0])


def _expect_error(path, *fragments):
    for reader in (read_metadata, load_potential):
        with pytest.raises(ModelFileError) as info:
            reader(path)
        message = str(info.value)
        assert str(path) in message
        for fragment in fragments:
            assert fragment in message, message


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.safetensors", "does not exist")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    _expect_error(path, "not a readable safetensors")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _expect_error(path, "not a readable safetensors")


@pytest.mark.parametrize("keep", [4, 100, -10])
def test_truncated_file(tmp_path, keep):
    source = save_model(make_potential(), tmp_path / "model.safetensors")
    raw = source.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(raw[:keep])
    _expect_error(path, "not a readable safetensors")


def test_pickle_file_is_rejected(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save(make_potential().state_dict(), path)
    _expect_error(path, "not a readable safetensors")


def test_safetensors_without_annpot_metadata(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(3)}, str(path), metadata={"other": "thing"})
    _expect_error(path, "no annpot metadata")
    save_file({"x": torch.zeros(3)}, str(path))
    _expect_error(path, "no annpot metadata")
    save_file({"x": torch.zeros(3)}, str(path), metadata={"annpot": "{not json"})
    _expect_error(path, "no annpot metadata")


def test_wrong_format_or_version(tmp_path):
    source = save_model(make_potential(), tmp_path / "model.safetensors")
    metadata = read_metadata(source)
    path = tmp_path / "future.safetensors"
    save_file({"x": torch.zeros(3)}, str(path), metadata={"annpot": json.dumps({**metadata, "format_version": 99})})
    _expect_error(path, "v99")


def test_missing_and_misshapen_tensors(tmp_path):
    potential = make_potential()
    source = save_model(potential, tmp_path / "model.safetensors")
    metadata = read_metadata(source)
    tensors = {"feature_mean": potential.feature_mean[0]}
    missing = write_with_digest(tensors, metadata, tmp_path / "missing.safetensors")
    with pytest.raises(ModelFileError, match="missing or unreadable tensor"):
        load_potential(missing)
    misshapen = tmp_path / "misshapen.safetensors"
    state = {
        name: getattr(potential, name)[0].contiguous()
        for name in ("feature_mean", "feature_std", "reference_energy", "energy_scale")
    }
    for index, (weight, bias) in enumerate(zip(potential.networks.weights, potential.networks.biases, strict=True)):
        state[f"networks.weight.{index}"] = weight[0].detach().contiguous()
        state[f"networks.bias.{index}"] = bias[0].detach().contiguous()
    state["networks.weight.0"] = torch.zeros(3, 3, dtype=torch.float64)
    write_with_digest(state, metadata, misshapen)
    with pytest.raises(ModelFileError, match="shape"):
        load_potential(misshapen)


def test_invalid_configuration_in_metadata(tmp_path):
    source = save_model(make_potential(), tmp_path / "model.safetensors")
    metadata = read_metadata(source)
    metadata["network"] = {"hidden": [0], "activation": "tanh"}
    path = write_with_digest({"x": torch.zeros(3)}, metadata, tmp_path / "bad.safetensors")
    with pytest.raises(ModelFileError, match="invalid model configuration"):
        load_potential(path)


@pytest.mark.parametrize(
    "other",
    [
        {"network": NetworkConfig(hidden=[7, 6], activation="silu")},
        {"network": NetworkConfig(hidden=[7, 5], activation="tanh")},
        {"descriptor": DESCRIPTOR.model_copy(update={"radial_order": 6})},
        {"descriptor": DESCRIPTOR.model_copy(update={"radial_cutoff": 5.0})},
        {"elements": ("Cu", "Ag"), "descriptor": DESCRIPTOR.model_copy(update={"type_weights": None})},
    ],
    ids=["hidden", "activation", "order", "cutoff", "elements"],
)
def test_committee_of_different_architectures(tmp_path, other):
    first = save_model(make_potential(), tmp_path / "a.safetensors")
    second = save_model(make_potential(seed=2, **other), tmp_path / "b.safetensors")
    with pytest.raises(ModelFileError, match="does not match"):
        load_potential([first, second])
    assert load_potential([first, first]).n_members == 2


def test_no_files():
    with pytest.raises(ModelFileError):
        load_potential([])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_load_with_dtype(tmp_path, dtype):
    potential = make_potential(n_members=2, seed=5)
    loaded = load_potential(save_members(potential, tmp_path), dtype=dtype)
    assert loaded.dtype == dtype
    assert all(p.dtype == dtype for p in loaded.parameters())
    assert all(b.dtype == dtype for b in (loaded.feature_mean, loaded.feature_std, loaded.reference_energy))
    energy, forces, stress = predict(loaded)
    assert energy.dtype == dtype and forces.dtype == dtype
    reference = predict(potential)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(energy.double(), reference[0], rtol=0, atol=tolerance * 10)
    torch.testing.assert_close(forces.double(), reference[1], rtol=0, atol=tolerance)
    torch.testing.assert_close(stress.double(), reference[2], rtol=0, atol=tolerance / 10)


def test_float32_model_file_loads_as_float32_by_default(tmp_path):
    potential = make_potential().float()
    path = save_model(potential, tmp_path / "f32.safetensors")
    assert read_metadata(path)["dtype"] == "float32"
    assert load_potential(path).dtype == torch.float32
    assert load_potential(path, dtype=torch.float64).dtype == torch.float64
