"""The campaign file of ``aiida-annpot launch``: its schema and every check made before anything is submitted.

```yaml
label: si-fast                # optional process label
protocol: fast                # fast | balanced | stringent
structures: {si: si.cif}      # name → file ASE reads (relative to this file), or a list of files
pseudo_family: Si-LDA-debian
codes: {pw: pw@localhost, annpot: annpot@localhost}
overrides: {}                 # protocol overrides
options: {}                   # scheduler options for every CalcJob
```
Each problem is reported with the field it concerns (``codes.pw: no code 'pw@foo'``); the builder's own port
validation runs last, so an invalid campaign never reaches the engine.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["CampaignFile", "CampaignFileError", "build_from_file"]

#: What a field must be, for type errors where pydantic's message would list every member of a union.
EXPECTED = {"structures": "a mapping name → structure file, or a list of structure files"}
#: Calculation plugins each code may have as its default.
CODE_PLUGINS = {"pw": ("quantumespresso.pw",), "annpot": ("annpot.train", "annpot.explore")}


class CampaignFileError(Exception):
    """The campaign file is invalid; the message names each field at fault."""


class Codes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pw: str = Field(description="the pw.x code, as LABEL@COMPUTER")
    annpot: str = Field(description="the annpot code for training and exploration, as LABEL@COMPUTER")


class CampaignFile(BaseModel):
    """Schema of the campaign file; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    label: str | None = None
    protocol: str | None = None
    structures: dict[str, str] | list[str]
    pseudo_family: str
    codes: Codes
    overrides: dict = Field(default_factory=dict)
    options: dict = Field(default_factory=dict)


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


def _load_code(field: str, label: str):
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
    if code.default_calc_job_plugin not in CODE_PLUGINS[field]:
        return None, (f"codes.{field}: code {label!r} runs {code.default_calc_job_plugin!r}, expected "
                      f"{' or '.join(CODE_PLUGINS[field])}")  # fmt: skip
    return code, None


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
        try:
            structures[key] = StructureData(ase=ase.io.read(path))
        except Exception as exc:  # ASE raises many types for unreadable files
            errors.append(f"{field}: ASE cannot read {str(path)!r}: {exc or type(exc).__name__}")
    if not entries:
        errors.append("structures: no structure given")
    return structures, errors


def _check_options(options: dict) -> list[str]:
    from aiida.engine import CalcJob

    known = set(CalcJob.spec_options)
    return [f"options.{key}: unknown scheduler option; known: {', '.join(sorted(known))}"
            for key in sorted(set(options) - known)]  # fmt: skip


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
    from ..workflows.reference import validate_pseudo_family

    path = Path(path)
    campaign = read_campaign_file(path)
    pw_code, pw_error = _load_code("pw", campaign.codes.pw)
    annpot_code, annpot_error = _load_code("annpot", campaign.codes.annpot)
    structures, errors = _load_structures(campaign, path.parent)
    errors += [e for e in (pw_error, annpot_error) if e]
    if structures:
        family_error = validate_pseudo_family(campaign.pseudo_family, structures)
        errors += [f"pseudo_family: {family_error}"] if family_error else []
    errors += _check_protocol(campaign) + _check_options(campaign.options)
    if errors:
        raise CampaignFileError("\n".join(errors))
    try:
        builder = ActiveLearningWorkChain.get_builder_from_protocol(
            pw_code, annpot_code, structures, campaign.pseudo_family, protocol=campaign.protocol,
            overrides=campaign.overrides, options=campaign.options,
        )  # fmt: skip
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # e.g. an override of the wrong type
        raise CampaignFileError(f"overrides / options: cannot build the campaign inputs: {exc}") from exc
    if campaign.label:
        builder.metadata.label = campaign.label
    error = ActiveLearningWorkChain.spec().inputs.validate(builder._inputs(prune=True))
    if error is not None:
        raise CampaignFileError(f"invalid campaign inputs: {error}")
    return builder
