"""GPUs for the ``annpot`` CalcJobs: the ``metadata.options.gpus`` option and the scheduler line it becomes.

aiida-core's job resources have no GPUs (aiidateam/aiida-core#5612: Slurm's generic resources are requested through
``custom_scheduler_commands`` or ``prepend_text``), so the CalcJobs add an option of their own and write the
request where the scheduler reads it: ``#SBATCH --gres=gpu:N`` for Slurm, placed before any
``custom_scheduler_commands`` of the user's, which are kept as given. The direct scheduler runs on the machine
itself, whose GPUs the job sees without a request; other schedulers put GPUs inside their resource lines, which
aiida-core writes, so the option is refused there with a pointer to ``custom_scheduler_commands``.
"""

from __future__ import annotations

import re

__all__ = ["GPU_REQUESTS", "gpu_request_line", "validate_gpu_count", "validate_gpu_request", "with_gpu_request"]

#: Scheduler plugin → the line that asks for ``{n}`` GPUs; None: no line needed (the job sees the machine's GPUs).
GPU_REQUESTS: dict[str, str | None] = {"core.slurm": "#SBATCH --gres=gpu:{n}", "core.direct": None}
#: Directives by which a job script already asks Slurm for GPUs.
_SLURM_GPU_DIRECTIVE = re.compile(r"--(gres|gpus|gpus-per-node|gpus-per-task|gpus-per-socket)\b")


def validate_gpu_count(value: int, _) -> str | None:
    """Port validator of ``metadata.options.gpus``: a whole number, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"gpus must be a whole number of GPUs, 0 or more, got {value!r}"
    return None


def gpu_request_line(scheduler_type: str, gpus: int) -> str | None:
    """The job-script line that asks ``scheduler_type`` for ``gpus`` GPUs; None when none is needed."""
    template = GPU_REQUESTS[scheduler_type]
    return None if template is None or gpus == 0 else template.format(n=gpus)


def validate_gpu_request(inputs: dict, namespace) -> str | None:
    """With ``metadata.options.gpus`` set: a scheduler the request can be written for, no GPU request of the user's
    own beside it, and a configuration that does not pin ``device: cpu``."""
    gpus = inputs.get("metadata", {}).get("options", {}).get("gpus")
    if not gpus:
        return None
    computer = inputs.get("metadata", {}).get("computer") or getattr(inputs.get("code"), "computer", None)
    if computer is not None and computer.scheduler_type not in GPU_REQUESTS:
        return (
            f"metadata.options.gpus: annpot writes GPU requests for {', '.join(GPU_REQUESTS)} only, and computer "
            f"{computer.label} uses {computer.scheduler_type}: ask for GPUs in "
            "metadata.options.custom_scheduler_commands (or the computer's default) instead"
        )
    custom = inputs["metadata"]["options"].get("custom_scheduler_commands") or ""
    if _SLURM_GPU_DIRECTIVE.search(custom):
        return "metadata.options.gpus and a GPU request in custom_scheduler_commands: ask for GPUs once, in one of them"
    config = inputs.get("config")
    if config is not None and config.get_dict().get("device") == "cpu":
        return f"metadata.options.gpus asks for {gpus} GPU(s) but the configuration sets device: cpu"
    return None


def with_gpu_request(options: dict, scheduler_type: str) -> dict:
    """``options`` with the GPU request line of ``options['gpus']`` ahead of the user's custom scheduler commands."""
    line = gpu_request_line(scheduler_type, options.get("gpus") or 0)
    if line is None:
        return options
    custom = options.get("custom_scheduler_commands")
    return {**options, "custom_scheduler_commands": line + (f"\n{custom}" if custom else "")}
