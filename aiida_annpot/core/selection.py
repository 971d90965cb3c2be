"""Query-by-committee selection: which explored frames become new DFT labels (pure numpy).

Each frame carries the committee's largest per-atom force deviation σ_F^max, its smallest interatomic distance and
a fingerprint vector. :func:`classify` sorts frames by σ into accurate / candidate / failed; :func:`select_candidates`
then drops unphysical candidates (atoms too close), candidates that duplicate the training set in fingerprint space,
and spreads the remaining picks with :func:`farthest_point_sampling` up to a cap. Everything is deterministic given
the inputs (ties go to the lower index), so the AiiDA workflow and benchmarks select the same frames.

Beside the committee, each frame may carry an extrapolation grade (how far its descriptors leave the training
ranges, see :meth:`~aiida_annpot.core.model.Potential.extrapolation_grade`). With ``extrapolation: candidate`` a
frame the committee calls accurate but whose grade exceeds ``extrapolation_tolerance`` is promoted to candidate:
members trained on the same data can agree confidently outside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputDataError

if TYPE_CHECKING:
    from ..common.config import SelectionConfig

__all__ = [
    "CLASSES",
    "STATUSES",
    "SelectionResult",
    "class_summary",
    "classify",
    "extrapolation_summary",
    "farthest_point_sampling",
    "select_candidates",
    "select_frames",
    "select_from_files",
]

#: What :func:`classify` calls a frame.
CLASSES = ("accurate", "candidate", "failed")
#: Final status of a frame, in the order frames fall out of the pipeline.
STATUSES = ("accurate", "failed", "too_close", "duplicate", "not_selected", "selected")
_STATUS_DTYPE = "<U12"
#: Upper bound on the elements of one temporary (points × block × D) array when computing distances to a set.
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class SelectionResult:
    """Outcome of :func:`select_candidates`.

    :param selected: (k,) indices of the picked frames, in pick order.
    :param status: (F,) final status of every frame, one of :data:`STATUSES`.
    :param counts: number of frames per final status; every key of :data:`STATUSES` is present.
    :param promoted: (p,) indices of accurate frames made candidates for their extrapolation grade, ascending;
        their final status is one a candidate can get, so they count among the candidates in :attr:`ratios`.
    """

    selected: np.ndarray
    status: np.ndarray
    counts: dict[str, int]
    promoted: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))

    @property
    def ratios(self) -> dict[str, float]:
        """Fractions of all frames that were accurate, in the trust window ("candidate") and failed."""
        total = sum(self.counts.values())
        if total == 0:
            return {"accurate": 0.0, "candidate": 0.0, "failed": 0.0}
        acc, fail = self.counts["accurate"], self.counts["failed"]
        return {"accurate": acc / total, "candidate": (total - acc - fail) / total, "failed": fail / total}


def classify(max_force_deviation: np.ndarray, trust_lo: float, trust_hi: float) -> np.ndarray:
    """Sort frames by committee disagreement: σ < trust_lo accurate, σ ≥ trust_hi (or not finite) failed.

    :param max_force_deviation: (F,) σ_F^max per frame, eV/Å.
    :return: (F,) str array of "accurate", "candidate" or "failed".
    :raises InputDataError: (a ValueError) ``max_force_deviation`` not 1-D or trust_lo ≥ trust_hi.
    """
    sigma = np.asarray(max_force_deviation, dtype=float)
    if sigma.ndim != 1:
        raise InputDataError(f"max_force_deviation must be 1-D (one value per frame), got shape {sigma.shape}")
    if not trust_lo < trust_hi:
        raise InputDataError(f"trust_lo ({trust_lo}) must be below trust_hi ({trust_hi})")
    status = np.full(sigma.shape, "candidate", dtype=_STATUS_DTYPE)
    status[sigma < trust_lo] = "accurate"
    status[~np.isfinite(sigma) | (sigma >= trust_hi)] = "failed"
    return status


def class_summary(status: np.ndarray) -> dict:
    """Frame count, counts and ratios per class of a :func:`classify` result (ratios are 0 for no frames)."""
    counts = {name: int(np.count_nonzero(status == name)) for name in CLASSES}
    total = len(status)
    return {"frames": total, "counts": counts, "ratios": {k: (v / total if total else 0.0) for k, v in counts.items()}}


def extrapolation_summary(grades: np.ndarray, tolerance: float) -> dict:
    """Count and ratio of frames out of the training range (grade > ``tolerance``; NaN is not), 0 for no frames."""
    grades = np.asarray(grades, dtype=float)
    out = int(np.count_nonzero(grades > tolerance))
    return {"tolerance": float(tolerance), "out_of_range": out, "ratio": out / len(grades) if len(grades) else 0.0}


def _promote_out_of_range(status: np.ndarray, extrapolation: np.ndarray | None, config: SelectionConfig) -> np.ndarray:
    """Make accurate frames with a grade above the tolerance candidates (``config.extrapolation == "candidate"``).

    :return: indices of the promoted frames; ``status`` is changed in place.
    :raises InputDataError: ``extrapolation`` not 1-D or not one grade per frame.
    """
    if extrapolation is None:
        return np.empty(0, dtype=int)
    grades = np.asarray(extrapolation, dtype=float)
    if grades.ndim != 1 or len(grades) != len(status):
        raise InputDataError(f"extrapolation must hold one grade per frame ({len(status)}), got shape {grades.shape}")
    if config.extrapolation != "candidate":
        return np.empty(0, dtype=int)
    promoted = np.flatnonzero((status == "accurate") & (grades > config.extrapolation_tolerance))
    status[promoted] = "candidate"
    return promoted


def _reference_array(reference: np.ndarray | None, dim: int) -> np.ndarray:
    """``reference`` as a (R, dim) float array; None or an empty array give R = 0."""
    if reference is None:
        return np.empty((0, dim))
    ref = np.asarray(reference, dtype=float)
    if ref.size == 0 and ref.ndim == 1:
        return np.empty((0, dim))
    if ref.ndim != 2:
        raise InputDataError(f"reference fingerprints must be 2-D (R, D), got shape {ref.shape}")
    if ref.shape[1] != dim:
        raise InputDataError(f"reference fingerprints have dimension {ref.shape[1]}, frames have {dim}")
    if not np.isfinite(ref).all():
        raise InputDataError("reference fingerprints contain NaN or inf")
    return ref


def _min_distance(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(M,) Euclidean distance from each point to its nearest row of ``others`` (inf when there is none)."""
    out = np.full(len(points), np.inf)
    if len(points) == 0 or len(others) == 0:
        return out
    block = max(1, _BLOCK_ELEMENTS // points.size)
    for start in range(0, len(others), block):
        diff = points[:, None, :] - others[None, start : start + block, :]
        out = np.minimum(out, np.sqrt(np.einsum("ijk,ijk->ij", diff, diff)).min(axis=1))
    return out


def _greedy_max_min(
    points: np.ndarray, n: int, gap: np.ndarray, first: int | None, stop_below: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Farthest-point sampling from the current distances ``gap`` to already-covered points (not modified).

    Stops early when the best remaining distance is below ``stop_below``.

    :return: picked indices in order, and the final distance of every point to the picked and covered points.
    """
    gap = gap.copy()
    available = np.ones(len(points), dtype=bool)
    order: list[int] = []
    while len(order) < min(n, len(points)):
        idx = int(np.argmax(np.where(available, gap, -np.inf))) if order or first is None else first
        if gap[idx] < stop_below:
            break
        order.append(idx)
        available[idx] = False
        gap = np.minimum(gap, np.sqrt(np.square(points - points[idx]).sum(axis=1)))
    return np.asarray(order, dtype=int), gap


def farthest_point_sampling(
    points: np.ndarray, n: int, reference: np.ndarray | None = None, first: int | None = None
) -> np.ndarray:
    """Greedy max-min picks: each next point maximises its smallest distance to the picks and the reference set.

    :param points: (M, D) coordinates, e.g. fingerprints.
    :param n: number of points to pick (at most M are returned).
    :param reference: optional (R, D) points already covered. When non-empty the first pick is the point farthest
        from it and ``first`` is ignored.
    :param first: index of the first pick when there is no reference set; default 0.
    :return: (min(n, M),) indices into ``points``, in pick order; ties go to the lower index.
    :raises InputDataError: (a ValueError) bad shapes, non-finite points, negative ``n`` or ``first`` out of range.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2:
        raise InputDataError(f"points must be 2-D (M, D), got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputDataError("points contain NaN or inf")
    if n < 0:
        raise InputDataError(f"number of points to pick must be non-negative, got {n}")
    ref = _reference_array(reference, pts.shape[1])
    if len(ref):
        first = None
    elif first is not None and not 0 <= first < len(pts):
        raise InputDataError(f"first pick {first} out of range for {len(pts)} points")
    return _greedy_max_min(pts, n, _min_distance(pts, ref), first)[0]


def select_candidates(
    max_force_deviation: np.ndarray,
    min_distance: np.ndarray,
    fingerprints: np.ndarray,
    config: SelectionConfig,
    reference_fingerprints: np.ndarray | None = None,
    extrapolation: np.ndarray | None = None,
) -> SelectionResult:
    """Pick the explored frames to label next: trust window, physicality, duplicates, then farthest-point sampling.

    Candidates (trust_lo ≤ σ < trust_hi) closer than ``config.min_distance`` become "too_close"; those within
    ``config.duplicate_threshold`` of a reference fingerprint, or of an already-picked frame, become "duplicate";
    ``config.cap(remaining)`` of the rest (a share of them, within [min_candidates, max_candidates]) are "selected"
    by farthest-point sampling (first pick: farthest from
    the reference set, or the largest σ without one) and the others are "not_selected". With
    ``config.extrapolation == "candidate"``, accurate frames whose extrapolation grade exceeds
    ``config.extrapolation_tolerance`` join the candidates first (NaN grades never do); with "ignore" the grades
    change nothing.

    :param max_force_deviation: (F,) σ_F^max per frame, eV/Å.
    :param min_distance: (F,) smallest interatomic distance per frame, Å.
    :param fingerprints: (F, D) fingerprint vectors.
    :param config: the selection settings.
    :param reference_fingerprints: optional (R, D) fingerprints of the current training set.
    :param extrapolation: optional (F,) extrapolation grade per frame; None means no grades (nothing promoted).
    :raises InputDataError: (a ValueError) mismatched lengths, bad shapes or non-finite candidate fingerprints.
    """
    sigma = np.asarray(max_force_deviation, dtype=float)
    dmin = np.asarray(min_distance, dtype=float)
    fps = np.asarray(fingerprints, dtype=float)
    if fps.ndim == 1 and fps.size == 0:
        fps = fps.reshape(0, 0 if reference_fingerprints is None else np.shape(reference_fingerprints)[-1])
    status = classify(sigma, config.trust_lo, config.trust_hi)
    if dmin.ndim != 1:
        raise InputDataError(f"min_distance must be 1-D (one value per frame), got shape {dmin.shape}")
    if fps.ndim != 2:
        raise InputDataError(f"fingerprints must be 2-D (frames, D), got shape {fps.shape}")
    if not len(sigma) == len(dmin) == len(fps):
        raise InputDataError(
            f"mismatched lengths: {len(sigma)} deviations, {len(dmin)} min distances, {len(fps)} fingerprints"
        )
    ref = _reference_array(reference_fingerprints, fps.shape[1])
    promoted = _promote_out_of_range(status, extrapolation, config)

    cand = np.flatnonzero(status == "candidate")
    close = ~(dmin[cand] >= config.min_distance)  # NaN distance counts as too close
    status[cand[close]] = "too_close"
    cand = cand[~close]
    points = fps[cand]
    if not np.isfinite(points).all():
        raise InputDataError("fingerprints of candidate frames contain NaN or inf")

    threshold = config.duplicate_threshold
    gap = _min_distance(points, ref)
    dup = gap < threshold
    status[cand[dup]] = "duplicate"
    cand, points, gap = cand[~dup], points[~dup], gap[~dup]

    first = int(np.argmax(sigma[cand])) if len(cand) and not len(ref) else None
    order, gap = _greedy_max_min(points, config.cap(len(cand)), gap, first, threshold)
    rest = np.ones(len(cand), dtype=bool)
    rest[order] = False
    status[cand[rest]] = np.where(gap[rest] < threshold, "duplicate", "not_selected")
    status[cand[order]] = "selected"
    counts = {name: int(np.count_nonzero(status == name)) for name in STATUSES}
    return SelectionResult(selected=cand[order], status=status, counts=counts, promoted=promoted)


def select_frames(
    frames: list, fingerprints: np.ndarray, origins: list[str], config: SelectionConfig, reference=None
) -> tuple[SelectionResult, dict, dict[str, np.ndarray]]:
    """The selection over scored frames (of explorations or of ``annpot score``), the one place it is decided.

    :param frames: scored frames, whose ``info`` holds ``max_force_std``, ``min_distance``, ``stage``, ``step``,
        ``structure``, ``extrapolation`` and (since the exploration records it) ``start``.
    :param origins: per frame, the name of the file it came from.
    :returns: the selection, the summary (counts and ratios overall and per stage, out-of-range counts, and per
        pick its origin, start structure, stage, step, σ_F^max) and per-frame arrays ``max_force_std``,
        ``extrapolation``, ``stage`` and ``selected``.
    """
    sigma = np.array([frame.info["max_force_std"] for frame in frames], dtype=float)
    distance = np.array([frame.info["min_distance"] for frame in frames], dtype=float)
    stage = np.array([frame.info["stage"] for frame in frames], dtype=int)
    grades = np.array([frame.info["extrapolation"] for frame in frames], dtype=float)
    if not frames:
        fingerprints = np.empty((0, 0 if reference is None else reference.shape[1]))
    result = select_candidates(sigma, distance, fingerprints, config, reference, grades)
    status = classify(sigma, config.trust_lo, config.trust_hi)
    picks = []
    for index in result.selected:
        info = frames[int(index)].info
        picks.append(
            {
                "origin": origins[index],
                "start": str(info["start"]) if "start" in info else None,
                **{key: int(info[key]) for key in ("structure", "stage", "step")},
                "max_force_std": float(sigma[index]),
                "promoted": bool(index in result.promoted),
                "extrapolation": float(grades[index]) if np.isfinite(grades[index]) else None,
            }
        )
    tolerance = config.extrapolation_tolerance
    stages = [
        {
            "stage": int(k),
            **class_summary(status[stage == k]),
            "extrapolation": extrapolation_summary(grades[stage == k], tolerance),
        }
        for k in np.unique(stage)
    ]
    summary = {
        **class_summary(status),
        "stages": stages,
        "selection_counts": result.counts,
        "extrapolation": {**extrapolation_summary(grades, tolerance), "promoted": len(result.promoted)},
        "selected": picks,
    }
    arrays = {
        "max_force_std": sigma,
        "extrapolation": grades,
        "stage": stage,
        "selected": np.isin(np.arange(len(frames)), result.selected),
    }
    return result, summary, arrays


#: What :func:`select_frames` reads of every frame (``extrapolation`` and ``start`` may be absent).
_SCORED_KEYS = ("structure", "stage", "step", "max_force_std", "min_distance")


def select_from_files(paths: list[str], config: SelectionConfig, reference=None, output="selected.extxyz") -> dict:
    """``annpot select``: :func:`select_frames` over frames files; writes the picks (bare structures with their
    origin in ``info``) to ``output`` and the summary to ``selection.json`` beside it. Returns the summary."""
    import json
    from pathlib import Path

    import ase.io
    from ase import Atoms

    from .explored import read_explored_frames

    frames, prints, origins = [], [], []
    for path in paths:
        try:  # files from the command line: a file that is not a frames file is bad input, not a crash
            part, fingerprints = read_explored_frames(path)
        except Exception as exc:  # ASE raises many types for malformed files; KeyError without fingerprints
            raise InputDataError(f"{path} is not a frames file of annpot explore or score: {exc!r}") from exc
        for index, frame in enumerate(part):
            missing = [key for key in _SCORED_KEYS if key not in frame.info]
            if missing:
                raise InputDataError(f"frame {index} of {path} lacks {', '.join(missing)}: not a scored frame")
        frames.extend(part)
        origins.extend([str(path)] * len(part))
        if part:
            prints.append(fingerprints)
    try:
        reference_array = np.load(reference, allow_pickle=False) if reference is not None else None
    except (OSError, ValueError) as exc:
        raise InputDataError(f"cannot read reference fingerprints from {reference}: {exc}") from exc
    stacked = np.concatenate(prints) if prints else np.empty((0, 0))
    result, summary, _ = select_frames(frames, stacked, origins, config, reference_array)
    picked = []
    for pick, index in zip(summary["selected"], result.selected, strict=True):
        frame = frames[int(index)]
        atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell.array, pbc=frame.pbc)
        atoms.info.update({key: value for key, value in pick.items() if value is not None})
        picked.append(atoms)
    output = Path(output)
    output.write_text("")
    if picked:
        ase.io.write(output, picked, format="extxyz")
    summary = json.loads(json.dumps(summary, default=int))
    output.with_name("selection.json").write_text(json.dumps(summary, indent=2))
    return summary
