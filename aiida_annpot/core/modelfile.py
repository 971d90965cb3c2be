"""Model files: one committee member per file, safetensors weights with JSON metadata in the header.

Model files are shared and downloaded, so loading one treats it as untrusted input: it reads tensors and JSON only,
never unpickles, and never imports or runs anything the file names (a delta-learning baseline named by an import
path is built only when the caller trusts that path, see :mod:`~aiida_annpot.core.baselines`). The metadata
records everything needed to rebuild the model (elements, descriptor and network configuration, the baseline if
any) and to judge it (dataset hash, metrics, versions), and a SHA-256 digest of the tensors and the metadata: a
file edited after it was written (forged elements or metrics, changed weights) is refused, naming the file. The
digest catches edits and corruption, not a forger who recomputes it; trust a file by where it came from.
Members of a committee are separate files (each from its own training run) stacked by :func:`load_potential`.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import torch
from pydantic import TypeAdapter, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .. import __version__
from ..common.config import BaselineConfig, DescriptorConfig, NetworkConfig
from . import jsonio
from .baselines import UntrustedBaselineError, baseline_record, describe_baseline, make_baseline
from .errors import ModelFileError
from .model import Potential

FORMAT = "annpot-model"
FORMAT_VERSION = 2
#: Versions this code reads: 1 (before the digest) and 2 (with ``digest``).
_READABLE_VERSIONS = (1, 2)
_DIGEST_KEY = "digest"
_METADATA_KEY = "annpot"
_BUFFERS = ("feature_mean", "feature_std", "reference_energy", "energy_scale")
#: Training feature ranges (extrapolation grades); files written before they were stored load with infinite ranges.
_RANGE_BUFFERS = ("feature_min", "feature_max")


def save_model(potential: Potential, path: str | Path, member: int = 0, **extra) -> Path:
    """Write committee member ``member`` of ``potential`` to ``path`` (safetensors).

    :param extra: JSON-serialisable metadata to record (dataset hash, metrics, training settings, …).
    """
    # from the CPU, wherever the model runs: the digest reads the bytes through numpy, and files load on the CPU
    tensors = {name: getattr(potential, name)[member].detach().cpu().contiguous() for name in _BUFFERS + _RANGE_BUFFERS}
    for index, (weight, bias) in enumerate(zip(potential.networks.weights, potential.networks.biases, strict=True)):
        tensors[f"networks.weight.{index}"] = weight[member].detach().cpu().contiguous()
        tensors[f"networks.bias.{index}"] = bias[member].detach().cpu().contiguous()
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
    metadata = jsonio.finite_or_none(metadata)  # standard JSON: the digest covers what is written
    metadata[_DIGEST_KEY] = content_digest(tensors, metadata)
    path = Path(path)
    save_file(tensors, str(path), metadata={_METADATA_KEY: jsonio.dumps(metadata)})
    return path


def content_digest(tensors: dict[str, torch.Tensor], metadata: dict) -> str:
    """``sha256:<hex>`` of every tensor (name, dtype, shape, bytes, in name order) and of the metadata as canonical
    JSON without its own ``digest`` entry."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{str(tensor.dtype).removeprefix('torch.')}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    described = {key: value for key, value in metadata.items() if key != _DIGEST_KEY}
    digest.update(json.dumps(described, sort_keys=True, separators=(",", ":")).encode())
    return f"sha256:{digest.hexdigest()}"


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model file. :raises ModelFileError: an unreadable file or tensor."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"{path}: missing or unreadable tensor: {exc}") from exc


def verify_model_file(path: str | Path, metadata: dict | None = None, tensors: dict | None = None) -> None:
    """Refuse a file whose tensors or metadata do not match its recorded digest (format 1 files predate it).

    :param metadata: and ``tensors``: the file's, when the caller has read them already.
    :raises ModelFileError: naming the file.
    """
    metadata = read_metadata(path) if metadata is None else metadata
    if metadata.get("format_version") == 1:
        return
    recorded = metadata.get(_DIGEST_KEY)
    if not isinstance(recorded, str):
        raise ModelFileError(f"{path} has no content digest: it was not written by annpot save_model")
    tensors = _read_tensors(Path(path)) if tensors is None else tensors
    if content_digest(tensors, metadata) != recorded:
        raise ModelFileError(
            f"{path} was modified after it was written: its tensors or metadata do not match its digest {recorded}"
        )


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
    if metadata.get("format") != FORMAT or metadata.get("format_version") not in _READABLE_VERSIONS:
        raise ModelFileError(
            f"{path} is format {metadata.get('format')!r} v{metadata.get('format_version')}, "
            f"expected {FORMAT!r} v{' or v'.join(map(str, _READABLE_VERSIONS))}"
        )
    return metadata


def has_feature_ranges(path: str | Path) -> bool:
    """Whether a model file stores finite training feature ranges (files written before they were kept do not)."""
    with safe_open(str(path), framework="pt") as handle:
        if not set(_RANGE_BUFFERS) <= set(handle.keys()):
            return False
        return all(bool(torch.isfinite(handle.get_tensor(name)).all()) for name in _RANGE_BUFFERS)


def build_baseline(potential: Potential, trusted_baselines=()):
    """The delta-learning baseline calculator of a loaded ``potential`` (None without one), built by
    :func:`~aiida_annpot.core.baselines.make_baseline` with ``trusted_baselines``.

    :raises UntrustedBaselineError: the model files name an import path the caller did not trust; the message names
        the files.
    """
    if potential.baseline_config is None:
        return None
    try:
        return make_baseline(potential.baseline_config, trusted_baselines)
    except UntrustedBaselineError as exc:
        raise UntrustedBaselineError(f"{getattr(potential, 'source', 'the potential')}: {exc}") from exc


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
    stored = [_read_tensors(p) for p in paths]  # read once: the digest check and the weights below
    for path, meta, tensors in zip(paths, metadata, stored, strict=True):
        verify_model_file(path, meta, tensors)
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
        baseline = metadata[0].get("baseline")  # checked, never imported: see core.baselines
        baseline = None if baseline is None else BaselineConfig.model_validate(baseline)
    except ValidationError as exc:
        raise ModelFileError(f"{paths[0]}: invalid model configuration: {exc}") from exc
    potential = Potential(metadata[0]["elements"], descriptor, network, n_members=len(paths))
    potential.baseline_config = baseline
    dtype = dtype or getattr(torch, metadata[0].get("dtype", "float64"))
    potential.to(dtype)
    state = {name: [] for name in potential.state_dict()}
    for path, tensors in zip(paths, stored, strict=True):
        try:
            for name in _BUFFERS:
                state[name].append(tensors[name])
            for name in _RANGE_BUFFERS:  # absent from older files: keep the infinite default (no range known)
                state[name].append(tensors.get(name, getattr(potential, name)[0]).to(dtype))
            for index in range(len(potential.networks.weights)):
                state[f"networks.weights.{index}"].append(tensors[f"networks.weight.{index}"])
                state[f"networks.biases.{index}"].append(tensors[f"networks.bias.{index}"])
        except KeyError as exc:
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
    potential.source = ", ".join(str(path) for path in paths)  # named in errors about the files' contents
    return potential
