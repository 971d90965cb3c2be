"""Short texts for reports and exit messages of the work chains."""

from __future__ import annotations

__all__ = ["failure_text", "number_text"]


def failure_text(node) -> str:
    """``Label<PK> exit status N: message`` of a finished child process, or ``Label<PK> excepted: <last line of the
    exception>`` (``killed`` likewise) when it did not finish."""
    if node.is_excepted:
        lines = (node.exception or "").strip().splitlines()
        return f"{node.process_label}<{node.pk}> excepted: {lines[-1] if lines else 'no exception recorded'}"
    if node.is_killed:
        return f"{node.process_label}<{node.pk}> was killed: {node.process_status}"
    return f"{node.process_label}<{node.pk}> exit status {node.exit_status}: {node.exit_message}"


def number_text(value) -> str:
    """A figure with three significant digits, or ``n/a``."""
    return "n/a" if value is None else f"{value:.3g}"
