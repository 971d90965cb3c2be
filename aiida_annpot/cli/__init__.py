"""The ``aiida-annpot`` command: launch, follow and inspect active-learning campaigns.

One module per concern: ``root`` (the group and node loading), ``campaign_file`` (schema and checks of the YAML
campaign file), ``launch``, ``status``, ``plots``, ``export``, ``lineage`` and ``resume`` (pause, resume and kill of
a whole campaign).
"""

from . import export, launch, lineage, plots, resume, status
from .root import cmd_root

__all__ = ["cmd_root", "export", "launch", "lineage", "main", "plots", "resume", "status"]


def main() -> None:
    """Entry point of the ``aiida-annpot`` console script."""
    cmd_root()
