"""Shared test fixtures: labelled EMT frames, extxyz and YAML writers, quick training settings, a trained model.

The fixtures are session-scoped factories (pure functions), so tests and fixtures of any scope can use them and each
states the data it needs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

# A temporary AiiDA profile (SQLite storage, no broker, no services) for the plugin tests, from aiida-core itself.
pytest_plugins = ["aiida.tools.pytest_fixtures"]

#: Lattice constants (Å) of the fcc metals ASE's EMT describes.
FCC_LATTICE = {"Cu": 3.61, "Au": 4.08, "Ag": 4.09, "Ni": 3.52, "Pd": 3.89, "Pt": 3.92, "Al": 4.05}

#: A fast training setup: small Chebyshev descriptor, one narrow hidden layer, a few epochs, float64.
QUICK_SETTINGS = {
    "descriptor": {
        "type": "chebyshev",
        "radial_order": 4,
        "angular_order": 2,
        "radial_cutoff": 4.0,
        "angular_cutoff": 3.0,
    },
    "network": {"hidden": [8]},
    "max_epochs": 4,
    "batch_size": 4,
    "learning_rate": 0.01,
    "min_learning_rate": 1e-5,
    "dtype": "float64",
    "seed": 0,
}


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests use tiny tensors: one intra-op thread is faster than two, and several times faster when another
    process loads the second core (two OpenMP threads then wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own folder: whatever lands in the working directory (``annpot``'s status file for a
    default ``--workdir``, AiiDA's ``submit_test`` dry-run folders) stays out of the repository."""
    monkeypatch.chdir(tmp_path)


def make_emt_frames(
    n: int = 8,
    size: int | tuple[int, int, int] = 1,
    seed: int = 0,
    strain: float = 0.03,
    rattle: float = 0.1,
    element: str = "Cu",
) -> list[Atoms]:
    """``n`` fcc frames (cubic cell repeated ``size``), each uniformly strained by up to ±``strain`` and rattled
    with a Gaussian of width up to ``rattle`` Å, labelled by EMT (energy, forces, stress) in a SinglePointCalculator.
    """
    rng = np.random.default_rng(seed)
    repeat = (size,) * 3 if isinstance(size, int) else tuple(size)
    frames = []
    for _ in range(n):
        lattice = FCC_LATTICE[element] * rng.uniform(1.0 - strain, 1.0 + strain)
        atoms = bulk(element, "fcc", a=lattice, cubic=True).repeat(repeat)
        atoms.positions += rng.normal(scale=rng.uniform(0.3, 1.0) * rattle, size=atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
        frames.append(atoms)
    return frames


def write_extxyz(path: str | Path, frames: list[Atoms]) -> Path:
    """Write ``frames`` (with their labels) as extxyz; an empty list gives an empty file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if frames:
        ase.io.write(path, frames, format="extxyz")
    else:
        path.write_text("")
    return path


def quick_settings(**overrides) -> dict:
    """A copy of :data:`QUICK_SETTINGS` with top-level ``overrides`` applied (``None`` removes a key)."""
    settings = copy.deepcopy(QUICK_SETTINGS)
    for key, value in overrides.items():
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    return settings


def write_yaml(path: str | Path, mapping: dict) -> Path:
    """Dump ``mapping`` as YAML to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def emt_frames():
    """Factory ``emt_frames(n=8, size=1, seed=0, strain=0.03, rattle=0.1, element="Cu")`` of labelled frames."""
    return make_emt_frames


@pytest.fixture(scope="session")
def write_frames():
    """Factory ``write_frames(path, frames) -> Path`` writing extxyz."""
    return write_extxyz


@pytest.fixture(scope="session")
def training_settings():
    """Factory ``training_settings(**overrides) -> dict``: quick TrainingConfig settings without ``dataset``."""
    return quick_settings


@pytest.fixture(scope="session")
def write_config():
    """Factory ``write_config(path, mapping) -> Path`` writing YAML."""
    return write_yaml


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A quickly trained Cu model file (float64), shared by the whole session; treat it as read-only.

    Its folder also holds the training data ``train.extxyz`` (all of it used for training), ``validation.extxyz``,
    ``train.yaml`` and the trainer's ``metrics.json``.
    """
    from aiida_annpot.common.config import TrainingConfig, load_config
    from aiida_annpot.core.training import MODEL, Trainer

    folder = tmp_path_factory.mktemp("trained_model")
    write_extxyz(folder / "train.extxyz", make_emt_frames(n=12, seed=1))
    write_extxyz(folder / "validation.extxyz", make_emt_frames(n=4, seed=2))
    settings = quick_settings(
        dataset=str(folder / "train.extxyz"), validation_dataset=str(folder / "validation.extxyz")
    )
    config = load_config(write_yaml(folder / "train.yaml", settings), TrainingConfig)
    outcome = Trainer(config, folder, log=lambda line: None).run()
    assert outcome.status == "finished"
    return folder / MODEL


# --- AiiDA: codes, pseudopotential family and structures on the temporary profile ----------------------------------


@pytest.fixture(scope="session")
def local_computer(aiida_profile, tmp_path_factory):
    """A ``core.local`` + ``core.direct`` computer for the session's CalcJobs; no poll delay."""
    from aiida.orm import Computer

    computer = Computer(
        label="localhost-annpot",
        hostname="localhost",
        transport_type="core.local",
        scheduler_type="core.direct",
        workdir=str(tmp_path_factory.mktemp("aiida_work")),
    )
    computer.store()
    computer.set_minimum_job_poll_interval(0.0)
    computer.set_default_mpiprocs_per_machine(1)
    computer.configure(safe_interval=0.0)
    return computer


@pytest.fixture(scope="session")
def annpot_code(local_computer):
    """The ``annpot`` console script of this environment as an InstalledCode."""
    from aiida_annpot.tools.local_setup import annpot_executable, ensure_code

    return ensure_code("annpot", local_computer, annpot_executable(), "annpot.train")


@pytest.fixture(scope="session")
def pw_code(local_computer):
    """Debian's ``pw.x`` as an InstalledCode; the test is skipped where it is not installed."""
    import shutil

    from aiida_annpot.tools.local_setup import ensure_code

    executable = shutil.which("pw.x")
    if executable is None:
        pytest.skip("pw.x is not installed (scripts/setup.sh installs Debian's quantum-espresso)")
    return ensure_code("pw", local_computer, executable, "quantumespresso.pw")


@pytest.fixture(scope="session")
def cp2k_code(local_computer):
    """Debian's ``cp2k.psmp`` as the InstalledCode ``cp2k`` (plugin ``cp2k``); the test is skipped where it is not
    installed (scripts/setup.sh installs Debian's cp2k and cp2k-data)."""
    import shutil

    from aiida_annpot.tools.local_setup import ensure_cp2k_code

    if shutil.which("cp2k.psmp") is None:
        pytest.skip("cp2k.psmp is not installed (scripts/setup.sh installs Debian's cp2k)")
    return ensure_cp2k_code(local_computer)


@pytest.fixture(scope="session")
def si_pseudo_family(aiida_profile):
    """An aiida-pseudo family ``Si-LDA-test`` holding Debian's ``Si.pz-vbc.UPF``; returns its label."""
    from aiida_annpot.tools.local_setup import ensure_debian_pseudo_family

    try:
        return ensure_debian_pseudo_family("Si-LDA-test")
    except FileNotFoundError:
        pytest.skip("Si.pz-vbc.UPF not found (scripts/setup.sh installs Debian's quantum-espresso-data)")


@pytest.fixture(scope="session")
def fixture_pw_code(local_computer):
    """A ``quantumespresso.pw`` code that port, protocol and launch tests can build and validate inputs with, where
    pw.x is not installed: nothing runs it (aiida-quantumespresso's tests use such fixture codes too)."""
    from aiida_annpot.tools.local_setup import ensure_code

    return ensure_code("pw-fixture", local_computer, "/opt/fixture/bin/pw.x", "quantumespresso.pw")


@pytest.fixture(scope="session")
def generated_si_family(aiida_profile, tmp_path_factory):
    """An aiida-pseudo family ``Si-generated`` with a generated Si UPF (element and 4 valence electrons, no data):
    enough for the family checks and the bands from valence charges, without Debian's quantum-espresso-data."""
    from aiida.orm import QueryBuilder
    from aiida_pseudo.data.pseudo.upf import UpfData
    from aiida_pseudo.groups.family import PseudoPotentialFamily

    label = "Si-generated"
    if not QueryBuilder().append(PseudoPotentialFamily, filters={"label": label}).count():
        folder = tmp_path_factory.mktemp("generated_upf")
        (folder / "Si.upf").write_text(
            '<UPF version="2.0.1">\n<PP_HEADER element="Si" pseudo_type="NC" '
            'z_valence="4.0" functional="PZ"/>\n</UPF>\n'
        )
        PseudoPotentialFamily.create_from_folder(folder, label, pseudo_type=UpfData)
    return label


@pytest.fixture(scope="session")
def si_cell():
    """Factory ``si_cell(rattle=0.0, seed=0, scale=1.0) -> StructureData``: the 8-atom cubic diamond Si cell."""

    def factory(rattle: float = 0.0, seed: int = 0, scale: float = 1.0):
        from aiida.orm import StructureData

        atoms = bulk("Si", "diamond", a=5.43 * scale, cubic=True)
        if rattle:
            atoms.rattle(stdev=rattle, seed=seed)
        return StructureData(ase=atoms)

    return factory


@pytest.fixture(scope="session")
def fast_si_campaign(pw_code, annpot_code, si_pseudo_family, si_cell):
    """The fast protocol with :data:`tests.small_campaign.SMALL_CAMPAIGN` on the 8-atom cubic Si cell with the real
    pw.x, run once per session (a few minutes on 2 cores) and shared by every test that needs a finished campaign:
    (outputs, work chain node). Read-only."""
    from aiida.engine import run_get_node

    from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain

    from .small_campaign import SMALL_CAMPAIGN

    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, {"si": si_cell()}, si_pseudo_family, protocol="fast", overrides=SMALL_CAMPAIGN
    )
    return run_get_node(builder)


#: The validation of the fast campaign's potential that the tests share: five volumes of ±8 %, the vacancy in the
#: 8-atom cell, 0.4 ps of NVE on it (about 30 s with pw.x on 2 cores).
SI_VALIDATION_CONFIG = {
    "equation_of_state": {"points": 5, "max_volume_strain": 0.08},
    "vacancy": {"supercell": [1, 1, 1], "site": 0},
    "md_stability": {"supercell": [1, 1, 1], "temperature": 300.0, "steps": 400, "timestep": 1.0, "sample_interval": 5},
}


@pytest.fixture(scope="session")
def si_validation(fast_si_campaign):
    """(builder, node) of ValidationWorkChain with :data:`SI_VALIDATION_CONFIG` on the fast Si campaign's potential,
    run once per session and shared by the work chain and ``plot`` tests. Read-only."""
    from aiida.engine import run_get_node

    from aiida_annpot.workflows.validation import ValidationWorkChain

    _, campaign = fast_si_campaign
    builder = ValidationWorkChain.get_builder_from_campaign(campaign, config=SI_VALIDATION_CONFIG)
    _, node = run_get_node(builder)
    return builder, node
