"""The schema of the campaign protocol's own settings (iterations, the labeller and its settings, job sizes),
checked when a builder is made from a protocol, so that ``max_iterations: two`` or ``ecutwfc: high`` is refused by
name before any process exists. The free-form sections (:data:`~aiida_annpot.workflows.protocols.FREE_FORM`) have
schemas of their own, applied by the builder's ports."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StrictBool, ValidationError, model_validator

from ...common.config import ConfigError, Supercell, _problem, load_config

__all__ = ["check_protocol_inputs"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReferenceSettings(BaseModel):
    """The labeller, job sizes, and one section per labeller (``quantumespresso: {...}``), each checked by that
    labeller's own protocol schema."""

    model_config = ConfigDict(extra="allow")
    labeller: str = Field(description="quantumespresso, cp2k, ...: an installed annpot.labelling.<name>")
    max_concurrent: PositiveInt
    max_wallclock_seconds: PositiveInt

    @model_validator(mode="after")
    def _labeller_sections(self) -> ReferenceSettings:
        from ..labelling import labeller_names, load_labeller

        names = labeller_names()
        if self.labeller not in names:
            raise ValueError(f"labeller: unknown labeller {self.labeller!r}; installed: {', '.join(names)}")
        for name, entries in (self.model_extra or {}).items():
            if name not in names:
                raise ValueError(f"{name}: neither a reference setting nor an installed labeller ({', '.join(names)})")
            try:
                load_labeller(name).protocol_model.model_validate(entries)
            except ValidationError as exc:  # each field by its full path, with its own reason and value
                errors = [{**error, "loc": ("reference", name, *error["loc"])} for error in exc.errors()]
                raise ValueError("; ".join(_problem(error) for error in errors)) from exc
        return self


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
