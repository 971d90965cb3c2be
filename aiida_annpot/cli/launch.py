"""``aiida-annpot launch``: validate a campaign file, then run it in the foreground or submit it to the daemon.

With a ``model_selection`` key in the campaign file the committee trains with the configuration that model selection
chose (see :mod:`.campaign_file` for the order of protocol, selection and overrides); launch says so first.
"""

from __future__ import annotations

from pathlib import Path

import click
from aiida.cmdline.utils import decorators, echo

from .campaign_file import CampaignFileError, build_from_file
from .root import cmd_root
from .status import campaign_header, iteration_rows, iteration_table


@cmd_root.command("launch")
@click.argument("campaign_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--daemon", is_flag=True, help="Submit to the daemon and return at once, instead of running in this terminal."
)
@decorators.with_dbenv()
def cmd_launch(campaign_file, daemon):
    """Start the active-learning campaign described by CAMPAIGN_FILE (YAML; checked before anything runs)."""
    from aiida.engine import run_get_node, submit

    try:
        builder = build_from_file(campaign_file)
    except CampaignFileError as exc:
        echo.echo_critical(f"invalid campaign file {campaign_file}:\n{exc}")
    if builder.metadata.get("description"):
        echo.echo_report(builder.metadata.description)
    if daemon:
        try:
            node = submit(builder)
        except Exception as exc:  # e.g. a profile without a broker
            echo.echo_critical(f"could not submit to the daemon: {exc}")
        echo.echo_success(f"submitted ActiveLearningWorkChain<{node.pk}>")
        if not _daemon_running():
            echo.echo_warning("the daemon is not running: start it with `verdi daemon start`")
        echo.echo(f"follow it with: aiida-annpot status {node.pk}   or   verdi process report {node.pk}")
        return
    _, node = run_get_node(builder)
    echo.echo(campaign_header(node))
    echo.echo(iteration_table(iteration_rows(node)))


def _daemon_running() -> bool:
    from aiida.engine.daemon.client import get_daemon_client

    try:
        return get_daemon_client().is_daemon_running
    except Exception:  # no daemon configuration for this profile
        return False
