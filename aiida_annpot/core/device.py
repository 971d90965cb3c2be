"""The torch device the engine runs on: the ``device`` setting of a configuration, resolved in one place.

A configuration is validated where it is written, often a machine without a GPU, so whether ``cuda`` is there can
only be known where the run starts: :func:`resolve_device` is called then, and its error names the setting. Model
code never asks which device to use; it follows its parameters (``Potential.device``), and what it returns goes
back to numpy on the CPU only where ASE or a file needs it.
"""

from __future__ import annotations

import torch

from .errors import DeviceUnavailableError

__all__ = ["describe_device", "device_record", "resolve_device"]


def resolve_device(setting: str | torch.device) -> torch.device:
    """``auto``: the GPU when torch finds one, else the CPU; ``cpu``; ``cuda``: the GPU, or an error.

    :raises DeviceUnavailableError: ``cuda`` on a machine where torch finds no CUDA device.
    """
    setting = str(setting)
    if setting == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if setting == "auto":
        return torch.device("cuda" if available else "cpu")
    if setting != "cuda":
        raise ValueError(f"device must be auto, cpu or cuda, got {setting!r}")
    if not available:
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise DeviceUnavailableError(
            f"device is 'cuda' but torch finds no CUDA device on this machine (torch {torch.__version__}, {build}): "
            "run on a GPU node (the CalcJob option metadata.options.gpus asks the scheduler for one), or set device "
            "to auto or cpu"
        )
    return torch.device("cuda")


def device_record(device: torch.device) -> dict:
    """What ran the tensors, for metrics and summaries: ``{"type": "cpu"}`` or ``{"type": "cuda", "name": ...}``."""
    device = torch.device(device)
    if device.type != "cuda":
        return {"type": device.type}
    return {"type": "cuda", "name": torch.cuda.get_device_name(device)}


def describe_device(device: torch.device) -> str:
    """``cpu``, or ``cuda (NVIDIA H100 80GB HBM3)``: a log line's account of :func:`device_record`."""
    record = device_record(device)
    return record["type"] + (f" ({record['name']})" if "name" in record else "")
