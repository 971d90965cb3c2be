"""Where training keeps its precomputed features: in memory while they fit a memory budget, on disk otherwise.

Features and pair Jacobians take 3 D + 3 values per neighbour pair, and a metal has some 55 pairs per atom within
5.5 Å: with D = 18 that is about 14 kB per atom in float32 and 26 kB in float64, so 10^6 atoms need 26 GB (25 GiB)
in float64. The size is estimated before anything is computed, from the neighbour pairs of a sample of the frames,
and compared with ``memory_budget`` (by default half the memory available to the process). In memory, every epoch
reads tensors already there (:class:`~.dataset.FeatureSet`); on disk, each batch reads its structures from flat files
in the working directory (:class:`~.disk_features.DiskFeatureSet`), and the process's memory stays that of the
frames.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from ..common.config import TrainingConfig
from .dataset import FeatureSet
from .disk_features import DiskFeatureSet
from .errors import InputDataError
from .geometry import NeighborSearch

GIB = float(1 << 30)
#: Share of the available memory the features may take when ``memory_budget`` is not set: the rest is for the
#: frames, torch and the batches, and for whatever else the machine runs.
AUTO_BUDGET_FRACTION = 0.5
#: Frames whose neighbour pairs are counted to estimate the pairs per atom of the whole set.
SAMPLE_FRAMES = 64
#: Bytes of Python objects per structure held in memory (its StructureFeatures, eight small tensors and labels): the
#: growth of the process's memory beyond the arrays was 9.0 kB (float32) and 9.6 kB (float64) per structure for
#: 20,000 four-atom structures (torch 2.13).
STRUCTURE_OVERHEAD = 9 * 1024
#: Folder in the working directory that holds a disk store while training runs.
SCRATCH_FOLDER = "feature_store"


@dataclass(frozen=True)
class FeatureStorePlan:
    """Where the features go (``memory`` or ``disk``), their estimated size in memory, and why (for the log)."""

    kind: str
    estimated_bytes: int
    reason: str

    def record(self) -> dict:
        """The plan for ``metrics.json``: where and how much, without the budget, which follows the memory free at
        the time."""
        return {"kind": self.kind, "estimated_gib": round(self.estimated_bytes / GIB, 3)}


def estimate_feature_bytes(frames: list[Atoms], potential, dtype: torch.dtype) -> int:
    """Memory that :class:`~.dataset.FeatureSet` would take for ``frames``: exact arrays for the atoms, and for the
    pairs the pairs per atom of up to :data:`SAMPLE_FRAMES` frames spread evenly over the list (all of a short list)."""
    if not frames:
        return 0
    size, n_features = dtype.itemsize, potential.descriptor.n_features
    per_atom = 8 + (n_features + 3) * size  # species (int64), features, forces
    per_pair = 2 * 8 + (3 * n_features + 3) * size  # pair indices (int64), Jacobian, pair vector
    per_structure = STRUCTURE_OVERHEAD + 9 * size  # objects, stress
    search = NeighborSearch(potential.descriptor.cutoff)
    sample = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), SAMPLE_FRAMES)).round().astype(int))
    sample_pairs = sum(
        search(frames[i].positions, frames[i].cell.array, frames[i].pbc, label=f"frame {i}").first.shape[0]
        for i in sample
    )
    pairs_per_atom = sample_pairs / sum(len(frames[i]) for i in sample)
    atoms = sum(len(frame) for frame in frames)
    return round(atoms * (per_atom + pairs_per_atom * per_pair) + len(frames) * per_structure)


def plan_feature_store(
    config: TrainingConfig, frames: list[Atoms], potential, dtype: torch.dtype, workdir: Path
) -> FeatureStorePlan:
    """Memory or disk for the features of ``frames`` (training and validation together), following
    ``config.feature_store`` where set, else ``config.memory_budget`` (GiB) or half the available memory.

    :raises InputDataError: the features go to disk and ``workdir`` has less free space than they need.
    """
    estimate = estimate_feature_bytes(frames, potential, dtype)
    size = f"about {estimate / GIB:.2f} GiB"
    if config.feature_store is not None:
        plan = FeatureStorePlan(config.feature_store, estimate, f"{size}; set by feature_store")
    else:
        if config.memory_budget is not None:
            budget, source = config.memory_budget * GIB, "memory_budget"
        else:
            available = available_memory()
            budget = None if available is None else AUTO_BUDGET_FRACTION * available
            source = f"{AUTO_BUDGET_FRACTION:.0%} of the {(available or 0) / GIB:.1f} GiB available"
        if budget is None:
            plan = FeatureStorePlan("memory", estimate, f"{size}; the available memory is unknown")
        elif estimate <= budget:
            plan = FeatureStorePlan("memory", estimate, f"{size}, within the {budget / GIB:.1f} GiB budget ({source})")
        else:
            plan = FeatureStorePlan("disk", estimate, f"{size}, over the {budget / GIB:.1f} GiB budget ({source})")
    free = shutil.disk_usage(workdir).free
    if plan.kind == "disk" and estimate > free:
        raise InputDataError(
            f"the features need {size} on disk in {workdir}, which has {free / GIB:.1f} GiB free: free some space, "
            "train in float32 (half the size) or on fewer frames"
        )
    return plan


def open_feature_set(kind: str, frames: list[Atoms], potential, dtype: torch.dtype, folder: Path):
    """A :class:`~.dataset.FeatureSet` (``memory``) or a :class:`~.disk_features.DiskFeatureSet` in ``folder``."""
    if kind == "memory":
        return FeatureSet(frames, potential, dtype)
    return DiskFeatureSet(frames, potential, folder, dtype)


def available_memory() -> int | None:
    """Bytes of memory the process may still take: the kernel's available memory, within the memory limit of the
    process's cgroup and its parents (a batch job's allocation, a container's limit); None where none is known."""
    known = [value for value in (_system_available(), _cgroup_limit()) if value is not None]
    return min(known, default=None)


def _system_available() -> int | None:
    """MemAvailable of /proc/meminfo (Linux: free memory plus what the kernel can reclaim), else physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _cgroup_limit(membership: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The smallest memory limit on the process's cgroup or an ancestor (cgroup v2 ``memory.max``, v1
    ``memory.limit_in_bytes``); None when unlimited or unreadable.

    :param membership: the process's cgroups, one ``id:controllers:path`` line each.
    :param mount: where the cgroup hierarchies are mounted.
    """
    try:
        entries = membership.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for entry in entries:
        _, controllers, path = entry.split(":", 2)
        if controllers == "":
            root, name = mount, "memory.max"
        elif "memory" in controllers.split(","):
            root, name = mount / "memory", "memory.limit_in_bytes"
        else:
            continue
        leaf = root / path.lstrip("/")
        for folder in (leaf, *leaf.parents):
            try:
                text = (folder / name).read_text().strip()
                if text != "max":
                    limits.append(int(text))
            except (OSError, ValueError):
                pass
            if folder == root:
                break
    return min(limits, default=None)
