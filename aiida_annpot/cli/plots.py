"""``aiida-annpot plot``: PNG figures of a campaign or a validation (matplotlib's Agg backend, no display needed).

A campaign gives ``errors.png`` (the committee's test-set and validation errors per iteration),
``learning_curves.png`` (the last committee's members, per epoch), ``force_deviation.png`` (histograms of σ_F^max
per iteration with the trust levels), ``parity.png`` (the final potential against the DFT labels of the independent
test set, frames it never trained on), ``test_equation_of_state.png`` (the test set's energy–volume series, DFT and
potential) and ``parity_training.png`` (the same on the training labels, for comparison). A validation
(``annpot.validation``) gives ``equation_of_state.png`` (DFT and potential energies against volume with their
Birch–Murnaghan fits) and ``md_energy.png`` (total energy of the NVE run against time, with its drift).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from aiida.cmdline.utils import decorators, echo

from .root import NODE, cmd_root, load_campaign_or_validation
from .status import iteration_rows

__all__ = [
    "plot_deviations",
    "plot_equation_of_state",
    "plot_errors",
    "plot_learning_curves",
    "plot_md_energy",
    "plot_parity",
    "plot_test_equation_of_state",
    "write_plots",
    "write_validation_plots",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    _pyplot().close(figure)
    return path


def _called(node, process_label: str) -> list:
    return sorted((c for c in node.called if c.process_label == process_label), key=lambda c: c.ctime)


def plot_errors(rows: list[dict], output: Path, targets: dict | None = None) -> Path | None:
    """Energy and force RMSE of each iteration's committee on the test set and (mean over members) on the
    members' validation splits, with the test targets as dashed lines."""
    rows = [row for row in rows if row.get("validation") or row.get("test")]
    if not rows:
        return None
    targets = targets or {}
    figure, axes = _pyplot().subplots(1, 2, figsize=(9, 3.5))
    iterations = [row["iteration"] for row in rows]
    for axis, key, unit in zip(axes, ("energy_rmse", "force_rmse"), ("meV/atom", "eV/Å"), strict=True):
        for source, style in (("test", "o-"), ("validation", "s--")):
            values = [np.nan if row.get(source, {}).get(key) is None else row[source][key] for row in rows]
            if not np.isnan(values).all():
                axis.plot(iterations, values, style, label=f"{source} set")
        if key in targets:
            axis.axhline(targets[key], color="grey", linestyle=":", label="test target")
        axis.set(xlabel="iteration", ylabel=f"{key.split('_')[0]} RMSE ({unit})", yscale="log")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.legend(fontsize=8)
    return _save(figure, output / "errors.png")


def plot_learning_curves(node, output: Path) -> Path | None:
    """Validation errors per epoch of every member of the last committee."""
    committees = [c for c in _called(node, "CommitteeTrainingWorkChain") if c.is_finished_ok]
    if not committees:
        return None
    links = [
        link
        for link in committees[-1].base.links.get_outgoing().all()
        if link.link_label.startswith("learning_curves__")
    ]
    figure, axes = _pyplot().subplots(1, 2, figsize=(9, 3.5))
    for link in sorted(links, key=lambda link: link.link_label):
        curve, member = link.node, link.link_label.split("__")[-1]
        axes[0].plot(curve.get_array("epoch"), curve.get_array("validation_energy_rmse"), label=member)
        axes[1].plot(curve.get_array("epoch"), curve.get_array("validation_force_rmse"), label=member)
    axes[0].set(xlabel="epoch", ylabel="validation energy RMSE (meV/atom)", yscale="log")
    axes[1].set(xlabel="epoch", ylabel="validation force RMSE (eV/Å)", yscale="log")
    axes[1].legend()
    figure.suptitle(f"last committee: CommitteeTrainingWorkChain<{committees[-1].pk}>")
    return _save(figure, output / "learning_curves.png")


def plot_deviations(node, output: Path) -> Path | None:
    """Histogram of the max force deviation σ_F^max of the explored frames, one per iteration, with trust levels."""
    explorations = [e for e in _called(node, "ExplorationWorkChain") if "deviations" in e.outputs]
    if not explorations:
        return None
    figure, axis = _pyplot().subplots(figsize=(6, 3.5))
    for index, exploration in enumerate(explorations, start=1):
        sigma = exploration.outputs.deviations.get_array("max_force_std")
        axis.hist(sigma[np.isfinite(sigma)], bins=30, histtype="step", label=f"iteration {index}")
    selection = node.inputs.exploration_config.get_dict().get("selection", {})
    for key in ("trust_lo", "trust_hi"):
        if key in selection:
            axis.axvline(selection[key], color="grey", linestyle="--")
            axis.text(
                selection[key],
                0.98,
                f"{key} ",
                transform=axis.get_xaxis_transform(),
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
                color="grey",
            )
    axis.set(xlabel="max force deviation σ_F (eV/Å)", ylabel="frames")
    axis.legend()
    return _save(figure, output / "force_deviation.png")


def parity_data(potential, dataset) -> dict[str, np.ndarray]:
    """DFT and predicted energies (eV/atom) and force components (eV/Å) of every frame of ``dataset``."""
    calculator = potential.calculator()  # imports torch
    data = {"dft_energy": [], "ann_energy": [], "dft_forces": [], "ann_forces": []}
    for frame in dataset.to_frames():
        atoms = frame.copy()
        atoms.calc = calculator
        data["dft_energy"].append(frame.get_potential_energy() / len(frame))
        data["ann_energy"].append(atoms.get_potential_energy() / len(frame))
        data["dft_forces"].append(frame.get_forces().ravel())
        data["ann_forces"].append(atoms.get_forces().ravel())
    return {key: np.hstack(values) for key, values in data.items()}


def plot_parity(data: dict[str, np.ndarray], output: Path, title: str) -> Path:
    """Predicted against DFT energies (meV/atom above the lowest DFT energy, so the ticks stay short) and force
    components (eV/Å), with the RMSE; ``data`` as :func:`parity_data` gives it."""
    figure, axes = _pyplot().subplots(1, 2, figsize=(9, 4))
    lowest = data["dft_energy"].min()
    shifted = {
        "dft_energy": 1000 * (data["dft_energy"] - lowest),
        "ann_energy": 1000 * (data["ann_energy"] - lowest),
        "dft_forces": data["dft_forces"],
        "ann_forces": data["ann_forces"],
    }
    for axis, key, unit in zip(axes, ("energy", "forces"), ("meV/atom", "eV/Å"), strict=True):
        dft, ann = shifted[f"dft_{key}"], shifted[f"ann_{key}"]
        rmse = np.sqrt(np.mean((dft - ann) ** 2))
        low, high = min(dft.min(), ann.min()), max(dft.max(), ann.max())
        axis.plot([low, high], [low, high], color="grey", linewidth=0.8)
        axis.plot(dft, ann, ".", markersize=3)
        axis.set(xlabel=f"DFT {key}", ylabel=f"potential {key}", title=f"RMSE {rmse:.3g} {unit}")
    axes[0].set(xlabel="DFT energy − lowest DFT energy (meV/atom)", ylabel="potential energy − the same (meV/atom)")
    axes[1].set(xlabel="DFT force component (eV/Å)", ylabel="potential force component (eV/Å)")
    figure.suptitle(title)
    return _save(figure, output)


def test_parity_data(predictions) -> dict[str, np.ndarray]:
    """The parity data of a campaign's ``test_predictions`` output, in :func:`parity_data`'s layout."""
    return {
        "dft_energy": predictions.get_array("dft_energy_per_atom"),
        "ann_energy": predictions.get_array("ann_energy_per_atom"),
        "dft_forces": predictions.get_array("dft_forces"),
        "ann_forces": predictions.get_array("ann_forces"),
    }


def _eos_curves(axis, volumes: np.ndarray, energies: dict[str, np.ndarray]) -> None:
    """DFT and potential energies per atom against volume per atom, points and Birch–Murnaghan fits, in meV/atom
    relative to the DFT minimum."""
    from ..core.properties import fit_birch_murnaghan

    reference = energies["dft"].min()
    dense = np.linspace(volumes.min(), volumes.max(), 200)
    for source, label, color in (("dft", "reference (DFT)", "black"), ("ann", "potential", "tab:red")):
        try:
            fit = fit_birch_murnaghan(volumes, energies[source])
        except ValueError:
            fit = None
        if fit is not None:
            label += f": V0 = {fit.volume:.3f} Å³/atom, B0 = {fit.bulk_modulus:.1f} GPa"
            axis.plot(dense, 1000 * (fit.energy_at(dense) - reference), color=color, linewidth=1)
        axis.plot(volumes, 1000 * (energies[source] - reference), "o", color=color, label=label, fillstyle="none")
    axis.set(xlabel="volume (Å³/atom)", ylabel="energy − DFT minimum (meV/atom)")
    axis.legend(fontsize=8)


def plot_test_equation_of_state(score: dict, output: Path) -> Path | None:
    """The test set's energy–volume series of every input structure: DFT and the final potential."""
    series = {
        group: entry["equation_of_state"]
        for group, entry in score.get("properties", {}).items()
        if "equation_of_state" in entry
    }
    if not series:
        return None
    figure, axes = _pyplot().subplots(1, len(series), figsize=(6 * len(series), 4.5), squeeze=False)
    for axis, (group, eos) in zip(axes[0], sorted(series.items()), strict=True):
        energies = {"dft": np.array(eos["dft_energy_per_atom"]), "ann": np.array(eos["ann_energy_per_atom"])}
        _eos_curves(axis, np.array(eos["volume_per_atom"]), energies)
        axis.set_title(f"test set, structure {group}")
    return _save(figure, output / "test_equation_of_state.png")


def write_plots(node, output: str | Path) -> list[Path]:
    """Every figure this campaign has data for, written to ``output`` (created if needed)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    targets = node.inputs.test_targets.get_dict() if "test_targets" in node.inputs else {}
    written = [
        plot_errors(iteration_rows(node), output, targets),
        plot_learning_curves(node, output),
        plot_deviations(node, output),
    ]
    if "test_predictions" in node.outputs:
        data = test_parity_data(node.outputs.test_predictions)
        written.append(
            plot_parity(
                data,
                output / "parity.png",
                f"final committee on the {len(data['dft_energy'])} test-set frames (never trained on)",
            )
        )
        written.append(plot_test_equation_of_state(node.outputs.test_score.get_dict(), output))
    if "potential" in node.outputs and "dataset" in node.outputs:
        data = parity_data(node.outputs.potential, node.outputs.dataset)
        # each member validated on its own seeded split, so no frame set is held out from the whole committee
        title = f"final committee on its {len(data['dft_energy'])} training labels (not an accuracy measure)"
        written.append(plot_parity(data, output / "parity_training.png", title))
    return [path for path in written if path is not None]


def plot_equation_of_state(node, output: Path) -> Path | None:
    """Energy per atom against volume per atom, DFT and potential, points and Birch–Murnaghan fits."""
    if "equation_of_state" not in node.outputs:
        return None
    curve = node.outputs.equation_of_state
    figure, axis = _pyplot().subplots(figsize=(6, 4.5))
    energies = {source: curve.get_array(f"{source}_energy_per_atom") for source in ("dft", "ann")}
    _eos_curves(axis, curve.get_array("volume_per_atom"), energies)
    figure.suptitle(f"equation of state: {node.process_label}<{node.pk}>")
    return _save(figure, output / "equation_of_state.png")


def plot_md_energy(node, output: Path) -> Path | None:
    """Total energy per atom of the NVE run against time, with the fitted drift."""
    if "md_energy" not in node.outputs:
        return None
    times = node.outputs.md_energy.get_array("time_ps")
    total = 1000 * node.outputs.md_energy.get_array("total_energy_per_atom")
    figure, axis = _pyplot().subplots(figsize=(6, 3.5))
    axis.plot(times, total - total[0], ".-", markersize=3, label="total energy")
    md = node.outputs.properties.get_dict().get("md_stability", {})
    drift = md.get("energy_drift_meV_per_atom_per_ps")
    if drift is not None and len(times) > 1:
        slope, offset = np.polyfit(times, total - total[0], 1)
        axis.plot(times, slope * times + offset, color="grey", linestyle="--", label=f"drift {drift:.3g} meV/atom/ps")
    axis.set(xlabel="time (ps)", ylabel="E_total − E_total(first frame) (meV/atom)")
    axis.legend(fontsize=8)
    return _save(figure, output / "md_energy.png")


def write_validation_plots(node, output: str | Path) -> list[Path]:
    """The figures of a validation work chain, written to ``output`` (created if needed)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = [plot_equation_of_state(node, output), plot_md_energy(node, output)]
    return [path for path in written if path is not None]


@cmd_root.command("plot")
@click.argument("node", type=NODE)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the PNG files (created if missing; files of the same name are replaced).",
)
@decorators.with_dbenv()
def cmd_plot(node, output):
    """PNG figures of NODE, a campaign (test-set and validation errors, learning curves, force deviations, parity
    and energy-volume curve on the test set) or a validation (energy-volume curves, NVE energy)."""
    from ..workflows.validation import ValidationWorkChain

    node = load_campaign_or_validation(node)
    if node.process_type == ValidationWorkChain.build_process_type():
        written = write_validation_plots(node, output)
        nothing = "nothing to plot: the validation has no equation_of_state or md_energy output"
    else:
        written = write_plots(node, output)
        nothing = "nothing to plot yet: no iteration has finished"
    if not written:
        echo.echo_warning(nothing)
    for path in written:
        echo.echo(str(path))
