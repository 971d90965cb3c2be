"""A small water-cluster campaign labelled by CP2K (BLYP-D3), on a fresh ``verdi presto`` profile.

The second labeller through the same campaign: a water dimer and trimer in a non-periodic 10.5 Å box, the ``fast``
protocol with the CP2K labeller (``reference.labeller: cp2k``, preset ``fast``: 300/40 Ry, EPS_SCF 1e-5), rattled
copies as the first training set, an independent test set of rattled copies (0.05 Å) with its own seed plus
hot MD frames of the final committee, and 0.5 fs Langevin MD at 200 and 350 K. Molecules have no equation of state
and no vacancy, so the test targets are the energy and force RMSE only.

Printed figures: the campaign's wall time and exit status, the iteration table, the final committee's test-set
table, the number of CP2K labels, and the answers of the provenance queries (the CP2K calculations behind the
potential, the origin of a selected structure).

Usage: python bench/water_cp2k.py [--workdir bench/out/water_cp2k] [--max-iterations 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from campaign import make_profile  # the same fresh presto profile as the Si campaign

#: Campaign settings for molecules in a box: rattles only, no strains, volumes or vacancies.
WATER = {
    "max_iterations": 3,
    "reference": {"labeller": "cp2k", "max_concurrent": 2, "cp2k": {"preset": "fast", "box": 10.5, "min_vacuum": 2.5}},
    "generation": {
        "include_ideal": True,
        "volumes": 0,
        "isotropic_strains": 0,
        "anisotropic_strains": 0,
        "rattles": 4,
        "rattle_amplitudes": [0.03, 0.06],
        "vacancies": 0,
    },
    "test_set": {
        "generation": {
            "include_ideal": False,
            "volumes": 0,
            "isotropic_strains": 0,
            "anisotropic_strains": 0,
            "rattles": 3,
            "rattle_amplitudes": [0.05],
            "vacancies": 0,
            "seed": 1000,
        },
        "md_frames": 2,
    },
    "test_targets": {"energy_rmse": 5.0, "force_rmse": 0.3, "bulk_modulus_error": None, "vacancy_error": None},
    # forces carry 27 numbers per trimer frame against one energy: weigh them as much as the energy (Si's fast
    # protocol weighs energies 100×, for its E–V curve)
    "committee": {"config": {"loss": {"energy_weight": 1.0, "force_weight": 1.0}}},
    "exploration": {
        "start_supercells": [[1, 1, 1]],
        "start_vacancies": False,
        "config": {
            "min_distance": 0.6,
            "break_deviation": 3.0,
            "selection": {
                "trust_lo": 0.1,
                "trust_hi": 1.5,
                "min_distance": 0.8,
                "min_candidates": 2,
                "max_candidates": 6,
            },
        },
        "stage_schedule": [
            [{"temperature": 200, "steps": 300, "timestep": 0.5, "sample_interval": 10}],
            [
                {"temperature": 200, "steps": 300, "timestep": 0.5, "sample_interval": 10},
                {"temperature": 350, "steps": 300, "timestep": 0.5, "sample_interval": 10},
            ],
        ],
    },
}


def water_clusters():
    """A water dimer and a cyclic trimer (O–H 0.97 Å, O···O 2.9 Å), not periodic, in a 10.5 Å cell."""
    import numpy as np
    from aiida.orm import StructureData
    from ase import Atoms

    def molecule(center, angle):
        c, s = np.cos(angle), np.sin(angle)
        hydrogens = [[0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]]
        rotated = [[c * x - s * y, s * x + c * y, z] for x, y, z in hydrogens]
        return [center, *(np.add(center, h) for h in rotated)]

    dimer = Atoms("OH2OH2", positions=molecule([0, 0, 0], 0.0) + molecule([2.9, 0.3, 0.2], 1.9))
    ring = [2.9 / np.sqrt(3) * np.array([np.cos(a), np.sin(a), 0.0]) for a in (0, 2 * np.pi / 3, 4 * np.pi / 3)]
    positions = [p for c, a in zip(ring, (0, 2.1, 4.2), strict=True) for p in molecule(c, a + 2.2)]
    trimer = Atoms("OH2OH2OH2", positions=positions)
    clusters = {}
    for key, atoms in (("dimer", dimer), ("trimer", trimer)):
        atoms.cell = [10.5, 10.5, 10.5]
        atoms.pbc = False
        atoms.center()
        clusters[key] = StructureData(ase=atoms)
    return clusters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "out" / "water_cp2k")
    parser.add_argument("--max-iterations", type=int, default=WATER["max_iterations"])
    args = parser.parse_args()

    profile = make_profile(args.workdir.resolve())
    from aiida import load_profile

    load_profile(profile)
    from aiida.engine import run_get_node
    from aiida.orm import load_computer

    from aiida_annpot.cli.lineage import learned_from, structure_origin
    from aiida_annpot.cli.status import campaign_header, iteration_rows, iteration_table, test_set_table
    from aiida_annpot.tools.local_setup import annpot_executable, ensure_code, ensure_cp2k_code
    from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain

    computer = load_computer("localhost")
    computer.set_minimum_job_poll_interval(0.0)
    cp2k_code = ensure_cp2k_code(computer)
    annpot_code = ensure_code("annpot", computer, annpot_executable(), "annpot.train")
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        cp2k_code,
        annpot_code,
        water_clusters(),
        protocol="fast",
        overrides={**WATER, "max_iterations": args.max_iterations},
    )
    start = time.perf_counter()
    _, node = run_get_node(builder)
    wall = time.perf_counter() - start

    print(
        f"campaign <{node.pk}> (CP2K, water): exit status {node.exit_status} {node.exit_message or ''}, "
        f"wall time {wall:.0f} s"
    )
    print(campaign_header(node))
    print(iteration_table(iteration_rows(node)))
    if "test_score" in node.outputs:
        print("final committee on the independent test set:")
        print(test_set_table(node.outputs.test_score.get_dict()))
    if "potential" in node.outputs:
        labels = learned_from(node.outputs.potential)
        kinds = sorted({calculation.process_label for calculation, _ in labels})
        print(f"the potential learned from {len(labels)} calculation(s) of kind(s) {', '.join(kinds)}")
    picked = [n for n in node.called_descendants if n.process_label == "select_candidates"]
    for selection in picked[:1]:
        made = [
            link.node for link in selection.base.links.get_outgoing().all() if link.link_label.startswith("structure_")
        ]
        if made:
            print("\n".join(structure_origin(made[0])))


if __name__ == "__main__":
    main()
