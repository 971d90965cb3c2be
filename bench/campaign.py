"""The fast Si campaign on a fresh ``verdi presto`` profile, with the AiiDA overhead per DFT label.

Creates a new AiiDA profile in ``--workdir`` (SQLite storage, as ``verdi presto`` makes it), the ``pw.x`` and
``annpot`` codes on its localhost computer and a pseudopotential family from Debian's ``Si.pz-vbc.UPF``, then runs
``ActiveLearningWorkChain`` with the chosen protocol in the foreground on the 8-atom cubic Si cell.

Printed figures:
- the campaign's wall time and exit status; per iteration labels, dataset size, validation and test-set errors,
  accurate ratios (``aiida-annpot status``'s table); the final committee's test-set table (per kind, V0, B0,
  vacancy formation energy);
- per DFT label, the PwBaseWorkChain's wall time (creation to last change), the pw.x wall time its PwCalculations
  report, and the difference: the AiiDA overhead (submission, polling, file transfer, parsing, database), given as
  a share of the pw.x time. Labels run ``max_concurrent`` at a time, so pw.x times include contention for the cores.

Usage: python bench/campaign.py [--protocol fast] [--workdir bench/out/campaign]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def make_profile(workdir: Path) -> str:
    """A fresh presto profile under ``workdir``; returns its name."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    os.environ["AIIDA_PATH"] = str(workdir / "aiida")
    verdi = Path(sys.executable).parent / "verdi"
    subprocess.run([str(verdi), "presto", "--profile-name", "bench", "--use-zeromq"], check=True, capture_output=True)
    return "bench"


def overhead_per_label(campaign) -> list[tuple[float, float]]:
    """(label work chain wall time, pw.x wall time) in seconds for every DFT label of the campaign: the label work
    chain (QuantumEspressoLabelWorkChain) includes its PwBaseWorkChain and the calcfunction that makes the label."""
    rows = []
    for reference in (c for c in campaign.called if c.process_label == "ReferenceWorkChain"):
        for label in (c for c in reference.called if c.process_label == "QuantumEspressoLabelWorkChain"):
            calcs = [
                c
                for base in label.called
                if base.process_label == "PwBaseWorkChain"
                for c in base.called
                if c.process_label == "PwCalculation" and "output_parameters" in c.outputs
            ]
            pw_time = sum(c.outputs.output_parameters.get_dict().get("wall_time_seconds", 0.0) for c in calcs)
            rows.append(((label.mtime - label.ctime).total_seconds(), pw_time))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="fast")
    parser.add_argument("--max-concurrent", type=int, default=None, help="DFT labels at a time (protocol's default)")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "out" / "campaign")
    args = parser.parse_args()

    profile = make_profile(args.workdir.resolve())
    from aiida import load_profile

    load_profile(profile)
    from aiida.engine import run_get_node
    from aiida.orm import StructureData
    from ase.build import bulk

    from aiida_annpot.tools.local_setup import workstation_setup
    from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain

    pw_code, annpot_code, family = workstation_setup("Si-LDA")
    overrides = {} if args.max_concurrent is None else {"reference": {"max_concurrent": args.max_concurrent}}
    structure = StructureData(ase=bulk("Si", "diamond", a=5.43, cubic=True))
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, {"si": structure}, family, protocol=args.protocol, overrides=overrides
    )
    start = time.perf_counter()
    _, node = run_get_node(builder)
    wall = time.perf_counter() - start

    from aiida_annpot.cli.status import campaign_header, iteration_rows, iteration_table, test_set_table

    print(f"campaign <{node.pk}> protocol {args.protocol}: exit status {node.exit_status}, wall time {wall:.0f} s")
    print(campaign_header(node))
    print(iteration_table(iteration_rows(node)))
    if "test_score" in node.outputs:
        print("final committee on the independent test set:")
        print(test_set_table(node.outputs.test_score.get_dict()))
    labels = overhead_per_label(node)
    walls = [w for w, _ in labels]
    pws = [p for _, p in labels]
    overheads = [w - p for w, p in labels]
    print(
        f"DFT labels: {len(labels)}; per label: PwBaseWorkChain wall {statistics.mean(walls):.1f} s, "
        f"pw.x {statistics.mean(pws):.1f} s, overhead {statistics.mean(overheads):.1f} s "
        f"(median {statistics.median(overheads):.1f} s)"
    )
    print(f"AiiDA overhead per DFT label as a share of pw.x time: {sum(overheads) / sum(pws):.2f}")


if __name__ == "__main__":
    main()
