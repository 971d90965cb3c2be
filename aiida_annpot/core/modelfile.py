"""Model files: one committee member per file, safetensors weights with JSON metadata in the header.

Loading reads tensors and JSON only, never unpickles. The metadata records everything needed to rebuild the
model (elements, descriptor and network configuration, the delta-learning baseline if any) and to trust it
(dataset hash, metrics, versions).
Members of a committee are separate files (each from its own training run) stacked by :func:`load_potential`.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
from pydantic import TypeAdapter, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .. import __version__
from ..common.config import BaselineConfig, DescriptorConfig, NetworkConfig
from .baselines import baseline_record, describe_baseline
from .errors import ModelFileError
from .model import Potential

FORMAT = "annpot-model"
FORMAT_VERSION = 1
_METADATA_KEY = "annpot"
_BUFFERS = ("feature_mean", "feature_std", "reference_energy", "energy_scale")
#: Training feature ranges (extrapolation grades); files written before they were stored load with infinite ranges.
_RANGE_BUFFERS = ("feature_min", "feature_max")


def save_model(potential: Potential, path: str | Path, member: int = 0, **extra) -> Path:
    """Write committee member ``member`` of ``potential`` to ``path`` (safetensors).

    :param extra: JSON-serialisable metadata to record (dataset hash, metrics, training settings, …).
    """
    tensors = {name: getattr(potential, name)[member].detach().contiguous() for name in _BUFFERS + _RANGE_BUFFERS}
    for index, (weight, bias) in enumerate(zip(potential.networks.weights, potential.networks.biases, strict=True)):
        tensors[f"networks.weight.{index}"] = weight[member].detach().contiguous()
        tensors[f"networks.bias.{index}"] = bias[member].detach().contiguous()
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "elements": potential.elements,
        "descriptor": potential.descriptor_config.model_dump(mode="json", by_alias=True),
        "network": potential.network_config.model_dump(mode="json"),
        "dtype": str(potential.dtype).removeprefix("torch."),
        "versions": {"aiida-annpot": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "baseline": baseline_record(potential.baseline_config),  # delta learning: null without a baseline
        **extra,
    }
    path = Path(path)
    save_file(tensors, str(path), metadata={_METADATA_KEY: json.dumps(metadata)})
    return path


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of a model file. :raises ModelFileError: missing, not safetensors, or not an annpot model."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if not path.is_file():
        raise ModelFileError(f"model file {path} is not a file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable safetensors model file: {exc}") from exc
    try:
        metadata = json.loads(header[_METADATA_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} has no annpot metadata") from exc
    if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} is format {metadata.get('format')!r} v{metadata.get('format_version')}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION}"
        )
    return metadata


def has_feature_ranges(path: str | Path) -> bool:
    """Whether a model file stores finite training feature ranges (files written before they were kept do not)."""
    with safe_open(str(path), framework="pt") as handle:
        if not set(_RANGE_BUFFERS) <= set(handle.keys()):
            return False
        return all(bool(torch.isfinite(handle.get_tensor(name)).all()) for name in _RANGE_BUFFERS)


def _architecture(metadata: dict) -> tuple:
    return (metadata["elements"], metadata["descriptor"], metadata["network"])


def load_potential(paths: str | Path | list, dtype: torch.dtype | None = None) -> Potential:
    """Stack one or more member files into a :class:`Potential` (committee of ``len(paths)``).

    :raises ModelFileError: unreadable files, tensors of the wrong shape, or members of different architectures.
    """
    paths = [Path(p) for p in (paths if isinstance(paths, list | tuple) else [paths])]
    if not paths:
        raise ModelFileError("no model files given")
    metadata = [read_metadata(p) for p in paths]
    reference = _architecture(metadata[0])
    for path, meta in zip(paths[1:], metadata[1:], strict=True):
        if _architecture(meta) != reference:
            raise ModelFileError(
                f"{path} does not match {paths[0]}: committee members need the same elements, descriptor and network"
            )
        if meta.get("baseline") != metadata[0].get("baseline"):
            raise ModelFileError(
                f"{path} does not match {paths[0]}: committee members need the same baseline, got "
                f"{describe_baseline(meta.get('baseline'))} and {describe_baseline(metadata[0].get('baseline'))}"
            )
    try:
        descriptor = TypeAdapter(DescriptorConfig).validate_python(metadata[0]["descriptor"])
        network = NetworkConfig.model_validate(metadata[0]["network"])
        baseline = metadata[0].get("baseline")  # rebuilt here, so a baseline this node cannot build fails now
        baseline = None if baseline is None else BaselineConfig.model_validate(baseline)
    except ValidationError as exc:
        raise ModelFileError(f"{paths[0]}: invalid model configuration: {exc}") from exc
    potential = Potential(metadata[0]["elements"], descriptor, network, n_members=len(paths))
    potential.baseline_config = baseline
    dtype = dtype or getattr(torch, metadata[0].get("dtype", "float64"))
    potential.to(dtype)
    state = {name: [] for name in potential.state_dict()}
    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as handle:
                for name in _BUFFERS:
                    state[name].append(handle.get_tensor(name))
                stored = set(handle.keys())
                for name in _RANGE_BUFFERS:  # absent from older files: keep the infinite default (no range known)
                    tensor = handle.get_tensor(name) if name in stored else getattr(potential, name)[0]
                    state[name].append(tensor.to(dtype))
                for index in range(len(potential.networks.weights)):
                    state[f"networks.weights.{index}"].append(handle.get_tensor(f"networks.weight.{index}"))
                    state[f"networks.biases.{index}"].append(handle.get_tensor(f"networks.bias.{index}"))
        except (SafetensorError, OSError) as exc:
            raise ModelFileError(f"{path}: missing or unreadable tensor: {exc}") from exc
    stacked = {}
    for name, tensors in state.items():
        if not tensors:  # descriptor buffers are rebuilt from the configuration
            continue
        stacked[name] = torch.stack(tensors).to(dtype)
        expected = potential.state_dict()[name].shape
        if stacked[name].shape != expected:
            raise ModelFileError(f"tensor {name} has shape {tuple(stacked[name].shape)}, expected {tuple(expected)}")
    potential.load_state_dict(stacked, strict=False)
    potential.metadata = metadata
    return potential
