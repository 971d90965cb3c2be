"""``aiida-annpot pause / resume / kill``: act on a whole campaign, the campaign and every process it called.

``verdi process pause PK`` on a campaign holds only the campaign's own node: the ReferenceWorkChain it already
called goes on submitting pw.x jobs. These commands reach every active descendant: ``pause`` holds the campaign and
every work chain under it, so nothing new is created; calculations already created run to their end (pausing a
CalcJob while AiiDA monitors its scheduler job left it stuck in "job state RUNNING" after ``play``, with aiida-core
2.9). ``resume`` plays every paused process again (also CalcJobs AiiDA paused after a transport outage). ``kill``
kills the campaign (AiiDA cascades the kill to what it called, cancelling scheduler jobs) and then any descendant
still active, so no child outlives it.
"""

from __future__ import annotations

import click
from aiida.cmdline.utils import decorators, echo

from .root import NODE, cmd_root, load_campaign

__all__ = ["active_processes", "paused_processes"]


def _descendants(node, filters: dict) -> list:
    """The processes under ``node`` that match the QueryBuilder ``filters``, callers before the processes they
    called (a fixed number of queries, whatever the size of the campaign)."""
    from aiida.orm import load_node

    from .provenance import called_processes

    return [load_node(pk) for _, pk in called_processes(node.pk, filters=filters)]  # by depth


def paused_processes(node) -> list:
    """The campaign node and every descendant process that is paused and not yet terminated."""
    from ..workflows.published import paused

    return ([node] if node.paused and not node.is_terminated else []) + _descendants(node, paused())


def active_processes(node) -> list:
    """The campaign (if active) and its descendants that have not terminated, callers before the processes they
    called: a kill of the campaign first lets AiiDA's own cascade stop the children in order."""
    from ..workflows.published import not_terminated

    return ([node] if not node.is_terminated else []) + _descendants(node, not_terminated())


def _act(action: str, processes: list, timeout: float) -> None:
    from aiida.engine.processes import control

    handler = {"pause": control.pause_processes, "play": control.play_processes, "kill": control.kill_processes}
    kwargs = {"msg_text": f"{action} of the whole campaign by aiida-annpot"} if action != "play" else {}
    try:
        handler[action](processes, timeout=timeout, **kwargs)
    except Exception as exc:  # no broker, daemon not running, timeout: the engine reports each differently
        what = "the paused processes" if action == "play" else "the active processes"
        echo.echo_critical(f"could not {action} {what}: {exc}")
    past = {"pause": "paused", "play": "played", "kill": "killed"}[action]
    for process in processes:
        echo.echo(f"{past} {process.process_label}<{process.pk}>")


_TIMEOUT = click.option(
    "-t",
    "--timeout",
    type=float,
    default=5.0,
    show_default=True,
    help="Seconds to wait for each process to answer (the daemon must be running).",
)


@cmd_root.command("resume")
@click.argument("campaign", type=NODE)
@_TIMEOUT
@decorators.with_dbenv()
def cmd_resume(campaign, timeout):
    """Play the paused processes of CAMPAIGN: the campaign and every process it called that is paused."""
    paused = paused_processes(load_campaign(campaign))
    if not paused:
        echo.echo_report(f"nothing paused in campaign {campaign.pk}")
        return
    _act("play", paused, timeout)


@cmd_root.command("pause")
@click.argument("campaign", type=NODE)
@_TIMEOUT
@decorators.with_dbenv()
def cmd_pause(campaign, timeout):
    """Pause CAMPAIGN and every active work chain it called: no new DFT, training or MD job is created; jobs
    already created finish."""
    from aiida.orm import WorkflowNode

    active = [p for p in active_processes(load_campaign(campaign)) if isinstance(p, WorkflowNode) and not p.paused]
    if not active:
        echo.echo_report(f"nothing to pause in campaign {campaign.pk}")
        return
    _act("pause", active, timeout)


@cmd_root.command("kill")
@click.argument("campaign", type=NODE)
@_TIMEOUT
@decorators.with_dbenv()
def cmd_kill(campaign, timeout):
    """Kill CAMPAIGN and every active process it called. What already finished stays (see export)."""
    active = active_processes(load_campaign(campaign))
    if not active:
        echo.echo_report(f"campaign {campaign.pk} has no active process")
        return
    _act("kill", active, timeout)
