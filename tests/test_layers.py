"""The layers stay apart: the AiiDA side never needs torch, and the schema layer imports nothing from the engine.

Each check runs in a fresh interpreter, so modules that other tests imported do not hide an import.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from aiida_annpot.core.descriptors import DESCRIPTORS, descriptor_class, make_descriptor


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_plugins_load_and_merge_labels_without_torch():
    """Every plugin entry point imports, and the daemon's dataset step runs, where torch cannot be imported."""
    out = _run(
        """
        import sys
        sys.modules["torch"] = None  # `import torch` now raises ImportError
        import importlib.metadata as md
        loaded = 0
        for group in ("aiida.data", "aiida.calculations", "aiida.parsers", "aiida.workflows"):
            for point in md.entry_points(group=group):
                if point.value.startswith("aiida_annpot"):
                    point.load()
                    loaded += 1
        import aiida_annpot.cli  # the aiida-annpot command
        from aiida import load_profile
        from aiida.storage.sqlite_temp import SqliteTempBackend
        load_profile(SqliteTempBackend.create_profile("no-torch"), allow_switch=True)
        import numpy as np
        from aiida.orm import StructureData
        from ase.build import bulk
        from aiida_annpot.calcfunctions import merge_dataset
        from aiida_annpot.data import LabelData
        structure = StructureData(ase=bulk("Si", "diamond", 5.43, cubic=True))
        label = LabelData.build(-850.0, np.zeros((8, 3)), np.eye(3) * 0.01, calculation_uuid="u", code="test")
        merged = merge_dataset(structure_a=structure, label_a=label)
        print(loaded, merged["dataset"].n_frames, merged["dataset"].sources)
        """
    )
    loaded, frames, sources = out.split(maxsplit=2)
    assert int(loaded) >= 20 and int(frames) == 1 and "'u'" in sources


def test_daemon_workers_load_the_plugins_without_torch_or_vesin():
    """With torch installed, loading every plugin entry point (what a daemon worker does) imports neither torch nor
    vesin, which imports torch when it can: hundreds of MB and seconds per worker, for processes that submit
    calculations, merge labels and select frames. Only the calcfunctions that evaluate a potential load them, when
    they run."""
    out = _run(
        """
        import sys
        import importlib.metadata as md
        for group in ("aiida.data", "aiida.calculations", "aiida.parsers", "aiida.workflows"):
            for point in md.entry_points(group=group):
                if point.value.startswith("aiida_annpot"):
                    point.load()
        print("torch" in sys.modules, "vesin" in sys.modules)
        """
    )
    assert out.strip() == "False False"


def test_status_and_lineage_import_neither_the_work_chains_nor_torch():
    """``aiida-annpot status`` and ``lineage`` read the graph without the work chains, whose calcfunctions import the
    engine's vesin, which imports torch when it is installed (seconds of start-up for every command)."""
    out = _run(
        """
        import sys
        from aiida import load_profile
        from aiida.storage.sqlite_temp import SqliteTempBackend
        load_profile(SqliteTempBackend.create_profile("status"), allow_switch=True)
        from aiida.orm import WorkChainNode
        from plumpy import ProcessState
        from aiida_annpot.cli.root import load_campaign
        from aiida_annpot.cli.status import campaign_header, held_children, iteration_rows
        from aiida_annpot.workflows.published import CAMPAIGN_PROCESS_TYPE
        node = WorkChainNode(process_type=CAMPAIGN_PROCESS_TYPE)
        node.set_process_state(ProcessState.WAITING)
        node = load_campaign(node.store())
        campaign_header(node), held_children(node), iteration_rows(node)
        import aiida_annpot.cli.lineage, aiida_annpot.data
        print(sorted(name for name in sys.modules if "workflows.active_learning" in name), "torch" in sys.modules)
        """
    )
    assert out.strip() == "[] False"


def test_the_schema_layer_imports_nothing_from_the_engine():
    """Loading and validating configurations (with a baseline, whose check builds the ASE calculator) imports neither
    the engine package, nor torch, nor vesin."""
    out = _run(
        """
        import sys
        from aiida_annpot.common.config import TrainingConfig, ExplorationConfig, load_config
        load_config({"dataset": "d.extxyz", "baseline": {"name": "lj", "parameters": {"sigma": 2.0}}}, TrainingConfig)
        load_config({"dataset": "d.extxyz", "baseline": {"name": "zbl", "parameters": {"inner": 1.0}}}, TrainingConfig)
        load_config({"models": ["m"], "structures": "s", "stages": [{"temperature": 300, "steps": 10}]},
                    ExplorationConfig)
        engine = sorted(name for name in sys.modules if name.startswith("aiida_annpot.core"))
        print(engine, "torch" in sys.modules, "vesin" in sys.modules)
        """
    )
    assert out.strip() == "[] False False"


def test_descriptor_registry_builds_every_registered_type():
    from aiida_annpot.common.config import BehlerParrinelloConfig, ChebyshevConfig

    assert set(DESCRIPTORS) == {"chebyshev", "behler_parrinello"}
    for config in (ChebyshevConfig(), BehlerParrinelloConfig()):
        descriptor = make_descriptor(["Si"], config)
        assert isinstance(descriptor, descriptor_class(config.type)) and descriptor.cutoff > 0
    with pytest.raises(TypeError, match="no descriptor of type 'soap'; registered: chebyshev, behler_parrinello"):
        descriptor_class("soap")
