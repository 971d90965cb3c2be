"""The CLI's queries at 10^4 labels, measured instead of extrapolated: a campaign-shaped graph stored by hand.

``campaign_scale.py`` runs a real campaign of 1,000 labels (what fits here in half an hour). This adds, to the same
``annpot-scale`` profile, a graph with the shape that ``aiida-annpot status`` and ``lineage`` walk, at ``--labels``
labels and no process running: a finished campaign node calling ``labels / 250`` ReferenceWorkChain nodes, each
calling 250 label work chains with one AseLabelCalculation node each (the call tree ``status`` walks), and a
potential trained on one dataset of ``labels`` frames (4 Cu atoms each) whose sources are those calculations (what
``lineage`` reads). No LabelData, structures or retrieved files: those are not on the queries' paths. Then it times
the same CLI calls and in-process queries as the campaign's checkpoints (:func:`scale_measurements.checkpoint`).

Usage: python bench/scale_synthetic.py [--labels 10000] [--repeats 5]   (after campaign_scale.py)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from scale_measurements import PROFILE, checkpoint, committee_potentials, environment

ROOT = Path(__file__).resolve().parents[1]
PER_REFERENCE = 250


def _process(node_class, process_type: str, label: str, caller=None, link_type=None, link: str = ""):
    from plumpy import ProcessState

    node = node_class(process_type=process_type)
    node.set_process_label(label)
    node.set_process_state(ProcessState.FINISHED)
    node.set_exit_status(0)
    if caller is not None:
        node.base.links.add_incoming(caller, link_type, link)
    return node.store()  # not sealed: a sealed node cannot call others, and no query reads the seal


def call_tree(labels: int):
    """The campaign node, and the UUIDs of its ``labels`` calculations."""
    from aiida.common.links import LinkType
    from aiida.orm import CalcJobNode, WorkChainNode

    from aiida_annpot.workflows.published import CAMPAIGN_PROCESS_TYPE, ITERATIONS_EXTRA

    campaign = _process(WorkChainNode, CAMPAIGN_PROCESS_TYPE, "ActiveLearningWorkChain")
    rows = [
        {"iteration": index + 1, "labels_added": PER_REFERENCE, "dataset_frames": (index + 1) * PER_REFERENCE}
        for index in range(labels // PER_REFERENCE)
    ]
    campaign.base.extras.set(ITERATIONS_EXTRA, rows)  # one status row per iteration
    uuids = []
    for index in range(labels // PER_REFERENCE):
        reference = _process(
            WorkChainNode,
            "aiida.workflows:annpot.reference",
            "ReferenceWorkChain",
            campaign,
            LinkType.CALL_WORK,
            f"reference_{index:03d}",
        )
        for key in range(PER_REFERENCE):
            work = _process(
                WorkChainNode,
                "aiida.workflows:annpot.labelling.ase",
                "AseLabelWorkChain",
                reference,
                LinkType.CALL_WORK,
                f"label_{key}",
            )
            calc = _process(
                CalcJobNode,
                "aiida.calculations:annpot.ase_label",
                "AseLabelCalculation",
                work,
                LinkType.CALL_CALC,
                "calculation",
            )
            uuids.append(calc.uuid)
        print(f"{len(uuids)} labels stored", flush=True)
    return campaign, uuids


def trained_potential(uuids: list[str], model_source):
    """A potential ← training CalcJob ← a dataset whose frames name ``uuids`` (members copied from
    ``model_source``)."""
    import numpy as np
    from aiida.common.links import LinkType
    from aiida.orm import CalcJobNode
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    from aiida_annpot.data import AnnPotential, AtomisticDataset

    rng = np.random.default_rng(0)
    frames = []
    for _ in uuids:
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=rng.normal(size=(4, 3)))
        frames.append(atoms)
    dataset = AtomisticDataset.from_frames(frames, sources=uuids).store()
    train = CalcJobNode(process_type="aiida.calculations:annpot.train")
    train.base.links.add_incoming(dataset, LinkType.INPUT_CALC, "dataset")
    train.store()
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index in range(model_source.committee_size):
            paths.append(Path(folder) / AnnPotential.member_name(index))
            paths[-1].write_bytes(model_source.member_bytes(index))
        potential = AnnPotential.from_files(paths)
    potential.base.links.add_incoming(train, LinkType.CREATE, "potential")
    return potential.store()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "campaign_scale")
    parser.add_argument("--reuse", nargs=2, type=int, metavar=("CAMPAIGN", "POTENTIAL"), help="time a stored graph")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    env = environment(workdir)
    os.environ.update(AIIDA_PATH=env["AIIDA_PATH"], PATH=env["PATH"])
    from aiida import load_profile
    from aiida.orm import load_node

    load_profile(PROFILE)
    results = json.loads((workdir / "results.json").read_text())
    source = load_node(committee_potentials(results["campaign"])[-1])
    if args.reuse:
        campaign_pk, potential_pk = args.reuse
    else:
        start = time.perf_counter()
        campaign, uuids = call_tree(args.labels)
        campaign_pk, potential_pk = campaign.pk, trained_potential(uuids, source).pk
        print(f"stored in {time.perf_counter() - start:.0f} s: campaign <{campaign_pk}>, potential <{potential_pk}>")
    point = checkpoint(env, workdir, campaign_pk, potential_pk, args.labels, args.repeats)
    point["status_beyond_s"] = point["status_cli_s"] - point["list_cli_s"]
    point["lineage_beyond_s"] = point["lineage_cli_s"] - point["list_cli_s"]
    results["synthetic"] = point
    (workdir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(point, indent=1))


if __name__ == "__main__":
    main()
