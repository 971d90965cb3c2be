"""The schema of the campaign protocol's own settings (iterations, DFT cutoffs, job sizes), checked when a builder is
made from a protocol, so that ``max_iterations: two`` or ``ecutwfc: high`` is refused by name before any process
exists. The free-form sections (:data:`~aiida_annpot.workflows.protocols.FREE_FORM`) have schemas of their own,
applied by the builder's ports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, StrictBool

from ...common.config import ConfigError, Supercell, load_config

__all__ = ["check_protocol_inputs"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReferenceSettings(_Section):
    max_concurrent: PositiveInt
    pw_protocol: Literal["fast", "balanced", "stringent"]
    electronic_type: Literal["metal", "insulator"]
    ecutwfc: PositiveFloat = Field(description="Ry")
    ecutrho: PositiveFloat = Field(description="Ry")
    kpoints_distance: PositiveFloat = Field(description="1/Å")
    kpoints_offset: list[float] | None = Field(
        None, min_length=3, max_length=3, description="Mesh shift in mesh steps, e.g. [0.5, 0.5, 0.5]; none: Γ-centred"
    )
    bands_factor: float | None = Field(None, ge=1.0, description="nbnd as a multiple of the occupied bands")
    pw_parameters: dict[str, dict[str, Any]]
    max_wallclock_seconds: PositiveInt


class CommitteeSettings(_Section):
    committee_size: PositiveInt
    max_wallclock_seconds: PositiveInt
    config: dict[str, Any]


class ExplorationSettings(_Section):
    num_jobs: PositiveInt
    max_wallclock_seconds: PositiveInt
    start_supercells: list[Supercell] = Field(min_length=1)
    start_vacancies: StrictBool
    config: dict[str, Any]
    stage_schedule: list[list[dict[str, Any]]] = Field(min_length=1)


class ProtocolInputs(_Section):
    max_iterations: PositiveInt
    conv_accuracy: float = Field(gt=0.0, le=1.0)
    warm_start: StrictBool
    validation_targets: dict[str, Any]
    test_targets: dict[str, Any]
    generation: dict[str, Any]
    test_set: dict[str, Any]
    reference: ReferenceSettings
    committee: CommitteeSettings
    exploration: ExplorationSettings


def check_protocol_inputs(inputs: dict) -> None:
    """:raises ValueError: naming every field of the merged protocol inputs that has the wrong type or range."""
    try:
        load_config(inputs, ProtocolInputs)
    except ConfigError as exc:
        raise ValueError(
            str(exc).replace("configuration: invalid ProtocolInputs", "invalid campaign settings")
        ) from exc
