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

__all__ = ["CLASSES", "STATUSES", "SelectionResult", "class_summary", "classify", "extrapolation_summary",
           "farthest_point_sampling", "select_candidates"]  # fmt: skip

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
