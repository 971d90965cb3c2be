"""The ``annpot`` command: train, explore, evaluate and inspect models on a cluster node, without AiiDA.

Exit codes (see :mod:`aiida_annpot.core.errors`): 0 success, 2 bad input (configuration, structures, model files),
3 training diverged, 75 wall time reached (a checkpoint was written; rerun with ``--resume``). Bad input is reported
as ``annpot: error: <message>`` on stderr, never as a traceback; any other exception is a bug and propagates.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path

import click

from .. import __version__
from ..common import contract
from ..common.config import (
    ConfigError,
    ExplorationConfig,
    LabelConfig,
    ScoringConfig,
    SelectionConfig,
    TrainingConfig,
    load_config,
)
from ..common.contract import STATUS_FILE
from . import jsonio
from .errors import EXIT_DIVERGED, EXIT_INPUT_ERROR, EXIT_OK, EXIT_WALL_TIME, AnnpotError

__all__ = ["STATUS_FILE", "main"]

#: Exit code → the status written to :data:`~aiida_annpot.common.contract.STATUS_FILE` when ``train`` or ``explore``
#: ends (the scheduler does not keep the exit code).
_STATUS_NAMES = {
    EXIT_OK: contract.FINISHED,
    EXIT_INPUT_ERROR: contract.INPUT_ERROR,
    EXIT_DIVERGED: contract.DIVERGED,
    EXIT_WALL_TIME: contract.WALL_TIME,
}

#: Rows of the ``evaluate`` table: metric key, label, unit.
METRIC_ROWS = [
    ("energy_rmse", "energy RMSE", "meV/atom"),
    ("energy_mae", "energy MAE", "meV/atom"),
    ("force_rmse", "force RMSE", "eV/Å"),
    ("force_mae", "force MAE", "eV/Å"),
    ("stress_rmse", "stress RMSE", "GPa"),
]


class AnnpotCliError(click.ClickException):
    """Bad input reported as ``annpot: error: <message>`` with the engine's exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"annpot: error: {self.format_message()}", err=True)


def _reports_input_errors(command: Callable) -> Callable:
    """Turn :class:`AnnpotError` and :class:`ConfigError` raised by ``command`` into :class:`AnnpotCliError`."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AnnpotError as exc:
            raise AnnpotCliError(str(exc), exc.exit_code) from exc
        except ConfigError as exc:
            raise AnnpotCliError(str(exc), AnnpotError.exit_code) from exc

    return wrapper


def _records_status(command: Callable) -> Callable:
    """Write :data:`STATUS_FILE` to the command's existing ``workdir`` however it ends ("crashed" for a bug)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        code, message = EXIT_OK, ""
        try:
            return command(*args, **kwargs)
        except click.exceptions.Exit as exc:
            code = exc.exit_code
            raise
        except AnnpotCliError as exc:
            code, message = exc.exit_code, exc.format_message()
            raise
        except BaseException as exc:
            code, message = 1, f"{type(exc).__name__}: {exc}"
            raise
        finally:
            workdir = Path(kwargs["workdir"])
            if workdir.is_dir():  # bad input before the work started leaves nothing behind
                status = {"exit_code": code, "status": _STATUS_NAMES.get(code, contract.CRASHED), "message": message}
                (workdir / STATUS_FILE).write_text(jsonio.dumps(status))

    return wrapper


#: ``--trust-baseline``: the explicit trust an import-path baseline needs; files cannot give it to themselves.
def _config_and_workdir(workdir_help: str) -> Callable:
    """The CONFIG.yaml argument and ``--workdir`` option of the commands the CalcJobs run."""

    def decorate(command: Callable) -> Callable:
        command = click.option(
            "--workdir",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("."),
            show_default=True,
            help=workdir_help,
        )(command)
        config = click.argument("config_file", metavar="CONFIG.yaml", type=click.Path(dir_okay=False, path_type=Path))
        return config(command)

    return decorate


_trust_baseline = click.option(
    "--trust-baseline",
    "trusted_baselines",
    multiple=True,
    metavar="PACKAGE.MODULE.CLASS",
    help="Build this import-path baseline (an ASE calculator) when a configuration or model file names it "
    "(repeatable). Without it only the registered baselines (zbl, lj, morse, emt) are built.",
)


def _resolve(value: str | list[str] | None, base: Path) -> str | list[str] | None:
    """``value`` as a path relative to ``base`` unless it is absolute (``None`` stays ``None``; a list of paths is
    resolved path by path)."""
    if value is None:
        return None
    if isinstance(value, list):
        return [_resolve(item, base) for item in value]
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _format_value(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}g}"


def _metrics_table(columns: dict[str, dict]) -> list[str]:
    """Lines of a table with one row per metric and one column per entry of ``columns`` (name → metrics dict)."""
    names = list(columns)
    width = max(12, *(len(name) for name in names))
    lines = [f"{'metric':<14}{'unit':<10}" + "".join(f"{name:>{width + 2}}" for name in names)]
    for key, label, unit in METRIC_ROWS:
        cells = "".join(f"{_format_value(columns[name].get(key)):>{width + 2}}" for name in names)
        lines.append(f"{label:<14}{unit:<10}{cells}")
    return lines


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="annpot", message="%(prog)s %(version)s")
def cli() -> None:
    """aenet-style neural-network potentials: train, explore, evaluate, inspect."""


@cli.command()
@_config_and_workdir("Folder for the model, metrics, learning curve and checkpoint.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in WORKDIR, if there is one.")
@_trust_baseline
@_records_status
@_reports_input_errors
def train(config_file: Path, workdir: Path, resume: bool, trusted_baselines: tuple[str, ...]) -> None:
    """Train one model as described by CONFIG.yaml (paths in it are relative to its folder)."""
    config = load_config(config_file, TrainingConfig)
    base = config_file.parent
    config = config.model_copy(
        update={key: _resolve(getattr(config, key), base) for key in ("dataset", "validation_dataset", "init_model")}
    )
    from .training import CHECKPOINT, METRICS, MODEL, Trainer  # after the config check: a typo fails fast

    outcome = Trainer(config, workdir, log=click.echo, trusted_baselines=trusted_baselines).run(resume=resume)
    if outcome.status == "wall_time":
        click.echo(
            f"wall time reached after epoch {outcome.epochs}: checkpoint written to {workdir / CHECKPOINT}, "
            f"the best model so far to {workdir / MODEL}"
        )
        click.echo(f"resume with: annpot train {config_file} --workdir {workdir} --resume")
        click.get_current_context().exit(EXIT_WALL_TIME)
    validation = outcome.metrics.get("validation", {})
    click.echo(
        f"finished after {outcome.epochs} epochs: validation energy RMSE "
        f"{_format_value(validation.get('energy_rmse'))} meV/atom, force RMSE "
        f"{_format_value(validation.get('force_rmse'))} eV/Å"
    )
    click.echo(f"wrote {workdir / MODEL} and {workdir / METRICS}")


@cli.command()
@_config_and_workdir("Folder for the sampled frames and the summary.")
@click.option("--resume", is_flag=True, help="Continue an interrupted exploration in WORKDIR.")
@_trust_baseline
@_records_status
@_reports_input_errors
def explore(config_file: Path, workdir: Path, resume: bool, trusted_baselines: tuple[str, ...]) -> None:
    """Run committee MD as described by CONFIG.yaml; record and score sampled frames (select with `annpot select`)."""
    config = load_config(config_file, ExplorationConfig)
    base = config_file.parent
    config = config.model_copy(
        update={
            "models": [_resolve(model, base) for model in config.models],
            "structures": _resolve(config.structures, base),
            "reference_structures": _resolve(config.reference_structures, base),
        }
    )
    from .exploration import run_exploration  # lazy: torch-heavy, and only this command needs it

    workdir.mkdir(parents=True, exist_ok=True)
    result = run_exploration(config, workdir, resume=resume, log=click.echo, trusted_baselines=trusted_baselines)
    if result.get("status") == "wall_time":
        click.echo(f"resume with: annpot explore {config_file} --workdir {workdir} --resume")
        click.get_current_context().exit(EXIT_WALL_TIME)
    click.echo(f"explored {result.get('frames', '?')} frames; select with: annpot select {workdir / 'frames.extxyz'}")


@cli.command()
@_config_and_workdir("Folder for the scored frames and the summary.")
@click.option("--resume", is_flag=True, hidden=True, help="Accepted for the CalcJob; scoring starts over.")
@_trust_baseline
@_records_status
@_reports_input_errors
def score(config_file: Path, workdir: Path, resume: bool, trusted_baselines: tuple[str, ...]) -> None:
    """Score the frames of a trajectory file with a committee as CONFIG.yaml says (frames sampled elsewhere)."""
    config = load_config(config_file, ScoringConfig)
    base = config_file.parent
    config = config.model_copy(
        update={
            "models": [_resolve(model, base) for model in config.models],
            "frames": _resolve(config.frames, base),
            "reference_structures": _resolve(config.reference_structures, base),
        }
    )
    from .scoring import score_frames  # lazy: torch-heavy

    score_frames(config, workdir, log=click.echo, trusted_baselines=trusted_baselines)


@cli.command()
@_config_and_workdir("Folder for the label file.")
@click.option("--resume", is_flag=True, hidden=True, help="Accepted for the CalcJob; a label starts over.")
@_records_status
@_reports_input_errors
def label(config_file: Path, workdir: Path, resume: bool) -> None:
    """Label one structure with a registered ASE calculator as CONFIG.yaml says (benchmarks and tests, not DFT)."""
    config = load_config(config_file, LabelConfig)
    config = config.model_copy(update={"structure": _resolve(config.structure, config_file.parent)})
    from .ase_label import label_structure  # torch-free

    result = label_structure(config, workdir)
    click.echo(f"{config.calculator}: energy {result['energy']:.6f} eV in {result['compute_seconds']:.4f} s")


@cli.command()
@click.argument("frames", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="SelectionConfig YAML (trust window, duplicate filter, caps); defaults otherwise.",
)
@click.option(
    "--reference",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="reference_fingerprints.npy of the training set, for the duplicate filter.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("selected.extxyz"),
    show_default=True,
    help="Where the picked structures go (extxyz); selection.json beside it.",
)
@_reports_input_errors
def select(frames: tuple[Path, ...], config_file: Path | None, reference: Path | None, output: Path) -> None:
    """Pick structures to label from the FRAMES files of explorations or scorings, all at once."""
    from .selection import select_from_files  # torch-free

    config = load_config(config_file, SelectionConfig) if config_file else SelectionConfig()
    summary = select_from_files([str(f) for f in frames], config, reference, output)
    click.echo(
        f"{summary['frames']} frames: accurate {summary['ratios']['accurate']:.3f}, candidate "
        f"{summary['ratios']['candidate']:.3f}, failed {summary['ratios']['failed']:.3f}; "
        f"{len(summary['selected'])} selected → {output}"
    )


@cli.command("import-aenet")
@click.argument("generate_in", metavar="GENERATE_IN", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("train_in", metavar="TRAIN_IN", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("training.yaml"),
    show_default=True,
    help="Training configuration to write.",
)
@click.option(
    "--dataset",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also convert the XSF files into this extxyz file, which the configuration then trains on "
    "(default: the configuration lists the XSF files).",
)
@_reports_input_errors
def import_aenet(generate_in: Path, train_in: Path, output: Path, dataset: Path | None) -> None:
    """Turn aenet's GENERATE_IN and TRAIN_IN (with their fingerprint setups and XSF files) into a training
    configuration for 'annpot train'; what does not map onto annpot is reported."""
    from .aenet import import_aenet as convert

    if dataset is not None and dataset.suffix.lower() not in (".extxyz", ".xyz"):  # read back by its suffix
        raise click.BadParameter(
            f"{dataset}: the converted structures are extxyz, name the file *.extxyz", param_hint="--dataset"
        )
    result = convert(generate_in, train_in)
    for warning in result.warnings:
        click.echo(f"annpot: warning: {warning}", err=True)
    for note in result.notes:
        click.echo(note)
    energies = ", ".join(f"{element} {energy:g} eV" for element, energy in result.atomic_energies.items())
    click.echo(
        f"atomic energies (TYPES): {energies}: not used, annpot has no setting for them and fits per-element "
        "reference energies to the training data by least squares (recorded as a comment in the "
        "configuration)"
    )
    config = result.write(output, dataset)
    counts = ", ".join(f"{element} {n}" for element, n in zip(config.elements, _feature_counts(config), strict=True))
    click.echo(
        f"{len(result.frames)} structures, elements {', '.join(config.elements)}, {config.descriptor.type} "
        f"descriptor ({counts} features)"
    )
    click.echo(f"wrote {output}" + (f" and {dataset}" if dataset is not None else ""))
    click.echo(f"train with: annpot train {output} --workdir <folder>")


def _feature_counts(config: TrainingConfig) -> list[int]:
    """Descriptor features of each element of ``config``."""
    from .descriptors import make_descriptor

    descriptor = make_descriptor(config.elements, config.descriptor)
    counts = dict(zip(descriptor.elements, descriptor.features_per_element, strict=True))
    return [counts[element] for element in config.elements]


def _load_data(data: Path, potential, trusted_baselines=()):
    """Labelled frames of ``data`` as a FeatureSet for ``potential``, validated first.

    A delta-learning potential's networks predict DFT − baseline, so the baseline is subtracted from the labels.
    """
    from .baselines import subtract_baseline
    from .dataset import FeatureSet, read_frames, validate_labelled
    from .modelfile import build_baseline

    frames = read_frames(data)
    validate_labelled(frames, source=str(data), require_forces=False)
    baseline = build_baseline(potential, trusted_baselines)
    if baseline is not None:
        frames = subtract_baseline(frames, baseline, source=str(data))
    return FeatureSet(frames, potential, potential.dtype)


def _parity_rows(parity) -> list[tuple[str, float, float]]:
    """(kind, reference, predicted) rows of a Parity, skipping components without a finite reference."""
    rows = []
    for kind, reference, predicted in (
        ("energy_per_atom", parity.energy_ref, parity.energy_pred),
        ("force", parity.forces_ref, parity.forces_pred),
        ("stress", parity.stress_ref, parity.stress_pred),
    ):
        rows.extend((kind, float(r), float(p)) for r, p in zip(reference, predicted, strict=True) if math.isfinite(r))
    return rows


def _write_evaluation(output: Path, summary: dict, parity) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(jsonio.dumps(summary, indent=2))
    with (output / "parity.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "reference", "predicted"])
        writer.writerows((kind, repr(r), repr(p)) for kind, r, p in _parity_rows(parity))


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--member",
    "members",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Another committee member's model file (repeatable).",
)
@click.option(
    "--output", type=click.Path(file_okay=False, path_type=Path), help="Folder to write metrics.json and parity.csv to."
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the model runs: auto takes a GPU when torch finds one.",
)
@_trust_baseline
@_reports_input_errors
def evaluate(
    model: Path,
    data: Path,
    members: tuple[Path, ...],
    output: Path | None,
    device: str,
    trusted_baselines: tuple[str, ...],
) -> None:
    """Errors of MODEL (with any --member files, as a committee mean) on the labelled frames of DATA."""
    from .device import device_record, resolve_device
    from .metrics import parity
    from .modelfile import load_potential

    paths = [model, *members]
    resolved = resolve_device(device)
    potential = load_potential(paths).to(resolved)
    potential.eval()
    features = _load_data(data, potential, trusted_baselines)
    mean = parity(potential, features)
    members_metrics = [parity(potential, features, member=k).metrics() for k in range(len(paths))] if members else []
    columns = {"committee mean" if members else "model": mean.metrics()}
    columns.update({f"member {k}": values for k, values in enumerate(members_metrics)})
    click.echo(f"{len(features)} structures from {data}, {len(paths)} model file(s)")
    for line in _metrics_table(columns):
        click.echo(line)
    if output is not None:
        summary = {
            "models": [str(p) for p in paths],
            "data": str(data),
            "n_structures": len(features),
            "committee_mean": mean.metrics(),
            "members": members_metrics,
            "device": device_record(resolved),
        }
        _write_evaluation(output, summary, mean)
        click.echo(f"wrote {output / 'metrics.json'} and {output / 'parity.csv'}")


def _info_lines(metadata: dict) -> list[str]:
    """Human-readable summary of a model file's metadata."""
    from .baselines import describe_baseline, is_registered

    baseline = metadata.get("baseline")
    trust = (
        ""
        if baseline is None or is_registered(baseline["name"])
        else " (an import path: built only with --trust-baseline)"
    )
    descriptor = {key: value for key, value in metadata.get("descriptor", {}).items() if value is not None}
    if isinstance(descriptor.get("per_element"), dict):  # aenet-style sets: their sizes, not every function
        descriptor["per_element"] = (
            "{"
            + ", ".join(
                f"{element}: {len(functions.get('g2', []))} g2 + {len(functions.get('g4', []))} g4"
                for element, functions in descriptor["per_element"].items()
                if isinstance(functions, dict)
            )
            + "}"
        )
    network = metadata.get("network", {})
    lines = [
        f"elements:     {', '.join(metadata.get('elements', []))}",
        f"descriptor:   {descriptor.pop('type', '?')} ({', '.join(f'{k}={v}' for k, v in descriptor.items())})",
        f"network:      hidden {network.get('hidden')}, activation {network.get('activation')}",
        f"baseline:     {describe_baseline(baseline)}{trust}",
        f"dtype:        {metadata.get('dtype', '?')}",
        f"dataset hash: {metadata.get('dataset_hash', 'n/a')}",
        f"digest:       {metadata.get('digest', 'none (format v1, written before digests)')}",
    ]
    versions = metadata.get("versions", {})
    lines.append("versions:     " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    rows = {key for key, _, _ in METRIC_ROWS}  # error columns only: not the feature store's or the device's records
    metrics = {
        name: values
        for name, values in metadata.get("metrics", {}).items()
        if isinstance(values, dict) and rows & set(values)
    }
    if metrics:
        lines.append("metrics:")
        lines.extend("  " + line for line in _metrics_table(metrics))
    if "epochs" in metadata.get("metrics", {}):
        lines.append(f"epochs:       {metadata['metrics']['epochs']}")
    device = metadata.get("metrics", {}).get("device")
    if isinstance(device, dict):  # absent from files written before devices were recorded
        name = f" ({device['name']})" if device.get("name") else ""
        lines.append(f"trained on:   {device.get('type', '?')}{name}")
    return lines


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw metadata as JSON.")
@_reports_input_errors
def info(model: Path, as_json: bool) -> None:
    """Print the metadata of a model file: elements, descriptor, network, dataset hash, metrics, versions.

    The file's digest is checked first: a file edited after it was written is refused."""
    from .modelfile import has_feature_ranges, read_metadata, verify_model_file

    metadata = read_metadata(model)
    verify_model_file(model, metadata)
    if as_json:
        click.echo(json.dumps(metadata, indent=2))
        return
    click.echo(f"model:        {model}")
    for line in _info_lines(metadata):
        click.echo(line)
    known = has_feature_ranges(model)
    click.echo("ranges:       " + ("training feature ranges stored" if known else "none (extrapolation grade is 0)"))


def main() -> None:
    """Entry point of the ``annpot`` console script."""
    cli(prog_name="annpot")


if __name__ == "__main__":
    main()
