"""What the ``annpot`` CalcJobs share: one code, a YAML configuration, the status file, and their exit codes.

The engine writes ``annpot_status.json`` however it ends (finished, bad input, diverged, wall time), because a
scheduler does not keep a job's exit code; the parsers read it to choose the exit code. Exit codes follow AiiDA's
ranges: 3xx missing or unusable output, 4xx failures a restart wrapper can recover from.
"""

from __future__ import annotations

import yaml
from aiida.common import datastructures
from aiida.engine import CalcJob
from aiida.orm import Dict, RemoteData

from ..common.config import ConfigError, load_config
from ..common.contract import STATUS_FILE
from .gpus import validate_gpu_count, validate_gpu_request, with_gpu_request

__all__ = ["AnnpotCalculation", "validate_config_dict"]

STDOUT = "annpot.log"
STDERR = "annpot.err"
#: Share of the scheduler's wall time the engine may use before it checkpoints and exits (the rest is margin).
WALL_TIME_SHARE = 0.85


def validate_config_dict(value: Dict, schema, path_keys: tuple[str, ...], placeholders: dict) -> str | None:
    """Port validator body: ``value`` must satisfy ``schema`` once the calculation fills in ``placeholders``.

    Keys in ``path_keys`` name files that the calculation writes itself, so they must not be given.
    """
    settings = value.get_dict()
    given = sorted(set(path_keys) & set(settings))
    if given:
        return f"do not set {', '.join(given)}: the calculation writes these files from its inputs"
    try:
        load_config({**settings, **placeholders}, schema)
    except ConfigError as exc:
        return str(exc)
    return None


class AnnpotCalculation(CalcJob):
    """Base class: runs ``annpot COMMAND CONFIG --workdir .`` with the status file and logs retrieved."""

    #: The engine sub-command (``train`` or ``explore``) and the YAML file the configuration is written to.
    COMMAND: str = ""
    CONFIG_FILE: str = ""
    #: Output files to retrieve besides the status file and the logs.
    RETRIEVE: tuple[str, ...] = ()
    #: Files of an interrupted run that a resume needs, copied from ``parent_folder``.
    RESUME_FILES: tuple[str, ...] = ()

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input(
            "parent_folder",
            valid_type=RemoteData,
            required=False,
            help="Work folder of an interrupted run of the same inputs: the run resumes from it.",
        )
        spec.inputs["metadata"]["options"]["resources"].default = {"num_machines": 1, "num_mpiprocs_per_machine": 1}
        spec.inputs["metadata"]["options"]["withmpi"].default = False
        spec.input(
            "metadata.options.gpus",
            valid_type=int,
            required=False,
            validator=validate_gpu_count,
            help="GPUs to ask the scheduler for (Slurm: #SBATCH --gres=gpu:N, ahead of custom_scheduler_commands); "
            "the configuration's device: auto then runs on the GPU.",
        )
        spec.inputs.validator = validate_gpu_request  # subclasses with validators of their own call it first
        spec.exit_code(
            300,
            "ERROR_MISSING_STATUS",
            invalidates_cache=True,
            message="annpot left no status file: the job was killed or never started; see the logs.",
        )
        spec.exit_code(
            301,
            "ERROR_MISSING_OUTPUT",
            invalidates_cache=True,
            message="annpot finished but the output file {filename} is missing.",
        )
        spec.exit_code(
            302,
            "ERROR_CORRUPT_OUTPUT",
            invalidates_cache=True,
            message="the output file {filename} cannot be read: {exception}",
        )
        spec.exit_code(310, "ERROR_INPUT_REJECTED", message="annpot rejected its input: {message}")
        spec.exit_code(320, "ERROR_ENGINE_CRASHED", invalidates_cache=True, message="annpot crashed: {message}")
        spec.exit_code(
            410,
            "ERROR_WALL_TIME_REACHED",
            invalidates_cache=True,
            message="wall time reached: state saved; rerun with parent_folder to resume.",
        )

    def _setup_metadata(self, metadata: dict) -> None:
        """Record the options with the GPU request written into ``custom_scheduler_commands``, where aiida-core's
        schedulers read it (the ``gpus`` option itself is recorded as given)."""
        options = metadata.get("options", {})
        if options.get("gpus"):
            computer = metadata.get("computer") or self.inputs.code.computer
            metadata = {**metadata, "options": with_gpu_request(dict(options), computer.scheduler_type)}
        super()._setup_metadata(metadata)

    def engine_config(self, folder) -> dict:
        """The engine configuration to write (subclasses add the paths of the files they write to ``folder``)."""
        raise NotImplementedError

    def prepare_for_submission(self, folder) -> datastructures.CalcInfo:
        config = self.engine_config(folder)
        max_wallclock = self.inputs.metadata.options.get("max_wallclock_seconds")
        if max_wallclock and config.get("wall_time") is None:  # stop cleanly before the scheduler kills the job
            config["wall_time"] = WALL_TIME_SHARE * max_wallclock
        with folder.open(self.CONFIG_FILE, "w") as handle:
            yaml.safe_dump(config, handle, sort_keys=False)

        codeinfo = datastructures.CodeInfo()
        codeinfo.code_uuid = self.inputs.code.uuid
        codeinfo.cmdline_params = [self.COMMAND, self.CONFIG_FILE, "--workdir", "."]
        codeinfo.stdout_name, codeinfo.stderr_name = STDOUT, STDERR

        calcinfo = datastructures.CalcInfo()
        calcinfo.codes_info = [codeinfo]
        calcinfo.retrieve_list = [STATUS_FILE, STDOUT, STDERR, *self.RETRIEVE]
        if "parent_folder" in self.inputs:
            calcinfo.remote_copy_list = self._resume_copies()
            codeinfo.cmdline_params.append("--resume")
        return calcinfo

    def _resume_copies(self) -> list[tuple[str, str, str]]:
        parent = self.inputs.parent_folder
        if parent.computer.uuid != self.inputs.code.computer.uuid:
            raise ValueError(
                f"parent_folder is on computer {parent.computer.label}, but the code runs on "
                f"{self.inputs.code.computer.label}: a resume needs the folder on the same computer"
            )
        return [(parent.computer.uuid, f"{parent.get_remote_path()}/{name}", name) for name in self.RESUME_FILES]
