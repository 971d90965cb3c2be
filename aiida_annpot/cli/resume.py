"""``aiida-annpot pause / resume / kill``: act on a whole campaign, the campaign and every process it called.

``verdi process pause PK`` on a campaign holds only the campaign's own node: the ReferenceWorkChain it already
called goes on submitting pw.x jobs. These commands reach every active descendant: ``pause`` holds them all (jobs
already on the scheduler run on, nothing new is submitted), ``resume`` plays them again, ``kill`` kills the campaign
(AiiDA cascades the kill to what it called, cancelling scheduler jobs) and then any descendant still active, so no
child outlives it.
"""

from __future__ import annotations

import click
from aiida.cmdline.utils import decorators, echo

from .root import NODE, cmd_root, load_campaign

__all__ = ["active_processes", "paused_processes"]


def paused_processes(node) -> list:
    """The campaign node and every descendant process that is paused and not yet terminated."""
    return [p for p in [node, *node.called_descendants] if p.paused and not p.is_terminated]


def active_processes(node) -> list:
    """The campaign (if active) and its descendants that have not terminated, callers before the processes they
    called: a kill of the campaign first lets AiiDA's own cascade stop the children in order."""
    active = [p for p in node.called_descendants if not p.is_terminated]
    active.sort(key=lambda process: _depth(process, node))
    return ([node] if not node.is_terminated else []) + active


def _depth(process, root) -> int:
    depth = 0
    while process is not None and process.pk != root.pk:
        process, depth = process.caller, depth + 1
    return depth


def _act(action: str, processes: list, timeout: float) -> None:
    from aiida.engine.processes import control

    handler = {"pause": control.pause_processes, "play": control.play_processes, "kill": control.kill_processes}
    kwargs = {"message": "killed with its campaign by aiida-annpot kill"} if action == "kill" else {}
    try:
        handler[action](processes, timeout=timeout, **kwargs)
    except Exception as exc:  # no broker, daemon not running, timeout: the engine reports each differently
        what = "the paused processes" if action == "play" else "the active processes"
        echo.echo_critical(f"could not {action} {what}: {exc}")
    past = {"pause": "paused", "play": "played", "kill": "killed"}[action]
    for process in processes:
        echo.echo(f"{past} {process.process_label}<{process.pk}>")


_TIMEOUT = click.option("-t", "--timeout", type=float, default=5.0, show_default=True,
                        help="Seconds to wait for each process to answer (the daemon must be running).")  # fmt: skip


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
    """Pause CAMPAIGN and every active process it called (so no new DFT or training job starts)."""
    active = [p for p in active_processes(load_campaign(campaign)) if not p.paused]
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
