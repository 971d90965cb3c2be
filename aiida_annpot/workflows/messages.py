"""Short texts for reports and exit messages of the work chains."""

from __future__ import annotations

__all__ = ["failure_text", "number_text"]


def failure_text(node) -> str:
    """``Label<PK> exit status N: message`` of a finished child process."""
    return f"{node.process_label}<{node.pk}> exit status {node.exit_status}: {node.exit_message}"


def number_text(value) -> str:
    """A figure with three significant digits, or ``n/a``."""
    return "n/a" if value is None else f"{value:.3g}"
