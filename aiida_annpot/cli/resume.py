"""``aiida-annpot resume``: play the paused processes of a campaign (the campaign and all it called)."""

from __future__ import annotations

import click
from aiida.cmdline.utils import decorators, echo

from .root import NODE, cmd_root, load_campaign

__all__ = ["paused_processes"]


def paused_processes(node) -> list:
    """The campaign node and every descendant process that is paused and not yet terminated."""
    return [p for p in [node, *node.called_descendants] if p.paused and not p.is_terminated]


@cmd_root.command("resume")
@click.argument("campaign", type=NODE)
@click.option("-t", "--timeout", type=float, default=5.0, show_default=True,
              help="Seconds to wait for each process to answer (the daemon must be running).")  # fmt: skip
@decorators.with_dbenv()
def cmd_resume(campaign, timeout):
    """Play the paused processes of CAMPAIGN: the campaign and every process it called that is paused."""
    from aiida.engine.processes import control

    paused = paused_processes(load_campaign(campaign))
    if not paused:
        echo.echo_report(f"nothing paused in campaign {campaign.pk}")
        return
    try:
        control.play_processes(paused, timeout=timeout)
    except Exception as exc:  # no broker, daemon not running, timeout: the engine reports each differently
        echo.echo_critical(f"could not play the paused processes: {exc}")
    for process in paused:
        echo.echo(f"played {process.process_label}<{process.pk}>")
