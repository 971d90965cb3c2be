"""``aiida-annpot export``: a campaign's results as plain files, usable without AiiDA.

``potential/member_<k>.safetensors`` (the committee's model files, byte for byte), ``dataset.extxyz`` (every DFT
label), ``test_set.extxyz`` (the independent test set's labels) and ``summary.json`` (the iteration rows, the exit
status, the final test-set score, and the PKs and UUIDs of the potential and datasets). A campaign that is still
running, or that excepted or was killed, exports what its finished steps computed.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from aiida.cmdline.utils import decorators, echo

from .root import NODE, cmd_root, load_campaign
from .status import iteration_rows

__all__ = ["campaign_results", "campaign_summary", "export_campaign"]


#: Outputs of a campaign → the link label prefix of the child whose output stands in for it while the campaign runs or
#: after it excepted or was killed (the latest such child that finished OK).
_PARTIAL_SOURCES = {
    "potential": ("committee_", "potential"),
    "dataset": ("reference_", "dataset"),
    "test_dataset": ("reference_test", "dataset"),
}


def campaign_results(node) -> dict:
    """Output name → node: the campaign's ``potential``, ``dataset`` and ``test_dataset`` outputs, or, where the
    campaign has not (or never will have) attached one, the output of its latest child that computed it. Nothing a
    campaign computed is lost because it failed, excepted or was killed."""
    from aiida.common.links import LinkType

    results = {key: node.outputs[key] for key in _PARTIAL_SOURCES if key in node.outputs}
    calls = sorted(node.base.links.get_outgoing(link_type=LinkType.CALL_WORK).all(), key=lambda link: link.node.ctime)
    for key, (prefix, output) in _PARTIAL_SOURCES.items():
        if key in results:
            continue
        for link in reversed(calls):
            test_labels = key == "dataset" and link.link_label.startswith("reference_test")  # not training data
            if link.link_label.startswith(prefix) and not test_labels and output in link.node.outputs:
                results[key] = link.node.outputs[output]
                break
    return results


def campaign_summary(node) -> dict:
    """The campaign's state, iteration rows and the identities of its outputs, JSON-serialisable."""
    summary = {
        "campaign": {
            "pk": node.pk,
            "uuid": node.uuid,
            "label": node.label,
            "process_state": node.process_state.value if node.process_state else None,
            "exit_status": node.exit_status,
            "exit_message": node.exit_message,
        },
        "iterations": iteration_rows(node),
    }
    results = campaign_results(node)
    for key, result in results.items():
        summary[key] = {"pk": result.pk, "uuid": result.uuid, "output": key in node.outputs}
    if "potential" in results:
        summary["potential"].update(
            committee_size=results["potential"].committee_size, elements=results["potential"].elements
        )
    for key in ("dataset", "test_dataset"):
        if key in results:
            summary[key]["n_frames"] = results[key].n_frames
    if "test_score" in node.outputs:
        summary["test_score"] = node.outputs.test_score.get_dict()
    return summary


def export_campaign(node, output: str | Path) -> list[Path]:
    """Write the potential's member files, ``dataset.extxyz``, ``test_set.extxyz`` and ``summary.json`` to
    ``output``; the paths."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    results = campaign_results(node)
    if "potential" in results:
        written += results["potential"].export(output / "potential")
    if "dataset" in results:
        written.append(results["dataset"].write_extxyz(output / "dataset.extxyz"))
    if "test_dataset" in results:
        written.append(results["test_dataset"].write_extxyz(output / "test_set.extxyz"))
    summary = output / "summary.json"
    summary.write_text(json.dumps(campaign_summary(node), indent=2))
    return [*written, summary]


@cmd_root.command("export")
@click.argument("campaign", type=NODE)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the files (created if missing; files of the same name are replaced).",
)
@decorators.with_dbenv()
def cmd_export(campaign, output):
    """Model files, DFT labels (extxyz) and a JSON summary of CAMPAIGN."""
    node = load_campaign(campaign)
    results = campaign_results(node)
    if "potential" not in results:
        echo.echo_warning(f"campaign {node.pk} has no potential yet")
    elif not node.is_finished:
        state = node.process_state.value if node.process_state else "unknown"
        echo.echo_warning(f"campaign {node.pk} is {state}: writing what it has computed so far")
    for path in export_campaign(node, output):
        echo.echo(str(path))
