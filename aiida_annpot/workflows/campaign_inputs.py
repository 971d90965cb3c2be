"""Port validators of ``ActiveLearningWorkChain``: bad campaign input is refused before anything runs."""

from __future__ import annotations

from aiida.orm import Dict, List
from pydantic import TypeAdapter, ValidationError

from ..calculations.base import validate_config_dict
from ..calculations.explore import validate_exploration_config
from ..common.config import (
    ConfigError,
    ExplorationStage,
    GenerationConfig,
    SelectionConfig,
    Supercell,
    TestSetConfig,
    load_config,
)
from ..core.testset import TARGET_KEYS as TEST_TARGET_KEYS
from .reference import labeller_problem, overlapping_structure

__all__ = [
    "TARGET_KEYS",
    "split_exploration_config",
    "validate_generation",
    "validate_inputs",
    "validate_stage_schedule",
    "validate_start_supercells",
    "validate_targets",
    "validate_test_set",
    "validate_test_targets",
]

#: Validation targets a campaign may set, in the units of the metrics: meV/atom and eV/Å.
TARGET_KEYS = ("energy_rmse", "force_rmse")


def split_exploration_config(settings: dict) -> tuple[dict, dict]:
    """The campaign's ``exploration_config`` as (the engine's ExplorationConfig settings, the SelectionConfig
    settings): the engine samples and scores, the selection runs once over all exploration jobs."""
    engine = {key: value for key, value in settings.items() if key != "selection"}
    return engine, settings.get("selection") or {}


def validate_generation(value: Dict, _) -> str | None:
    return validate_config_dict(value, GenerationConfig, path_keys=(), placeholders={})


def validate_test_set(value: Dict, _) -> str | None:
    return validate_config_dict(value, TestSetConfig, path_keys=(), placeholders={})


def validate_start_supercells(value: List, _) -> str | None:
    repeats = value.get_list()
    if not repeats:
        return "start_supercells is empty: give at least one repetition triple such as [1, 1, 1]"
    adapter = TypeAdapter(Supercell)
    for index, repeat in enumerate(repeats):
        try:
            adapter.validate_python(repeat)
        except ValidationError as exc:
            return f"start_supercells[{index}] = {repeat!r}: {exc.errors()[0]['msg']}"
    return None


def _check_targets(targets: dict, known: tuple[str, ...], what: str) -> str | None:
    """Known keys with positive numbers; ``None`` switches a target off (so protocol overrides can drop one)."""
    unknown = sorted(set(targets) - set(known))
    if unknown:
        return f"unknown {what} target(s) {', '.join(unknown)}; known: {', '.join(known)}"
    bad = {
        key: target
        for key, target in targets.items()
        if target is not None and not (isinstance(target, int | float) and target > 0)
    }
    return f"{what} targets must be positive numbers (or null to switch one off): {bad}" if bad else None


def unreachable_test_targets(inputs: dict) -> str | None:
    """Why a test target can never be met with the test set these inputs make: a figure the test set cannot give
    would keep the campaign from converging, so it is refused before anything runs."""
    targets = {key for key, value in inputs["test_targets"].get_dict().items() if value is not None}
    if not targets or "test_dataset" in inputs:  # the user's frames may give any figure
        return None
    generation = load_config(inputs["test_set"].get_dict(), TestSetConfig).generation
    if generation is None and not inputs.get("test_structures"):
        return (
            f"test_targets {', '.join(sorted(targets))} are set but there is no test set: give test_set.generation, "
            "test_structures or test_dataset, or set the targets to null"
        )
    if generation is None:
        return None
    missing = []
    if targets & {"volume_error", "bulk_modulus_error"} and generation.volumes + int(generation.include_ideal) < 5:
        missing.append("volume_error / bulk_modulus_error need test_set.generation.volumes ≥ 5")
    if "vacancy_error" in targets and not generation.vacancies:
        missing.append("vacancy_error needs test_set.generation.vacancies ≥ 1")
    return f"test targets that the test set cannot give: {'; '.join(missing)}" if missing else None


def validate_test_targets(value: Dict, _) -> str | None:
    return _check_targets(value.get_dict(), TEST_TARGET_KEYS, "test")


def validate_stage_schedule(value: List, _) -> str | None:
    schedule = value.get_list()
    if not schedule:
        return "stage_schedule is empty: give at least one list of stages"
    for index, stages in enumerate(schedule):
        if not isinstance(stages, list) or not stages:
            return f"stage_schedule[{index}] must be a non-empty list of stages"
        for number, stage in enumerate(stages):
            try:
                load_config(stage, ExplorationStage)
            except ConfigError as exc:
                return f"stage_schedule[{index}][{number}]: {exc}"
    return None


def validate_targets(value: Dict, _) -> str | None:
    return _check_targets(value.get_dict(), TARGET_KEYS, "validation")


def validate_inputs(inputs: dict, _) -> str | None:
    structures = inputs.get("structures", {})
    if not structures:
        return "no initial structures: the structures namespace is empty"
    test_structures = {f"test_structures.{key}": s for key, s in inputs.get("test_structures", {}).items()}
    message = overlapping_structure({f"structures.{key}": s for key, s in structures.items()} | test_structures)
    if message:
        return message
    message = labeller_problem(inputs.get("reference", {}), {**structures, **test_structures})
    if message:
        return message
    if "exploration_config" in inputs and "stage_schedule" in inputs:
        engine, selection = split_exploration_config(inputs["exploration_config"].get_dict())
        message = validate_config_dict(Dict(selection), SelectionConfig, path_keys=(), placeholders={})
        if message:
            return f"exploration_config.selection: {message}"
        for stages in inputs["stage_schedule"].get_list():
            message = validate_exploration_config(Dict({**engine, "stages": stages}), None)
            if message:
                return f"exploration_config with stages {stages}: {message}"
    if "generation" in inputs and load_config(inputs["generation"].get_dict(), GenerationConfig).vacancies:
        small = [key for key, s in structures.items() if len(s.sites) * _cells(inputs["generation"]) < 2]
        if small:
            return f"vacancies asked for, but structure(s) {', '.join(small)} would have fewer than 2 atoms"
    if "test_targets" in inputs and "test_set" in inputs:
        message = unreachable_test_targets(inputs)
        if message:
            return message
    if not 0 < inputs["conv_accuracy"].value <= 1:
        return f"conv_accuracy must be in (0, 1], got {inputs['conv_accuracy'].value}"
    if inputs["max_iterations"].value < 1:
        return f"max_iterations must be at least 1, got {inputs['max_iterations'].value}"
    return None


def _cells(generation: Dict) -> int:
    a, b, c = load_config(generation.get_dict(), GenerationConfig).supercell
    return a * b * c
