"""The quick start's main job: a real active-learning campaign for bulk Si with Quantum ESPRESSO labels.

1. An AiiDA profile ``annpot-quickstart`` (``verdi presto``: SQLite storage, ZeroMQ broker, no services) in
   ``$AIIDA_PATH`` (default: ``.aiida`` in the repository), made once and reused.
2. The ``pw.x`` and ``annpot`` codes on its localhost computer and a pseudo family from Debian's Si.pz-vbc.UPF.
3. ``ActiveLearningWorkChain`` with the ``fast`` protocol on the 8-atom diamond cell, run in the foreground: the
   campaign's report lines stream to the terminal as it goes.
4. In the output folder: ``summary.txt`` and ``iterations.json`` (one row per iteration), ``potential/`` (the
   committee's model files, usable with ``annpot`` and ``aiida_annpot.core.calculator.AnnCalculator``),
   ``dataset.extxyz`` (every DFT label) and PNG plots.

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


def table(rows: list[dict]) -> str:
    lines = [f"{'iter':>4} {'added':>5} {'failed':>6} {'frames':>6} {'E_val meV/at':>12} {'F_val eV/Å':>10} "
             f"{'accurate':>8} {'candidate':>9} {'failed':>6} {'selected':>8}"]  # fmt: skip
    for row in rows:
        validation, ratios = row.get("validation", {}), row.get("ratios", {})
        lines.append(
            f"{row['iteration']:>4} {row.get('labels_added', 0):>5} {row.get('labels_failed', 0):>6} "
            f"{row.get('dataset_frames', 0):>6} {validation.get('energy_rmse') or float('nan'):>12.2f} "
            f"{validation.get('force_rmse') or float('nan'):>10.3f} {ratios.get('accurate', float('nan')):>8.2f} "
            f"{ratios.get('candidate', float('nan')):>9.2f} {ratios.get('failed', float('nan')):>6.2f} "
            f"{row.get('selected', 0):>8}"
        )
    return "\n".join(lines)


def plots(node, rows: list[dict], output: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    iterations = [row["iteration"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(iterations, [row["validation"]["energy_rmse"] for row in rows], "o-")
    left.set(xlabel="iteration", ylabel="validation energy RMSE (meV/atom)")
    right.plot(iterations, [row["validation"]["force_rmse"] for row in rows], "o-")
    right.set(xlabel="iteration", ylabel="validation force RMSE (eV/Å)")
    figure.tight_layout()
    figure.savefig(output / "validation_errors.png", dpi=120)
    written.append(output / "validation_errors.png")

    explorations = sorted((c for c in node.called if c.process_label == "ExplorationWorkChain"), key=lambda c: c.ctime)
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for index, exploration in enumerate(explorations, start=1):
        if "deviations" in exploration.outputs:
            sigma = exploration.outputs.deviations.get_array("max_force_std")
            axis.hist(sigma[sigma == sigma], bins=30, histtype="step", label=f"iteration {index}")
    selection = node.inputs.exploration_config.get_dict().get("selection", {})
    for key in ("trust_lo", "trust_hi"):
        if key in selection:
            axis.axvline(selection[key], color="grey", linestyle="--")
    axis.set(xlabel="max force deviation σ_F (eV/Å)", ylabel="frames")
    axis.legend()
    figure.tight_layout()
    figure.savefig(output / "force_deviation.png", dpi=120)
    written.append(output / "force_deviation.png")
    plt.close("all")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPOSITORY / "si_campaign")
    parser.add_argument("--protocol", default="fast")
    args = parser.parse_args()

    load_or_make_profile()
    from aiida.engine import run_get_node
    from aiida.orm import StructureData, load_computer
    from ase.build import bulk

    from aiida_annpot.tools.local_setup import annpot_executable, ensure_code, ensure_debian_pseudo_family
    from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain

    computer = load_computer("localhost")
    computer.set_minimum_job_poll_interval(0.0)
    pw_code = ensure_code("pw", computer, shutil.which("pw.x"), "quantumespresso.pw")
    annpot_code = ensure_code("annpot", computer, annpot_executable(), "annpot.train")
    family = ensure_debian_pseudo_family("Si-LDA-debian")
    structure = StructureData(ase=bulk("Si", "diamond", a=5.43, cubic=True))
    builder = ActiveLearningWorkChain.get_builder_from_protocol(pw_code, annpot_code, {"si": structure}, family,
                                                                protocol=args.protocol)  # fmt: skip
    print(f"running the {args.protocol} Si campaign on profile {PROFILE}; report lines follow", flush=True)
    start = time.perf_counter()
    outputs, node = run_get_node(builder)
    minutes = (time.perf_counter() - start) / 60

    output = args.output
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    rows = node.outputs.iterations.get_list() if "iterations" in node.outputs else []
    (output / "iterations.json").write_text(json.dumps(rows, indent=2))
    state = "converged" if node.exit_status == 0 else f"exit status {node.exit_status}: {node.exit_message}"
    summary = f"ActiveLearningWorkChain<{node.pk}> ({state}) in {minutes:.1f} min\n{table(rows)}\n"
    if "potential" in outputs:
        outputs["potential"].export(output / "potential")
        outputs["dataset"].write_extxyz(output / "dataset.extxyz")
        plots(node, rows, output)
    (output / "summary.txt").write_text(summary)
    print(summary)
    print(f"wrote {output}: summary.txt, iterations.json, potential/, dataset.extxyz, *.png")
    print(f"inspect with: AIIDA_PATH={os.environ['AIIDA_PATH']} verdi -p {PROFILE} process report {node.pk}")


if __name__ == "__main__":
    main()
