"""``aiida-annpot export``: a campaign's results as plain files, usable without AiiDA.

``potential/member_<k>.safetensors`` (the committee's model files, byte for byte), ``dataset.extxyz`` (every DFT
label), ``test_set.extxyz`` (the independent test set's labels) and ``summary.json`` (the iteration rows, the exit
status, the final test-set score, and the PKs and UUIDs of the potential and datasets).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from aiida.cmdline.utils import decorators, echo

from .root import NODE, cmd_root, load_campaign
from .status import iteration_rows

__all__ = ["campaign_summary", "export_campaign"]


def campaign_summary(node) -> dict:
    """The campaign's state, iteration rows and the identities of its outputs, JSON-serialisable."""
    summary = {
        "campaign": {"pk": node.pk, "uuid": node.uuid, "label": node.label,
                     "process_state": node.process_state.value if node.process_state else None,
                     "exit_status": node.exit_status, "exit_message": node.exit_message},
        "iterations": iteration_rows(node),
    }  # fmt: skip
    for key in ("potential", "dataset", "test_dataset"):
        if key in node.outputs:
            summary[key] = {"pk": node.outputs[key].pk, "uuid": node.outputs[key].uuid}
    if "potential" in summary:
        summary["potential"].update(committee_size=node.outputs.potential.committee_size,
                                    elements=node.outputs.potential.elements)  # fmt: skip
    for key in ("dataset", "test_dataset"):
        if key in summary:
            summary[key]["n_frames"] = node.outputs[key].n_frames
    if "test_score" in node.outputs:
        summary["test_score"] = node.outputs.test_score.get_dict()
    return summary


def export_campaign(node, output: str | Path) -> list[Path]:
    """Write the potential's member files, ``dataset.extxyz``, ``test_set.extxyz`` and ``summary.json`` to
    ``output``; the paths."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    if "potential" in node.outputs:
        written += node.outputs.potential.export(output / "potential")
    if "dataset" in node.outputs:
        written.append(node.outputs.dataset.write_extxyz(output / "dataset.extxyz"))
    if "test_dataset" in node.outputs:
        written.append(node.outputs.test_dataset.write_extxyz(output / "test_set.extxyz"))
    summary = output / "summary.json"
    summary.write_text(json.dumps(campaign_summary(node), indent=2))
    return [*written, summary]


@cmd_root.command("export")
@click.argument("campaign", type=NODE)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the files (created if missing; files of the same name are replaced).")  # fmt: skip
@decorators.with_dbenv()
def cmd_export(campaign, output):
    """Model files, DFT labels (extxyz) and a JSON summary of CAMPAIGN."""
    node = load_campaign(campaign)
    if "potential" not in node.outputs:
        echo.echo_warning(f"campaign {node.pk} has no potential yet: only summary.json is written")
    for path in export_campaign(node, output):
        echo.echo(str(path))
