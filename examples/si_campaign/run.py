"""The quick start's main job: a real active-learning campaign for bulk Si with Quantum ESPRESSO labels.

1. An AiiDA profile ``annpot-quickstart`` (``verdi presto``: SQLite storage, ZeroMQ broker, no services) in
   ``$AIIDA_PATH`` (default: ``.aiida`` in the repository), made once and reused.
2. The ``pw.x`` and ``annpot`` codes on its localhost computer and a pseudo family from Debian's Si.pz-vbc.UPF.
3. ``ActiveLearningWorkChain`` with the ``fast`` protocol on the 8-atom diamond cell, run in the foreground: the
   campaign's report lines stream to the terminal as it goes. Its independent test set (E–V series, strains,
   rattles, the isolated vacancy in a 64-atom cell, hot MD frames of the final committee) is labelled with the same pw.x
   settings and scores every iteration's committee.
4. In the output folder: ``summary.txt`` and ``iterations.json`` (one row per iteration), ``potential/`` (the
   committee's model files, usable with ``annpot`` and ``aiida_annpot.core.calculator.AnnCalculator``),
   ``dataset.extxyz`` (every DFT label), ``test_set.extxyz``, ``summary.json`` and PNG plots (test-set errors per
   iteration, parity and E–V curve on the test set), written by the functions behind
   ``aiida-annpot status``, ``export`` and ``plot``.

Usage: python examples/si_campaign/run.py [--output DIR] [--protocol fast]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
PROFILE = "annpot-quickstart"


def load_or_make_profile() -> None:
    os.environ.setdefault("AIIDA_PATH", str(REPOSITORY / ".aiida"))
    from aiida import load_profile
    from aiida.common.exceptions import MissingConfigurationError, ProfileConfigurationError

    try:
        load_profile(PROFILE, allow_switch=True)
    except (MissingConfigurationError, ProfileConfigurationError):  # no configuration yet, or no such profile
        verdi = str(Path(sys.executable).parent / "verdi")
        subprocess.run([verdi, "presto", "--profile-name", PROFILE, "--use-zeromq"], check=True)
        load_profile(PROFILE, allow_switch=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPOSITORY / "si_campaign")
    parser.add_argument("--protocol", default="fast")
    args = parser.parse_args()

    load_or_make_profile()
    from aiida.engine import run_get_node
    from aiida.orm import StructureData
    from ase.build import bulk

    from aiida_annpot.cli.export import export_campaign
    from aiida_annpot.cli.plots import write_plots
    from aiida_annpot.cli.status import campaign_header, iteration_rows, iteration_table, test_set_table
    from aiida_annpot.tools.local_setup import workstation_setup
    from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain

    pw_code, annpot_code, family = workstation_setup("Si-LDA-debian")
    structure = StructureData(ase=bulk("Si", "diamond", a=5.43, cubic=True))
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, {"si": structure}, family, protocol=args.protocol
    )
    print(f"running the {args.protocol} Si campaign on profile {PROFILE}; report lines follow", flush=True)
    start = time.perf_counter()
    _, node = run_get_node(builder)
    minutes = (time.perf_counter() - start) / 60

    output = args.output
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    rows = iteration_rows(node)
    (output / "iterations.json").write_text(json.dumps(rows, indent=2))
    summary = f"{campaign_header(node)} in {minutes:.1f} min\n{iteration_table(rows)}\n"
    if "test_score" in node.outputs:
        summary += (
            "\nfinal committee on the independent test set (frames never trained on):\n"
            f"{test_set_table(node.outputs.test_score.get_dict())}\n"
        )
    export_campaign(node, output)
    write_plots(node, output)
    (output / "summary.txt").write_text(summary)
    print(summary)
    print(f"wrote {output}: summary.txt, iterations.json, summary.json, potential/, dataset.extxyz, *.png")
    print(f"inspect with: AIIDA_PATH={os.environ['AIIDA_PATH']} verdi -p {PROFILE} process report {node.pk}")
    print(f"         or: AIIDA_PATH={os.environ['AIIDA_PATH']} aiida-annpot -p {PROFILE} status {node.pk}")


if __name__ == "__main__":
    main()
