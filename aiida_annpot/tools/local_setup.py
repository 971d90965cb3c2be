"""A workstation's AiiDA stack for aiida-annpot: the ``pw.x`` and ``annpot`` codes and a Debian pseudo family (and
``cp2k`` for the CP2K labeller).

Every function is idempotent: it returns what exists under the given label or creates it. Debian's
``quantum-espresso`` provides ``pw.x``; ``quantum-espresso-data`` ships a few UPF files (gzipped) among its examples,
of which ``Si.pz-vbc.UPF`` (LDA, norm-conserving) works with pw.x 6.7.
"""

from __future__ import annotations

import glob
import gzip
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = [
    "CODE_PREPEND",
    "DEBIAN_EXAMPLES",
    "annpot_executable",
    "ensure_campaign_codes",
    "ensure_code",
    "ensure_cp2k_code",
    "ensure_debian_pseudo_family",
    "workstation_setup",
]

DEBIAN_EXAMPLES = "/usr/share/doc/quantum-espresso/examples"
#: mpirun refuses root without the OMPI variables; one OpenMP thread per job keeps parallel jobs from oversubscribing.
CODE_PREPEND = "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1"


def annpot_executable() -> str:
    """The ``annpot`` console script next to this Python interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "annpot"
    found = str(beside) if beside.exists() else shutil.which("annpot")
    if found is None:
        raise FileNotFoundError("the annpot command is not installed: pip install 'aiida-annpot[core]'")
    return found


def ensure_code(label: str, computer, executable: str, plugin: str, prepend_text: str = CODE_PREPEND):
    """The InstalledCode ``label@computer``, created if missing."""
    from aiida.common.exceptions import NotExistent
    from aiida.orm import InstalledCode, load_code

    try:
        return load_code(f"{label}@{computer.label}")
    except NotExistent:
        return InstalledCode(
            label=label,
            computer=computer,
            filepath_executable=executable,
            default_calc_job_plugin=plugin,
            prepend_text=prepend_text,
        ).store()


def ensure_campaign_codes(computer, pw_executable: str | None = None) -> tuple:
    """The ``pw`` and ``annpot`` codes a campaign needs on ``computer`` (pw.x from PATH unless given).

    :raises FileNotFoundError: pw.x or annpot is not installed.
    """
    pw_executable = pw_executable or shutil.which("pw.x")
    if pw_executable is None:
        raise FileNotFoundError("pw.x is not installed: apt install quantum-espresso")
    return (
        ensure_code("pw", computer, pw_executable, "quantumespresso.pw"),
        ensure_code("annpot", computer, annpot_executable(), "annpot.train"),
    )


def ensure_cp2k_code(computer, executable: str | None = None, label: str = "cp2k"):
    """The InstalledCode ``cp2k@computer`` (calculation plugin ``cp2k``, aiida-cp2k's), created if missing.

    Debian's ``cp2k`` package ships ``cp2k.psmp`` (MPI + OpenMP; ``cp2k`` links to it); :data:`CODE_PREPEND` lets
    its mpirun run as root and keeps it to one OpenMP thread per rank. Its data files (``BASIS_MOLOPT``,
    ``GTH_POTENTIALS``, ``dftd3.dat``) come with ``cp2k-data`` in ``/usr/share/cp2k``, CP2K's built-in data directory.

    :raises FileNotFoundError: CP2K is not installed (and no ``executable`` given).
    """
    executable = executable or next(filter(None, map(shutil.which, ("cp2k.psmp", "cp2k.ssmp", "cp2k"))), None)
    if executable is None:
        raise FileNotFoundError("cp2k is not installed: apt install cp2k cp2k-data (scripts/setup.sh does)")
    return ensure_code(label, computer, executable, "cp2k")


def workstation_setup(family_label: str) -> tuple:
    """(pw code, annpot code, pseudo family label) on the profile's ``localhost`` computer (``verdi presto`` makes
    it), with no delay between job polls: labels take seconds here, not hours."""
    from aiida.orm import load_computer

    computer = load_computer("localhost")
    computer.set_minimum_job_poll_interval(0.0)
    return (*ensure_campaign_codes(computer), ensure_debian_pseudo_family(family_label))


def ensure_debian_pseudo_family(label: str, filenames: tuple[str, ...] = ("Si.pz-vbc.UPF",)) -> str:
    """An aiida-pseudo family ``label`` of UPF files from Debian's quantum-espresso-data; returns the label.

    :raises FileNotFoundError: a file is not among the Debian examples (install quantum-espresso-data).
    """
    from aiida.orm import QueryBuilder
    from aiida_pseudo.data.pseudo.upf import UpfData
    from aiida_pseudo.groups.family import PseudoPotentialFamily

    if QueryBuilder().append(PseudoPotentialFamily, filters={"label": label}).count():
        return label
    with tempfile.TemporaryDirectory() as folder:
        for name in filenames:
            sources = sorted(glob.glob(f"{DEBIAN_EXAMPLES}/**/{name}*", recursive=True))
            if not sources:
                raise FileNotFoundError(f"{name} not found under {DEBIAN_EXAMPLES}: apt install quantum-espresso-data")
            opener = gzip.open if sources[0].endswith(".gz") else open
            with opener(sources[0], "rb") as handle:
                (Path(folder) / name).write_bytes(handle.read())
        PseudoPotentialFamily.create_from_folder(Path(folder), label, pseudo_type=UpfData)
    return label
