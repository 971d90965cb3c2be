"""Pydantic schemas for every engine configuration: descriptor, network, training, exploration, selection.

The same classes validate AiiDA ports at submit time and ``annpot`` input files on a cluster node, so a typo fails
before anything is queued. Every model forbids unknown keys. Units: Å, eV, fs, K, GPa.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)

__all__ = [
    "VALIDATION_PROPERTIES",
    "AseLabelSettings",
    "BaselineConfig",
    "BehlerParrinelloConfig",
    "BehlerParrinelloSet",
    "ChebyshevConfig",
    "ConfigError",
    "DescriptorConfig",
    "EquationOfStateSettings",
    "ExplorationConfig",
    "ExplorationStage",
    "GenerationConfig",
    "LabelConfig",
    "LossConfig",
    "MDStabilitySettings",
    "ModelSelectionConfig",
    "NetworkConfig",
    "ScoringConfig",
    "SelectionConfig",
    "TestSetConfig",
    "TrainingConfig",
    "VacancySettings",
    "ValidationConfig",
    "load_config",
]


class ConfigError(ValueError):
    """A configuration file or mapping that does not match its schema; the message names the offending fields."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive_repetitions(value: list[int]) -> list[int]:
    if any(n < 1 for n in value):
        raise ValueError(f"supercell repetitions must be at least 1, got {value}")
    return value


#: Repetitions of a cell along its three lattice vectors, each at least 1.
Supercell = Annotated[list[int], Field(min_length=3, max_length=3), AfterValidator(_positive_repetitions)]


class ChebyshevConfig(_Strict):
    """Chebyshev radial and angular expansion (Artrith, Urban & Ceder, PRB 96, 014112, 2017)."""

    type: Literal["chebyshev"] = "chebyshev"
    radial_order: int = Field(10, ge=0, le=40, description="Highest Chebyshev order of the radial expansion.")
    radial_cutoff: float = Field(5.5, gt=0.5, le=20.0, description="Radial cutoff R_c in Å.")
    angular_order: int = Field(4, ge=0, le=10, description="Highest Chebyshev order in cos(theta).")
    angular_cutoff: float = Field(4.0, gt=0.5, le=20.0, description="Angular cutoff in Å (at most the radial one).")
    type_weights: dict[str, float] | None = Field(
        None,
        description="Per-element weights of the second, type-weighted channel (several species only). "
        "Default: the aenet typespin sequence 0, ±1, ±2, ... centred over the sorted elements.",
    )

    @model_validator(mode="after")
    def _angular_within_radial(self) -> ChebyshevConfig:
        if self.angular_cutoff > self.radial_cutoff:
            raise ValueError(
                f"angular_cutoff ({self.angular_cutoff} Å) must not exceed radial_cutoff ({self.radial_cutoff} Å)"
            )
        return self


#: Where the engine runs its tensors: ``auto`` takes the GPU when torch finds one, else the CPU; ``cuda`` insists on
#: a GPU and fails at the start of the run, naming this setting, where there is none. The node's GPU is the job's
#: first visible one (a batch job sees only the GPUs it was given, so an index would name the wrong card).
Device = Literal["auto", "cpu", "cuda"]
DEVICE_HELP = (
    "Where tensors live: auto (a GPU when torch finds one, else the CPU), cpu, or cuda (a GPU or an error at the "
    "start of the run). Results agree to floating-point rounding."
)


def _without_auto_device(data: dict) -> dict:
    """``device: auto`` (the default) stays out of dumps, as the settings of :func:`_without_unset` do."""
    return {key: value for key, value in data.items() if not (key == "device" and value == "auto")}


def _without_unset(data: dict, keys: tuple[str, ...]) -> dict:
    """``data`` without the ``keys`` whose value is None (or empty): settings added after model files and AiiDA
    nodes were first written stay out of their dumps unless used, so those dumps, digests and hashes are unchanged."""
    return {key: value for key, value in data.items() if key not in keys or value not in (None, [], {})}


class G2(_Strict):
    """Radial function exp(-η (r - r_s)²) f_c(r), summed over the neighbours of one element."""

    eta: float = Field(..., ge=0.0, description="Gaussian width parameter in 1/Å².")
    r_s: float = Field(0.0, ge=0.0, description="Gaussian centre in Å.")
    neighbour: str | None = Field(
        None, description="Element of the neighbours summed over (aenet's type2); none: one function per element."
    )
    cutoff: float | None = Field(None, gt=0.5, le=20.0, description="This function's R_c in Å; none: the descriptor's.")

    @model_serializer(mode="wrap")
    def _compact(self, handler) -> dict:
        return _without_unset(handler(self), ("neighbour", "cutoff"))


class G4(_Strict):
    """Angular function 2^(1-ζ) (1 + λ cos θ)^ζ exp(-η (r_ij² + r_ik² + r_jk²)) f_c f_c f_c over neighbour pairs."""

    eta: float = Field(..., ge=0.0, description="Gaussian width parameter in 1/Å².")
    zeta: float = Field(..., ge=1.0, description="Angular resolution exponent.")
    lambda_: Literal[-1, 1] = Field(..., alias="lambda", description="+1 or -1: which side of cos(theta) peaks.")
    neighbours: tuple[str, str] | None = Field(
        None,
        description="Elements of the neighbour pair, in either order (aenet's type2, type3); none: one "
        "function per element pair.",
    )
    cutoff: float | None = Field(None, gt=0.5, le=20.0, description="This function's R_c in Å; none: the descriptor's.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_serializer(mode="wrap")
    def _compact(self, handler) -> dict:
        return _without_unset(handler(self), ("neighbours", "cutoff"))


def _default_g2() -> list[G2]:
    return [G2(eta=eta) for eta in (0.003, 0.02, 0.06, 0.15, 0.3, 0.6, 1.2, 2.5)]


def _default_g4() -> list[G4]:
    return [G4(eta=eta, zeta=zeta, lambda_=lam) for eta in (0.003, 0.03) for zeta in (1.0, 4.0) for lam in (-1, 1)]


def _named_consistently(functions: list, attribute: str, kind: str) -> None:
    """Within one list, either every function names its neighbour element(s) or none does (the layouts differ)."""
    named = {getattr(g, attribute) is not None for g in functions}
    if len(named) > 1:
        raise ValueError(f"either every {kind} function names its {attribute} or none does, not some of them")


class BehlerParrinelloSet(_Strict):
    """The functions of the atoms of one element (aenet: one ``*.fingerprint.stp`` file)."""

    g2: list[G2] = Field([], description="Radial functions.")
    g4: list[G4] = Field([], description="Angular functions.")

    @model_validator(mode="after")
    def _functions(self) -> BehlerParrinelloSet:
        if not self.g2 and not self.g4:
            raise ValueError("a function set needs at least one g2 or g4 function")
        _named_consistently(self.g2, "neighbour", "g2")
        _named_consistently(self.g4, "neighbours", "g4")
        return self


class BehlerParrinelloConfig(_Strict):
    """Behler–Parrinello radial G2 and angular G4 symmetry functions, resolved by neighbour species.

    ``g2`` and ``g4`` are shared by every element: a function that names no neighbour element(s) is repeated for
    every element (G2) or element pair (G4). ``per_element`` gives each element its own set instead (as aenet's
    setup files do), typically with functions that name their neighbours.
    """

    type: Literal["behler_parrinello"] = "behler_parrinello"
    cutoff: float = Field(5.5, gt=0.5, le=20.0, description="Cutoff radius in Å: the largest of any function.")
    g2: list[G2] = Field(default_factory=_default_g2)
    g4: list[G4] = Field(default_factory=_default_g4)
    per_element: dict[str, BehlerParrinelloSet] | None = Field(
        None, description="Element → its own function set, replacing g2 and g4 (which must then be empty)."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_shared_defaults(cls, data: Any) -> Any:
        """With per-element sets, absent g2 and g4 mean no shared functions rather than the default ones."""
        if isinstance(data, dict) and data.get("per_element") is not None:
            data = {"g2": [], "g4": [], **data}
        return data

    @model_validator(mode="after")
    def _sets(self) -> BehlerParrinelloConfig:
        if self.per_element is None:
            if not self.g2:
                raise ValueError("g2 needs at least one function")
            _named_consistently(self.g2, "neighbour", "g2")
            _named_consistently(self.g4, "neighbours", "g4")
            sets = [self]
        else:
            if self.g2 or self.g4:
                raise ValueError("give either g2 and g4 (shared by every element) or per_element sets, not both")
            if not self.per_element:
                raise ValueError("per_element needs at least one element")
            sets = list(self.per_element.values())
        too_far = sorted({g.cutoff for s in sets for g in [*s.g2, *s.g4] if (g.cutoff or 0.0) > self.cutoff})
        if too_far:
            raise ValueError(f"function cutoffs {too_far} Å exceed the descriptor cutoff ({self.cutoff} Å)")
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler) -> dict:
        return _without_unset(handler(self), ("per_element",) if self.per_element is None else ("g2", "g4"))


DescriptorConfig = Annotated[ChebyshevConfig | BehlerParrinelloConfig, Field(discriminator="type")]


class NetworkConfig(_Strict):
    """One feed-forward network per element, the same architecture for all elements."""

    hidden: list[int] = Field([16, 16], min_length=1, description="Hidden layer widths.")
    activation: Literal["tanh", "silu", "softplus", "gelu"] = "tanh"

    @model_validator(mode="after")
    def _positive_widths(self) -> NetworkConfig:
        if any(width < 1 for width in self.hidden):
            raise ValueError(f"hidden layer widths must be positive, got {self.hidden}")
        return self


class LossConfig(_Strict):
    """Weights of the squared errors: energy per atom (eV/atom)², force components (eV/Å)², stress (GPa)².

    Energies per atom are ~100 times more precise than force components (meV/atom vs tens of meV/Å), so equal
    weights would leave the energy underfitted; 10 : 1 was best on the EMT Cu benchmark (bench/RESULTS.md).
    """

    energy_weight: float = Field(10.0, ge=0.0)
    force_weight: float = Field(1.0, ge=0.0)
    stress_weight: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _something_to_fit(self) -> LossConfig:
        if self.energy_weight == 0 and self.force_weight == 0 and self.stress_weight == 0:
            raise ValueError("at least one of energy_weight, force_weight, stress_weight must be positive")
        return self


class BaselineConfig(_Strict):
    """Delta learning: the networks learn DFT − baseline, and the calculator adds the baseline back.

    ``name`` is ``"zbl"`` (the built-in Ziegler–Biersack–Littmark screened nuclear repulsion, switched off smoothly
    below the bonding distances), a registered ASE calculator name (``"lj"``, ``"morse"``, ``"emt"``), or the import
    path of any ASE calculator class (``"package.module.Class"``). A registered name and its parameters are checked by
    building the calculator, so they fail at submit time; an import path is never imported because a configuration
    names it: it is built only where the user trusts it explicitly (``--trust-baseline``).
    """

    name: str = Field(..., min_length=1, description='"zbl", a registered ASE name, or "package.module.Class".')
    parameters: dict[str, Any] = Field({}, description="Keyword arguments of the baseline calculator.")

    @model_validator(mode="after")
    def _checked(self) -> BaselineConfig:
        from .baselines import check_baseline  # the engine's calculators are never imported here

        check_baseline(self)  # raises ValueError naming the problem; imports nothing a file names
        return self


class TrainingConfig(_Strict):
    """Everything ``annpot train`` needs; paths are relative to the configuration file's folder."""

    dataset: str | list[str] = Field(
        ...,
        description="Labelled frames: an extxyz file (energy, forces, optionally stress), an aenet XSF file, a "
        "folder of XSF files, or a list of such files.",
    )
    validation_dataset: str | list[str] | None = Field(
        None, description="Fixed validation frames (as dataset); else a seeded split."
    )
    elements: list[str] | None = Field(None, description="Elements the model covers (default: those in the data).")
    descriptor: DescriptorConfig = Field(default_factory=ChebyshevConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    seed: int = Field(0, ge=0, description="Seeds the split, the initial weights and the batch order.")
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    training_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="Share of the training split actually used (learning curves)."
    )
    batch_size: int = Field(16, ge=1, description="Structures per optimisation step.")
    learning_rate: float = Field(3e-3, gt=0.0)
    lr_schedule: Literal["plateau", "exponential", "constant"] = "plateau"
    lr_decay: float = Field(0.5, gt=0.0, le=1.0, description="Factor applied by the schedule.")
    lr_patience: int = Field(10, ge=1, description="Epochs without improvement before a plateau decay.")
    min_learning_rate: float = Field(1e-5, gt=0.0)
    max_epochs: int = Field(500, ge=1)
    early_stopping_patience: int = Field(40, ge=1, description="Epochs without validation improvement.")
    keep_weights: Literal["best_validation", "last_epoch"] = Field(
        "best_validation",
        description="Weights the model file keeps: those of the epoch with the lowest validation loss, or the last "
        "epoch's. With a handful of validation frames the lowest loss is often a lucky fluctuation of an "
        "under-trained model; keep the last epoch's then, with a schedule that decays the learning rate.",
    )
    wall_time: float | None = Field(None, gt=0.0, description="Seconds; then checkpoint and exit with code 75.")
    checkpoint_interval: int = Field(10, ge=1, description="Epochs between checkpoints.")
    init_model: str | None = Field(None, description="Model file to warm-start from (fine-tuning).")
    baseline: BaselineConfig | None = Field(
        None, description="Delta learning: fit DFT minus this baseline; the model file records it and adds it back."
    )
    dtype: Literal["float32", "float64"] = "float64"
    device: Device = Field("auto", description=DEVICE_HELP)
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's choice).")
    feature_store: Literal["memory", "disk"] | None = Field(
        None,
        description="Where the precomputed descriptors and pair Jacobians are kept: memory (fastest), or disk (flat "
        "files in the working directory, read a batch at a time, deleted when training ends: memory then grows only "
        "with the frames). Default: memory while their estimated size fits memory_budget, else disk.",
    )
    memory_budget: float | None = Field(
        None,
        gt=0.0,
        description="GiB the features may take in memory before they go to disk. Default: half the memory available "
        "when training starts (within the cgroup limit of a batch job or container).",
    )

    @model_serializer(mode="wrap")
    def _compact(self, handler) -> dict:
        return _without_auto_device(_without_unset(handler(self), ("feature_store", "memory_budget")))

    @model_validator(mode="after")
    def _lr_bounds(self) -> TrainingConfig:
        if self.min_learning_rate > self.learning_rate:
            raise ValueError(
                f"min_learning_rate ({self.min_learning_rate}) exceeds learning_rate ({self.learning_rate})"
            )
        return self


class ExplorationStage(_Strict):
    """One MD stage: every start structure is run at this temperature (and pressure, for NPT)."""

    temperature: float = Field(..., gt=0.0, description="K.")
    pressure: float | None = Field(None, description="GPa; given means NPT, absent means NVT.")
    ensemble: Literal["nvt", "npt", "nve"] | None = Field(
        None,
        description="Default: npt with a pressure, else nvt. nve runs velocity Verlet from Maxwell-Boltzmann "
        "velocities at `temperature` (energy conservation tests).",
    )
    steps: int = Field(1000, ge=1)
    timestep: float = Field(2.0, gt=0.0, le=10.0, description="fs.")
    sample_interval: int = Field(10, ge=1, description="Steps between sampled frames.")

    @model_validator(mode="after")
    def _ensemble_matches_pressure(self) -> ExplorationStage:
        if self.ensemble in ("nvt", "nve") and self.pressure is not None:
            raise ValueError(f"a pressure ({self.pressure} GPa) needs the npt ensemble, not {self.ensemble}")
        if self.ensemble == "npt" and self.pressure is None:
            raise ValueError("the npt ensemble needs a pressure (GPa)")
        return self

    @property
    def resolved_ensemble(self) -> str:
        """The ensemble this stage runs: explicit, or npt with a pressure and nvt without."""
        return self.ensemble or ("npt" if self.pressure is not None else "nvt")


class SelectionConfig(_Strict):
    """Which explored frames become new DFT labels (see :mod:`aiida_annpot.core.selection`)."""

    trust_lo: float = Field(0.05, ge=0.0, description="eV/Å: below, the committee agrees (accurate).")
    trust_hi: float = Field(0.35, gt=0.0, description="eV/Å: above, the frame is likely unphysical (failed).")
    min_distance: float = Field(1.0, gt=0.0, description="Å: frames with closer atoms are rejected.")
    duplicate_threshold: float = Field(
        0.0, ge=0.0, description="Fingerprint distance below which a candidate duplicates the reference set."
    )
    max_candidates: int = Field(20, ge=0, description="Cap per iteration; farthest-point sampling picks them.")
    candidate_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="The cap follows the committee's disagreement: this share of the "
        "candidates left after the filters is picked, at least min_candidates and at most max_candidates.",
    )
    min_candidates: int = Field(1, ge=0, description="Picks per iteration while that many candidates are left.")
    extrapolation: Literal["ignore", "candidate"] = Field(
        "ignore",
        description="candidate: a frame the committee calls accurate but whose descriptors leave the training "
        "range (extrapolation grade above extrapolation_tolerance) becomes a candidate too.",
    )
    extrapolation_tolerance: float = Field(
        0.01,
        ge=0.0,
        description="Extrapolation grade (excess over the training range, in units of that range) above which a "
        "frame counts as out of range; above float32 rounding (~1e-6), below physically meaningful excursions.",
    )
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _ordered_window(self) -> SelectionConfig:
        if not self.trust_lo < self.trust_hi:
            raise ValueError(f"trust_lo ({self.trust_lo}) must be below trust_hi ({self.trust_hi})")
        return self

    def cap(self, candidates: int) -> int:
        """How many of ``candidates`` remaining candidates to pick: ``candidate_fraction`` of them, rounded up,
        at least min_candidates, at most max_candidates (which wins) and never more than there are."""
        share = round(self.candidate_fraction * candidates, 9)  # 0.07 × 100 is 7.000000000000001 in floats
        wanted = max(self.min_candidates, math.ceil(share))
        return min(wanted, self.max_candidates, candidates)


class ExplorationConfig(_Strict):
    """Everything ``annpot explore`` needs; paths are relative to the configuration file's folder."""

    models: list[str] = Field(..., min_length=1, description="Committee member model files.")
    structures: str = Field(..., description="Start structures (extxyz).")
    stages: list[ExplorationStage] = Field(..., min_length=1)
    friction: float = Field(0.01, gt=0.0, description="Langevin friction in 1/fs.")
    barostat_time: float = Field(500.0, gt=0.0, description="fs, NPT pressure coupling time.")
    break_deviation: float | None = Field(
        None, gt=0.0, description="eV/Å: stop a trajectory when the max force deviation passes this."
    )
    min_distance: float = Field(0.7, gt=0.0, description="Å: stop a trajectory when atoms come closer.")
    reference_structures: str | None = Field(
        None, description="Training structures (extxyz): their fingerprints feed the duplicate filter."
    )
    wall_time: float | None = Field(
        None, gt=0.0, description="Seconds; then stop after a recorded frame and exit with code 75 (resume later)."
    )
    dtype: Literal["float32", "float64"] = Field("float32", description="float32 is fast enough for MD.")
    device: Device = Field("auto", description=DEVICE_HELP)
    skin: float = Field(0.5, ge=0.0, description="Verlet skin (Å) of the neighbour list reused across steps.")
    batch_trajectories: int = Field(
        16,
        ge=1,
        description="Trajectories (start structures × stages) advanced side by side, one model call per MD step "
        "for all of them (fewer where a call would exceed 256 atoms per thread): small cells share the call's "
        "fixed cost. Each gets what it would get alone, to floating-point rounding; 1 runs them one after another.",
    )
    seed: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1)

    @model_serializer(mode="wrap")
    def _compact(self, handler) -> dict:
        return _without_auto_device(handler(self))

    @model_validator(mode="before")
    @classmethod
    def _no_selection(cls, data: Any) -> Any:
        if isinstance(data, dict) and "selection" in data:
            raise ValueError(
                "selection is not an exploration setting: the exploration samples and scores frames, and the "
                "selection runs once over all of them (annpot select, or the select_candidates step)"
            )
        return data


class ScoringConfig(_Strict):
    """Everything ``annpot score`` needs: score the frames of a trajectory file with a committee, as the exploration
    scores its own; paths are relative to the configuration file's folder."""

    models: list[str] = Field(..., min_length=1, description="Committee member model files.")
    frames: str = Field(..., description="Trajectory file of the frames to score (extxyz, traj, xyz, ...).")
    format: str | None = Field(None, description="ASE format of `frames`; guessed from the file when unset.")
    start: str = Field("frames", min_length=1, description="Key recorded with every frame as its origin.")
    reference_structures: str | None = Field(
        None, description="Training structures (extxyz): their fingerprints feed the duplicate filter."
    )
    dtype: Literal["float32", "float64"] = "float32"
    device: Device = Field("auto", description=DEVICE_HELP)
    threads: int | None = Field(None, ge=1)
    wall_time: float | None = Field(None, gt=0.0, description="Seconds (accepted for the CalcJob; scoring is short).")

    @model_serializer(mode="wrap")
    def _compact(self, handler) -> dict:
        return _without_auto_device(handler(self))


class AseLabelSettings(_Strict):
    """A registered ASE calculator as a stand-in for DFT (``annpot.labelling.ase``): for benchmarks and workflow
    tests, never for physics. Only registered names are built (as for baselines): a file never chooses code to
    import."""

    calculator: str = Field(..., min_length=1, description="A registered ASE calculator name: emt, lj, morse, zbl, ...")
    parameters: dict[str, Any] = Field({}, description="Keyword arguments of the calculator.")

    @model_validator(mode="after")
    def _registered(self) -> AseLabelSettings:
        from .baselines import check_baseline, is_registered, registered_names

        if not is_registered(self.calculator):
            raise ValueError(
                f"calculator {self.calculator!r} is not a registered ASE calculator (registered: "
                f"{', '.join(registered_names())}); an import path is never built from a configuration"
            )
        check_baseline({"name": self.calculator, "parameters": self.parameters})  # refuses unknown parameters
        return self


class LabelConfig(AseLabelSettings):
    """Everything ``annpot label`` needs: one structure (ASE's JSON format, exact to the last bit, relative to the
    configuration file's folder) and the registered calculator that labels it."""

    structure: str = Field(..., description="The structure to label (ASE JSON).")
    wall_time: float | None = Field(None, gt=0.0, description="Seconds (accepted for the CalcJob; a label is short).")


def _amplitudes(value: list[float]) -> list[float]:
    if any(not 0.0 < a < 1.0 for a in value):
        raise ValueError(f"rattle amplitudes must lie in (0, 1) Å, got {value}")
    return value


#: Rattle amplitudes in Å, each in (0, 1).
Amplitudes = Annotated[list[float], AfterValidator(_amplitudes)]


class GenerationConfig(_Strict):
    """The structures generated from each input structure (Miksch et al. 2021, step i): the ideal supercell, an
    energy–volume series, isotropically and anisotropically (shear and normal) strained copies, rattled copies at
    several amplitudes, vacancies in a cell large enough to hold one (with rattled copies) and surface slabs.
    Every random choice is seeded. The campaign's training set and its independent test set are both made by this
    schema, with different seeds and ranges.
    """

    supercell: Supercell = Field([1, 1, 1], description="Repetitions of the input cell.")
    include_ideal: bool = Field(True, description="Label the ideal supercell itself.")
    volumes: int = Field(0, ge=0, description="Energy–volume series: ideal cells at this many volumes (0: none).")
    max_volume_strain: float = Field(0.1, gt=0.0, lt=0.5, description="The series spans V0·(1 ± this).")
    isotropic_strains: int = Field(4, ge=0, description="Copies under a random isotropic strain.")
    anisotropic_strains: int = Field(0, ge=0, description="Copies under a random symmetric (shear and normal) strain.")
    max_strain: float = Field(0.04, gt=0.0, lt=0.5, description="Largest strain component.")
    rattles: int = Field(4, ge=0, description="Copies with Gaussian displacements, per amplitude.")
    rattle_amplitudes: Amplitudes = Field(
        [0.05],
        min_length=1,
        description="Å, standard deviations per Cartesian coordinate; up to the largest "
        "displacements the target MD reaches.",
    )
    min_distance_ratio: float = Field(
        0.8,
        ge=0.0,
        lt=1.0,
        description="Rattled copies keep atoms at least this fraction of the ideal cell's "
        "nearest-neighbour distance apart (0: no limit).",
    )
    vacancies: int = Field(0, ge=0, description="Copies of the vacancy cell with one atom removed (distinct sites).")
    vacancy_supercell: Supercell = Field(
        [1, 1, 1], description="Repetitions of the supercell that make the vacancy cell (a vacancy needs room)."
    )
    vacancy_rattles: Amplitudes = Field([], description="Å: one rattled copy of every vacancy cell per amplitude.")
    slab_miller: list[list[int]] = Field([], description="Miller index triples of surface slabs.")
    slab_layers: int = Field(4, ge=1)
    slab_vacuum: float = Field(6.0, gt=0.0, description="Å of vacuum on each side of a slab.")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _something_to_label(self) -> GenerationConfig:
        if any(len(m) != 3 or not any(m) for m in self.slab_miller):
            raise ValueError(f"slab_miller must hold non-zero Miller index triples, got {self.slab_miller}")
        if self.volumes == 1:
            raise ValueError("volumes must be 0 (no energy–volume series) or at least 2")
        count = (
            int(self.include_ideal)
            + self.volumes
            + self.isotropic_strains
            + self.anisotropic_strains
            + self.rattles * len(self.rattle_amplitudes)
            + self.vacancies * (1 + len(self.vacancy_rattles))
            + len(self.slab_miller)
        )
        if count == 0:
            raise ValueError("generation makes no structure: enable include_ideal or ask for some copies")
        return self


class TestSetConfig(_Strict):
    """The campaign's independent test set: structures labelled once with the campaign's DFT settings and never
    trained on. ``generation`` makes them from every input structure with its own seed (use wider ranges than the
    training set's); with ``vacancies`` the ideal vacancy cell is labelled too, for the vacancy formation energy,
    and an energy–volume series (``volumes`` ≥ 5) gives V0 and B0. ``md_frames`` frames of the last iteration's
    exploration at its hottest stage are labelled at the end and scored with the final committee.
    """

    __test__ = False  # not a pytest class

    generation: GenerationConfig | None = Field(
        None, description="GenerationConfig of the generated test structures; none: only user-given structures."
    )
    md_frames: int = Field(0, ge=0, description="Hot MD frames of the final committee's exploration to label.")
    seed: int = Field(0, ge=0, description="Seeds the choice of the MD frames.")

    @model_validator(mode="after")
    def _fit_needs_points(self) -> TestSetConfig:
        if self.generation is not None and 0 < self.generation.volumes < 5:
            raise ValueError(f"a Birch–Murnaghan fit needs at least 5 volumes, got {self.generation.volumes}")
        return self


class ModelSelectionConfig(_Strict):
    """The candidate models of a model selection (Miksch et al. 2021, step 2) and how they are compared.

    Every descriptor is combined with every network (a grid). Each candidate trains on ``training_fractions`` of
    one fixed training split (learning curves) and is scored on one fixed validation split by
    ``energy_rmse / best energy_rmse + force_rmse / best force_rmse`` at the full training set; candidates within
    ``tie_tolerance`` of the best score tie, and the one with the fewest parameters wins.
    """

    descriptors: list[DescriptorConfig] = Field(..., description="Descriptor candidates (family, orders, cutoffs).")
    networks: list[NetworkConfig] = Field(..., description="Network candidates (hidden layers, activation).")
    training_fractions: list[float] = Field(
        [0.25, 0.5, 1.0], description="Shares of the training split for the learning curves; must include 1.0."
    )
    validation_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Share of the dataset held out once.")
    split_seed: int = Field(0, ge=0, description="Seeds the one train/validation split all candidates share.")
    tie_tolerance: float = Field(
        0.05, ge=0.0, description="Relative score difference within which the smaller model is preferred."
    )

    @model_validator(mode="after")
    def _grid_and_fractions(self) -> ModelSelectionConfig:
        empty = [name for name in ("descriptors", "networks") if not getattr(self, name)]
        if empty:
            raise ValueError(f"the model grid is empty: give at least one entry in {' and '.join(empty)}")
        fractions = self.training_fractions
        if not fractions or any(not 0.0 < f <= 1.0 for f in fractions) or 1.0 not in fractions:
            raise ValueError(f"training_fractions must lie in (0, 1] and include 1.0, got {fractions}")
        if len(set(fractions)) != len(fractions):
            raise ValueError(f"training_fractions has repeated values: {fractions}")
        return self


class EquationOfStateSettings(_Strict):
    """Energy–volume curve: isotropic strains of the input cell, fitted by Birch–Murnaghan (third order)."""

    points: int = Field(7, ge=5, le=31, description="Volumes on the curve (a BM3 fit has 4 parameters).")
    max_volume_strain: float = Field(0.08, gt=0.0, lt=0.5, description="Volumes span V0·(1 ± this).")


class VacancySettings(_Strict):
    """Unrelaxed vacancy formation energy E_f = E(N−1) − (N−1)/N·E(N) in a supercell of the input cell."""

    supercell: Supercell = Field([1, 1, 1], description="Repetitions of the input cell.")
    site: int = Field(0, ge=0, description="Index (in the supercell) of the removed atom.")


class MDStabilitySettings(_Strict):
    """NVE molecular dynamics with the potential alone: energy drift and closest approach of atoms."""

    supercell: Supercell = Field([1, 1, 1], description="Repetitions of the input cell.")
    temperature: float = Field(300.0, gt=0.0, description="K, of the initial Maxwell–Boltzmann velocities.")
    steps: int = Field(2000, ge=10)
    timestep: float = Field(1.0, gt=0.0, le=10.0, description="fs.")
    sample_interval: int = Field(5, ge=1, description="Steps between recorded frames.")
    max_drift: float = Field(1.0, gt=0.0, description="meV/atom/ps: a larger |drift| fails the test.")
    min_distance: float = Field(1.5, gt=0.0, description="Å: atoms closer than this fail the test.")


#: Physical properties the validation work chain can compare with DFT.
VALIDATION_PROPERTIES = ("equation_of_state", "vacancy", "md_stability")


class ValidationConfig(_Strict):
    """Which physical properties to test a potential on, and their settings."""

    properties: list[Literal["equation_of_state", "vacancy", "md_stability"]] = Field(
        list(VALIDATION_PROPERTIES), min_length=1, description="Properties to compute."
    )
    equation_of_state: EquationOfStateSettings = Field(default_factory=EquationOfStateSettings)
    vacancy: VacancySettings = Field(default_factory=VacancySettings)
    md_stability: MDStabilitySettings = Field(default_factory=MDStabilitySettings)

    @model_validator(mode="after")
    def _unique_properties(self) -> ValidationConfig:
        if len(set(self.properties)) != len(self.properties):
            raise ValueError(f"properties has repeated entries: {self.properties}")
        return self


def _problem(error: dict) -> str:
    """``field.path: reason (got 'value')``; the value only when it is a scalar (a mapping would drown the line)."""
    where = ".".join(str(part) for part in error["loc"]) or "<root>"
    value = error.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float | bool) and error["type"] != "missing" else ""
    return f"{where}: {error['msg']}{shown}"


def load_config(source: str | Path | dict, schema: type[BaseModel]) -> BaseModel:
    """Validate a YAML file (or an already-parsed mapping) against ``schema``.

    :raises ConfigError: unreadable file, not a mapping, or schema violations (each field path and reason listed).
    """
    if isinstance(source, dict):
        data, origin = source, "configuration"
    else:
        path = Path(source)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read configuration {path}: {exc}") from exc
        origin = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise ConfigError(f"{origin}: invalid {schema.__name__}: {problems}") from exc
