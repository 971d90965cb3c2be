"""``aiida-annpot status``: one campaign's iterations as a table, or the list of campaigns.

The rows come from the ``iterations`` output of a finished campaign, or, while it runs, from the node's
``annpot_iterations`` extra (the same rows plus the running one).
"""

from __future__ import annotations

import click
from aiida.cmdline.utils import decorators, echo
from tabulate import tabulate

from .root import NODE, cmd_root, load_campaign

__all__ = ["campaign_header", "held_children", "iteration_rows", "iteration_table", "row_state", "test_set_table"]

HEADERS = (
    "iter",
    "labels\nadded",
    "labels\nfailed",
    "dataset\nframes",
    "E_val\nmeV/atom",
    "F_val\neV/Å",
    "E_test\nmeV/atom",
    "F_test\neV/Å",
    "B0 test\nerror",
    "E_vac test\nerror eV",
    "accurate\nlast stage",
    "candidate\nratio",
    "failed\nratio",
    "selected",
    "state",
)


def iteration_rows(node) -> list[dict]:
    """The campaign's iteration rows: the ``iterations`` output, else the live ``annpot_iterations`` extra.

    A campaign that ended without its outputs (excepted, or killed) left its last row marked running: that row says
    how the process ended instead (``excepted``, ``killed``)."""
    from ..workflows.published import ITERATIONS_EXTRA

    if "iterations" in node.outputs:
        return node.outputs.iterations.get_list()
    rows = [dict(row) for row in node.base.extras.get(ITERATIONS_EXTRA, [])]
    if node.is_terminated and rows and rows[-1].pop("running", False):
        rows[-1]["stopped"] = node.process_state.value
    return rows


def row_state(row: dict) -> str:
    """running / excepted / killed / failed / converged / not converged."""
    if row.get("running"):
        return "running"
    if "stopped" in row:
        return row["stopped"]
    if "failed" in row:
        return "failed"
    return "converged" if row.get("converged") else "not converged"


def _number(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def _failed_labels(row: dict) -> str:
    """Failed training labels, and failed test labels where the test set was labelled in this row."""
    text = str(row.get("labels_failed", "-"))
    return text + (f" (+{row['test_labels_failed']} test)" if row.get("test_labels_failed") else "")


def iteration_table(rows: list[dict]) -> str:
    """One line per iteration: labels, validation and test-set errors, exploration ratios, selection, state.

    The test columns are the committee's errors on the campaign's independent test set: energy and force RMSE, the
    relative error of the bulk modulus B0 and the error of the vacancy formation energy.
    """
    lines = []
    for row in rows:
        validation, ratios, test = row.get("validation", {}), row.get("ratios", {}), row.get("test", {})
        lines.append(
            [
                row["iteration"],
                row.get("labels_added", "-"),
                _failed_labels(row),
                row.get("dataset_frames", "-"),
                _number(validation.get("energy_rmse"), 2),
                _number(validation.get("force_rmse"), 3),
                _number(test.get("energy_rmse"), 2),
                _number(test.get("force_rmse"), 3),
                _percent(test.get("bulk_modulus_error")),
                _number(test.get("vacancy_error"), 2),
                _number(row.get("last_stage_ratios", {}).get("accurate"), 2),
                _number(ratios.get("candidate"), 2),
                _number(ratios.get("failed"), 2),
                row.get("selected", "-"),
                row_state(row),
            ]
        )
    return tabulate(lines, headers=HEADERS, disable_numparse=True, colalign=("right",) * (len(HEADERS) - 1))


def test_set_table(score: dict) -> str:
    """The final committee on the test set: errors per kind of structure and overall, then per input structure
    the properties, DFT and potential side by side."""
    kinds = [
        [
            kind,
            entry["frames"],
            _number(entry["energy_rmse"], 2),
            _number(entry["force_rmse"], 3),
            _number(entry["max_extrapolation"], 2),
        ]
        for kind, entry in sorted(score["kinds"].items())
    ]
    overall = score["overall"]
    kinds.append(
        [
            "all",
            overall["frames"],
            _number(overall["energy_rmse"], 2),
            _number(overall["force_rmse"], 3),
            _number(overall["max_extrapolation"], 2),
        ]
    )
    text = tabulate(
        kinds,
        headers=("test frames", "n", "E RMSE\nmeV/atom", "F RMSE\neV/Å", "max extrapolation\ngrade"),
        disable_numparse=True,
        colalign=("left", "right", "right", "right", "right"),
    )
    properties = []
    for group, entry in sorted(score.get("properties", {}).items()):
        named = (
            ("equation_of_state", "equilibrium_volume_A3_per_atom", "V0 (Å³/atom)", 3, True),
            ("equation_of_state", "bulk_modulus_GPa", "B0 (GPa)", 1, True),
            ("vacancy", "unrelaxed_formation_energy_eV", "unrelaxed vacancy E_f (eV)", 2, False),
        )
        for section, key, label, digits, relative in named:
            if section in entry:
                values = entry[section][key]
                error = _percent(values.get("relative_error")) if relative else _number(values["error"], 2)
                properties.append([group, label, _number(values["dft"], digits), _number(values["ann"], digits), error])
    if properties:
        text += "\n\n" + tabulate(
            properties, headers=("structure", "property", "DFT", "potential", "error"), disable_numparse=True
        )
    return text


def campaign_header(node) -> str:
    """``ActiveLearningWorkChain<PK> "label": finished, exit status 410: message``."""
    state = node.process_state.value if node.process_state else "unknown"
    text = f"{node.process_label}<{node.pk}>" + (f" {node.label!r}" if node.label else "") + f": {state}"
    if node.exit_status is not None:
        text += f", exit status {node.exit_status}"
        text += f": {node.exit_message}" if node.exit_message else ""
    return text + (" (paused)" if node.paused else "")


def held_children(node) -> list[str]:
    """Lines naming the campaign's descendants that are paused (still active) or were killed (a fixed number of
    queries, whatever the number of labels; only those processes come back from the database)."""
    from ..workflows.published import paused
    from .provenance import called_depths, called_processes

    depths = called_depths(node.pk)
    held = {"paused": paused(), "killed": {"attributes.process_state": "killed"}}
    lines = []
    for what, filters in held.items():
        rows = called_processes(node.pk, ("attributes.process_label", "ctime"), filters, depths)
        if rows:
            names = ", ".join(f"{label}<{pk}>" for _, pk, label, _ in sorted(rows, key=lambda row: row[-1]))
            lines.append(f"{what}: {names}")
    return lines


def _campaign_list() -> str:
    from aiida.orm import QueryBuilder, WorkflowNode

    from ..workflows.published import CAMPAIGN_PROCESS_TYPE, ITERATIONS_EXTRA

    projections = [
        "id",
        "label",
        "ctime",
        "attributes.process_state",
        "attributes.exit_status",
        f"extras.{ITERATIONS_EXTRA}",
    ]
    query = QueryBuilder().append(
        WorkflowNode, filters={"process_type": CAMPAIGN_PROCESS_TYPE}, project=projections, tag="campaign"
    )
    query.order_by({"campaign": {"ctime": "asc"}})
    rows = [
        [
            pk,
            label,
            ctime.strftime("%Y-%m-%d %H:%M"),
            state or "-",
            "-" if status is None else status,
            len(iterations or []),
        ]
        for pk, label, ctime, state, status, iterations in query.iterall()
    ]
    headers = ("PK", "label", "created", "state", "exit status", "iterations")
    return tabulate(rows, headers=headers) if rows else "no active-learning campaigns in this profile"


@cmd_root.command("status")
@click.argument("campaign", type=NODE, required=False)
@decorators.with_dbenv()
def cmd_status(campaign):
    """Iterations of CAMPAIGN (PK, UUID or label); without it, every campaign of the profile."""
    if campaign is None:
        echo.echo(_campaign_list())
        return
    node = load_campaign(campaign)
    echo.echo(campaign_header(node))
    for line in held_children(node):
        echo.echo(line)
    rows = iteration_rows(node)
    echo.echo(iteration_table(rows) if rows else "no iteration finished yet")
    if "test_score" in node.outputs:
        echo.echo(
            f"\nfinal committee on the independent test set (frames never trained on):\n"
            f"{test_set_table(node.outputs.test_score.get_dict())}"
        )
