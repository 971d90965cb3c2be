"""The base of the annpot restart wrappers: one CalcJob, its inputs exposed, resume after a wall-time stop, rerun
after a kill.

Both ``annpot train`` and ``annpot explore`` save their state and exit with ``ERROR_WALL_TIME_REACHED`` before the
scheduler's limit; the handler here reruns the calculation with the stopped run's folder as ``parent_folder``, from
which it resumes. A job killed from outside (no status file) is run again, resuming from its saved state if any.
Subclasses name the CalcJob (``_process_class``) and the namespace of its inputs, and add their own handlers.
"""

from __future__ import annotations

from aiida.common import AttributeDict
from aiida.engine import BaseRestartWorkChain, ProcessHandlerReport, process_handler, while_

from ..calculations.base import AnnpotCalculation

__all__ = ["AnnpotRestartWorkChain"]


class AnnpotRestartWorkChain(BaseRestartWorkChain):
    """Run ``_process_class`` until it succeeds; a wall-time stop resumes from the saved state."""

    _namespace = ""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.expose_inputs(cls._process_class, namespace=cls._namespace)
        spec.expose_outputs(cls._process_class)
        spec.outline(
            cls.setup,
            while_(cls.should_run_process)(cls.run_process, cls.inspect_process),
            cls.results,
        )

    def setup(self):
        super().setup()
        self.ctx.inputs = AttributeDict(self.exposed_inputs(self._process_class, self._namespace))

    def report_error_handled(self, node, action: str) -> None:
        self.report(
            f"{node.process_label}<{node.pk}> failed with exit status {node.exit_status}: {node.exit_message}; {action}"
        )

    @process_handler(priority=450, exit_codes=[AnnpotCalculation.exit_codes.ERROR_MISSING_STATUS])
    def handle_killed(self, node):
        """A job that ended without the engine's status file was killed from outside (a node failure, an
        out-of-memory kill, ``scancel``): run it again, from the state it saved if it saved any. The restart limit
        (``max_iterations``) bounds the retries; then the work chain fails, naming the last failure."""
        remote = node.outputs.remote_folder if "remote_folder" in node.outputs else None
        if remote is not None and self._saved_state(remote):
            self.ctx.inputs.parent_folder = remote
            action = "resuming from the state it saved"
        else:  # nothing saved in this run: keep an earlier run's state if there was one
            action = "running it again" + (
                " from the earlier saved state" if "parent_folder" in self.ctx.inputs else ""
            )
        self.report_error_handled(node, action)
        return ProcessHandlerReport(do_break=True)

    def _saved_state(self, remote) -> bool:
        """Whether ``remote`` holds every file a resume copies (the engine writes them atomically)."""
        try:
            present = set(remote.listdir())
        except OSError:  # the folder is gone (scratch purged, node lost): nothing to resume from
            return False
        return set(self._process_class.RESUME_FILES) <= present

    @process_handler(priority=500, exit_codes=[AnnpotCalculation.exit_codes.ERROR_WALL_TIME_REACHED])
    def handle_wall_time(self, node):
        """Resume from the checkpoint or last frame the engine saved before the wall time."""
        self.ctx.inputs.parent_folder = node.outputs.remote_folder
        self.report_error_handled(node, "resuming from the state it saved")
        return ProcessHandlerReport(do_break=True)
