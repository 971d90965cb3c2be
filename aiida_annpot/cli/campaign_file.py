"""The campaign file of ``aiida-annpot launch``: its schema and every check made before anything is submitted.

```yaml
label: si-fast                # optional process label
protocol: fast                # fast | balanced | stringent
structures: {si: si.cif}      # name → file ASE reads (relative to this file), or a list of files
labeller: quantumespresso     # optional, the reference code: quantumespresso (default), cp2k
pseudo_family: Si-LDA-debian  # quantumespresso only: an aiida-pseudo family
codes: {reference: pw@localhost, annpot: annpot@localhost}   # `pw:` is accepted for `reference:`
overrides: {}                 # protocol overrides
options: {}                   # scheduler options for every CalcJob
gpus: 1                       # optional: GPUs per training and exploration job (Slurm: --gres=gpu:N)
model_selection: 1234         # optional: PK or UUID of a finished annpot.model_selection
```
Each problem is reported with the field it concerns (``codes.reference: no code 'pw@foo'``); the builder's own port
validation runs last (the labeller's settings and whether it can label every structure), so an invalid campaign
never reaches the engine.

The committee's training configuration is built in this order: protocol defaults → protocol → ``model_selection``
(its chosen ``config`` replaces ``committee.config`` as a whole: it is the complete configuration the candidates were
compared with, so no protocol training key is mixed into it) → ``overrides.committee.config`` (merged key by key on
top, e.g. ``max_epochs`` or ``threads``). Without such overrides the campaign's ``committee.config`` input is the
selection's output node itself, so the provenance graph links the campaign to the selection.
"""

from __future__ import annotations

import traceback
import warnings
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = ["CampaignFile", "CampaignFileError", "build_from_file"]

#: What a field must be, for type errors where pydantic's message would list every member of a union.
EXPECTED = {"structures": "a mapping name → structure file, or a list of structure files"}
#: Calculation plugins the annpot code may have as its default (the reference code's are its labeller's).
ANNPOT_PLUGINS = ("annpot.train", "annpot.explore")


class CampaignFileError(Exception):
    """The campaign file is invalid; the message names each field at fault."""


class Codes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference: str | None = Field(None, description="the labeller's code (pw.x, cp2k), as LABEL@COMPUTER")
    pw: str | None = Field(None, description="the same as reference, for Quantum ESPRESSO campaign files")
    annpot: str = Field(description="the annpot code for training and exploration, as LABEL@COMPUTER")

    @model_validator(mode="after")
    def _one_reference_code(self) -> Codes:
        if (self.reference is None) == (self.pw is None):
            raise ValueError("give the reference code once, as codes.reference (codes.pw is the same key)")
        return self

    @property
    def reference_field(self) -> str:
        return "reference" if self.reference is not None else "pw"


class CampaignFile(BaseModel):
    """Schema of the campaign file; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    label: str | None = None
    protocol: str | None = None
    structures: dict[str, str] | list[str]
    labeller: str | None = Field(None, description="the reference code's labeller; default the protocol's")
    pseudo_family: str | None = Field(None, description="quantumespresso: the aiida-pseudo family")
    codes: Codes
    overrides: dict = Field(default_factory=dict)
    options: dict = Field(default_factory=dict)
    gpus: int | None = Field(
        None, ge=0, description="GPUs per annpot job (training, exploration); the reference code's jobs get none"
    )
    model_selection: int | str | None = Field(None, description="PK or UUID of a finished annpot.model_selection")


def _schema_errors(error: ValidationError) -> list[str]:
    messages = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"] if not any(c in str(part) for c in "[]"))  # union tags
        text = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        text = f"expected {EXPECTED[loc]}" if loc in EXPECTED and item["type"] != "missing" else text
        messages.append(f"{loc or '(top level)'}: {text}")
    return sorted(set(messages))


def read_campaign_file(path: Path) -> CampaignFile:
    """The parsed campaign file. :raises CampaignFileError: not YAML, not a mapping, or not the schema."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CampaignFileError(f"cannot read the campaign file: {exc}") from exc
    if not isinstance(data, dict):
        raise CampaignFileError("the campaign file must be a YAML mapping (label, protocol, structures, ...)")
    try:
        return CampaignFile.model_validate(data)
    except ValidationError as exc:
        raise CampaignFileError("\n".join(_schema_errors(exc))) from exc


def _load_code(field: str, label: str, plugins: tuple[str, ...]):
    from aiida.common.exceptions import MultipleObjectsError, NotExistent
    from aiida.orm import load_code, load_computer

    if "@" in label:
        try:
            load_computer(label.rsplit("@", 1)[1])
        except NotExistent:
            return None, f"codes.{field}: no computer {label.rsplit('@', 1)[1]!r} (verdi computer list)"
    try:
        code = load_code(label)
    except (NotExistent, MultipleObjectsError, ValueError) as exc:
        reason = "no code" if isinstance(exc, NotExistent) else f"ambiguous or invalid code ({exc})"
        return None, f"codes.{field}: {reason} {label!r} (verdi code list)"
    if code.default_calc_job_plugin not in plugins:
        expected = " or ".join(plugins)
        return None, f"codes.{field}: code {label!r} runs {code.default_calc_job_plugin!r}, expected {expected}"
    return code, None


def _labeller(campaign: CampaignFile):
    """The labeller the campaign file names (or its protocol's), or an error naming the field."""
    from ..workflows.active_learning import ActiveLearningWorkChain
    from ..workflows.labelling import labeller_names, load_labeller

    name = campaign.labeller
    if name is None:  # the protocol's, or the overrides' (reference.labeller)
        try:
            name = ActiveLearningWorkChain.get_protocol_inputs(campaign.protocol, campaign.overrides)["reference"][
                "labeller"
            ]
        except ValueError:  # the protocol check names the problem; the codes are still checked, for the default
            overridden = (campaign.overrides.get("reference") or {}).get("labeller")
            name = overridden or ActiveLearningWorkChain.get_protocol_inputs()["reference"]["labeller"]
    if name not in labeller_names():
        return None, f"labeller: unknown labeller {name!r}; installed: {', '.join(labeller_names())}"
    return load_labeller(name), None


def _reason(exc: Exception, warned: list) -> str:
    """Why a structure file could not be read, also when ASE's exception carries no message (a bare assert, or
    StopIteration for a file in which it found no structure): the reader's warnings and the failing line say it."""
    if isinstance(exc, StopIteration):
        reason = "no structure found in the file"
    elif str(exc):
        reason = f"{type(exc).__name__}: {exc}"
    else:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        reason = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno} ({frame.line})"
    notes = sorted({str(item.message) for item in warned})
    return reason + (f" (ASE warned: {'; '.join(notes)})" if notes else "")


def _load_structures(campaign: CampaignFile, folder: Path) -> tuple[dict, list[str]]:
    import ase.io
    from aiida.orm import StructureData

    entries = campaign.structures
    named = entries.items() if isinstance(entries, dict) else ((f"s{i:02d}", p) for i, p in enumerate(entries))
    structures, errors = {}, []
    for index, (key, name) in enumerate(named):
        field = f"structures.{key}" if isinstance(entries, dict) else f"structures[{index}]"
        path = (folder / name).resolve()
        if not path.is_file():
            errors.append(f"{field}: no file {str(path)!r}")
            continue
        with warnings.catch_warnings(record=True) as warned:  # ASE's readers often warn first, then fail bare
            warnings.simplefilter("always")
            try:
                structures[key] = StructureData(ase=ase.io.read(path))
            except Exception as exc:  # ASE raises many types for unreadable files
                errors.append(f"{field}: ASE cannot read {str(path)!r}: {_reason(exc, warned)}")
    if not entries:
        errors.append("structures: no structure given")
    return structures, errors


def _load_model_selection(reference: int | str):
    """The finished ``annpot.model_selection`` with PK or UUID ``reference`` (it has a chosen ``config``)."""
    from aiida.common.exceptions import MultipleObjectsError, NotExistent
    from aiida.orm import load_node

    from ..workflows.model_selection import ModelSelectionWorkChain

    try:
        node = load_node(reference)
    except (NotExistent, MultipleObjectsError, ValueError) as exc:
        return None, f"model_selection: no node {reference!r} ({exc})"
    if getattr(node, "process_type", None) != ModelSelectionWorkChain.build_process_type():
        kind = getattr(node, "process_label", None) or type(node).__name__
        return None, f"model_selection: node {reference!r} is a {kind}, not an annpot.model_selection work chain"
    name = f"ModelSelectionWorkChain<{node.pk}>"
    if not node.is_finished_ok or "config" not in node.outputs:
        state = node.process_state.value if node.process_state else "unknown state"
        status = f", exit status {node.exit_status}: {node.exit_message}" if node.is_finished else ""
        return None, f"model_selection: {name} has not finished successfully ({state}{status})"
    return node, None


def _selection_problems(selection, structures: dict) -> list[str]:
    """The chosen configuration must cover the elements of the campaign's structures, if it names elements."""
    elements = selection.outputs.config.get_dict().get("elements")
    wanted = sorted({symbol for s in structures.values() for kind in s.kinds for symbol in kind.symbols})
    missing = sorted(set(wanted) - set(elements or wanted))
    return (
        [
            f"model_selection: the chosen configuration covers elements {elements}, the structures also have "
            f"{', '.join(missing)}"
        ]
        if missing
        else []
    )


def _protocol_overrides(campaign: CampaignFile) -> dict:
    """The overrides for the protocol: with a model selection, ``committee.config`` applies to its config instead."""
    committee = campaign.overrides.get("committee")
    if campaign.model_selection is None or not isinstance(committee, dict) or "config" not in committee:
        return campaign.overrides
    return {**campaign.overrides, "committee": {k: v for k, v in committee.items() if k != "config"}}


def _apply_model_selection(builder, selection, campaign: CampaignFile) -> None:
    """``committee.config`` := the selection's ``config``, with ``overrides.committee.config`` merged on top."""
    from aiida.orm import Dict

    from ..workflows.protocols import merge

    config = selection.outputs.config
    changes = (campaign.overrides.get("committee") or {}).get("config") or {}
    try:
        builder.committee.config = Dict(merge(config.get_dict(), changes)) if changes else config
    except ValueError as exc:  # the port validator of the merged settings
        raise CampaignFileError(f"overrides.committee.config on top of model_selection: {exc}") from exc
    extra = f", with overrides of {', '.join(sorted(changes))}" if changes else ""
    builder.metadata.description = (
        f"committee training configuration chosen by ModelSelectionWorkChain<{selection.pk}>{extra}"
    )


def _check_options(options: dict) -> list[str]:
    from aiida.engine import CalcJob

    known = set(CalcJob.spec_options)
    # every CalcJob gets `options`, the reference code's too, whose plugin has no gpus option
    gpus = ["options.gpus: give GPUs as the top-level gpus: key (they go to the annpot jobs only)"] * (
        "gpus" in options
    )
    return gpus + [
        f"options.{key}: unknown scheduler option; known: {', '.join(sorted(known))}"
        for key in sorted(set(options) - known - {"gpus"})
    ]


def _check_protocol(campaign: CampaignFile) -> list[str]:
    from ..workflows.active_learning import ActiveLearningWorkChain

    available = ActiveLearningWorkChain.get_available_protocols()
    if campaign.protocol is not None and campaign.protocol not in available:
        return [f"protocol: unknown protocol {campaign.protocol!r}; available: {', '.join(available)}"]
    try:
        ActiveLearningWorkChain.get_protocol_inputs(campaign.protocol, campaign.overrides)
    except ValueError as exc:
        return [f"overrides: {exc}"]
    return []


def build_from_file(path: str | Path):
    """A validated ActiveLearningWorkChain builder from the campaign file at ``path``.

    :raises CampaignFileError: anything wrong, with every field at fault (nothing is stored or submitted).
    """
    from ..workflows.active_learning import ActiveLearningWorkChain

    path = Path(path)
    campaign = read_campaign_file(path)
    labeller, errors = _labeller(campaign)
    errors = [errors] if errors else []
    codes = campaign.codes
    reference_code, reference_error = None, None
    if labeller is not None:
        field = codes.reference_field
        reference_code, reference_error = _load_code(field, getattr(codes, field), labeller.calc_job_plugins)
    annpot_code, annpot_error = _load_code("annpot", codes.annpot, ANNPOT_PLUGINS)
    structures, structure_errors = _load_structures(campaign, path.parent)
    errors += structure_errors + [e for e in (reference_error, annpot_error) if e]
    errors += _check_protocol(campaign) + _check_options(campaign.options)
    selection = None
    if campaign.model_selection is not None:
        selection, selection_error = _load_model_selection(campaign.model_selection)
        errors += [selection_error] if selection_error else _selection_problems(selection, structures)
    if errors:
        raise CampaignFileError("\n".join(errors))
    try:
        builder = ActiveLearningWorkChain.get_builder_from_protocol(
            reference_code,
            annpot_code,
            structures,
            campaign.pseudo_family,
            protocol=campaign.protocol,
            overrides=_protocol_overrides(campaign),
            options=campaign.options,
            labeller=labeller.name,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # e.g. an override of the wrong type
        raise CampaignFileError(f"cannot build the campaign inputs: {exc}") from exc
    if campaign.label:
        builder.metadata.label = campaign.label
    if campaign.gpus is not None:  # the annpot jobs only: the labeller's code may not run on GPUs at all
        builder.committee.train.train.metadata.options.gpus = campaign.gpus
        builder.exploration.explore.explore.metadata.options.gpus = campaign.gpus
    if selection is not None:
        _apply_model_selection(builder, selection, campaign)
    error = ActiveLearningWorkChain.spec().inputs.validate(builder._inputs(prune=True))
    if error is not None:
        raise CampaignFileError(f"invalid campaign inputs: {error}")
    return builder
