"""Model selection and physical validation of the fast Si campaign, with real pw.x, on a fresh presto profile.

Runs, in the foreground on a fresh ``verdi presto`` profile in ``--workdir``:

1. the fast Si campaign (8-atom cubic cell; ``ActiveLearningWorkChain``, as ``bench/campaign.py``);
2. ``annpot.model_selection`` on the campaign's DFT dataset: 2 descriptors × 2 networks × 25 / 50 / 100 %;
3. ``annpot.validation`` of the campaign's committee and of the model the selection chose, both against pw.x with
   the campaign's DFT settings: Birch–Murnaghan V0 and B, unrelaxed vacancy formation energy, NVE drift.

Printed figures: the wall time of each step, the model-selection table (validation errors per fraction, parameters,
score, rank) and, per validated potential, the DFT and potential values side by side.

Usage: python bench/si_validation.py [--epochs 200] [--workdir bench/out/si_validation]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from campaign import make_profile

GRID = {
    "descriptors": [
        {"type": "chebyshev", "radial_order": 6, "radial_cutoff": 4.5, "angular_order": 2, "angular_cutoff": 3.5},
        {
            "type": "behler_parrinello",
            "cutoff": 4.5,
            "g2": [{"eta": eta} for eta in (0.01, 0.05, 0.2, 0.5, 1.0)],
            "g4": [{"eta": 0.01, "zeta": 1.0, "lambda": lam} for lam in (-1, 1)],
        },
    ],
    "networks": [{"hidden": [8]}, {"hidden": [16, 16]}],
    "training_fractions": [0.25, 0.5, 1.0],
    "validation_fraction": 0.2,
}


def timed(label: str, builder):
    from aiida.engine import run_get_node

    start = time.perf_counter()
    outputs, node = run_get_node(builder)
    print(f"{label} <{node.pk}>: exit status {node.exit_status}, {time.perf_counter() - start:.0f} s", flush=True)
    return outputs, node


def print_selection(table: dict) -> None:
    print(
        "cand  descriptor          hidden   params  validation E (meV/atom) / F (eV/Å) at 25 / 50 / 100 %"
        "             score  rank"
    )
    for row in table["rows"]:
        errors = "  ".join(
            "failed"
            if f["validation_energy_rmse"] is None
            else f"{f['validation_energy_rmse']:6.2f} / {f['validation_force_rmse']:.3f}"
            for f in row["fractions"]
        )
        score = "-" if row["score"] is None else f"{row['score']:.2f}"
        print(
            f"{row['index']:>4}  {row['descriptor']['type']:<18}  {row['network']['hidden']!s:<8} "
            f"{row['n_parameters']!s:>6}  {errors}  {score:>6}  {row['rank']!s:>4}"
        )
    print(f"chosen: {table['chosen_candidate']}")


def print_properties(label: str, properties: dict) -> None:
    print(f"--- {label}")
    eos = properties.get("equation_of_state", {})
    for key in ("equilibrium_volume_A3_per_atom", "bulk_modulus_GPa"):
        if key in eos:
            entry = eos[key]
            print(
                f"  {key:>32}: DFT {entry['dft']:9.3f}  potential {entry['ann']:9.3f}  "
                f"relative error {entry['relative_error']:+.3f}"
            )
    if "vacancy" in properties:
        entry = properties["vacancy"]["unrelaxed_formation_energy_eV"]
        print(
            f"  {'unrelaxed_formation_energy_eV':>32}: DFT {entry['dft']:9.3f}  potential {entry['ann']:9.3f}  "
            f"error {entry['error']:+.3f}"
        )
    grades = properties.get("extrapolation", {})
    if grades:
        outside = ", ".join(f"{key} {grade:.2f}" for key, grade in sorted(grades.items()) if grade > 0.01)
        print(f"  {'extrapolation grades > 0.01':>32}: {outside or 'none'}")
    if "md_stability" in properties:
        md = properties["md_stability"]
        print(
            f"  {'NVE':>32}: drift {md['energy_drift_meV_per_atom_per_ps']:+.4f} meV/atom/ps over "
            f"{md['duration_ps']:.2f} ps, closest approach {md['min_distance_A']:.3f} Å, stable {md['stable']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="max_epochs of every model-selection training")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "out" / "si_validation")
    args = parser.parse_args()

    profile = make_profile(args.workdir.resolve())  # sets AIIDA_PATH: before aiida is imported
    from aiida import load_profile

    load_profile(profile)
    from aiida.orm import Dict, StructureData
    from ase.build import bulk

    from aiida_annpot.tools.local_setup import workstation_setup
    from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain
    from aiida_annpot.workflows.model_selection import ModelSelectionWorkChain
    from aiida_annpot.workflows.validation import ValidationWorkChain

    pw_code, annpot_code, family = workstation_setup("Si-LDA")
    structure = StructureData(ase=bulk("Si", "diamond", a=5.43, cubic=True))
    campaign = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, {"si": structure}, family, protocol="fast"
    )
    campaign_outputs, campaign_node = timed("fast Si campaign", campaign)

    selection = ModelSelectionWorkChain.get_builder()
    selection.dataset = campaign_outputs["dataset"]
    selection.grid = Dict(GRID)
    selection.training = Dict(
        {"max_epochs": args.epochs, "early_stopping_patience": 40, "batch_size": 4, "learning_rate": 0.01, "seed": 0}
    )
    selection.train.train.code = annpot_code
    selection_outputs, _ = timed(f"model selection ({campaign_outputs['dataset'].n_frames} frames)", selection)
    print_selection(selection_outputs["table"].get_dict())

    validated = {"campaign committee": campaign_outputs["potential"], "selected model": selection_outputs["potential"]}
    for label, potential in validated.items():
        builder = ValidationWorkChain.get_builder_from_campaign(campaign_node)
        builder.potential = potential
        outputs, _ = timed(f"validation of the {label}", builder)
        print_properties(label, outputs["properties"].get_dict())


if __name__ == "__main__":
    main()
