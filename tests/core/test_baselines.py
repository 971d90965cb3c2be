"""Delta learning: the ZBL baseline's physics, baseline configuration errors, label residuals, model-file round
trips of a delta model, and hot MD where only the ZBL-delta model keeps atoms apart."""

from __future__ import annotations

import json
from functools import partial

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from click.testing import CliRunner
from scipy.spatial.transform import Rotation

from aiida_annpot.common.config import BaselineConfig, ConfigError, TrainingConfig, load_config
from aiida_annpot.core.baselines import ZBLCalculator, make_baseline, subtract_baseline
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.cli import cli
from aiida_annpot.core.errors import InputDataError, ModelFileError
from aiida_annpot.core.exploration import min_distance
from aiida_annpot.core.modelfile import load_potential, read_metadata
from aiida_annpot.core.training import MODEL, Trainer

# ZBL written out independently of the module under test (Ziegler, Biersack & Littmark 1985).
KE2 = 14.399645  # e²/(4πε₀), eV·Å
C = (0.18175, 0.50986, 0.28022, 0.02817)
D = (3.19980, 0.94229, 0.40290, 0.20162)
RADII = {1: 0.31, 6: 0.76, 14: 1.11, 29: 1.32}  # Å, the covalent radii ASE tabulates (Cordero et al. 2008)


def zbl(z1: int, z2: int, r: float) -> tuple[float, float]:
    """Analytic φ(r) and dφ/dr of the unscreened-switch ZBL pair."""
    a = 0.46850 / (z1**0.23 + z2**0.23)
    screen = sum(c * np.exp(-d * r / a) for c, d in zip(C, D, strict=True))
    dscreen = sum(-c * d / a * np.exp(-d * r / a) for c, d in zip(C, D, strict=True))
    return KE2 * z1 * z2 / r * screen, KE2 * z1 * z2 * (dscreen / r - screen / r**2)


def dimer(symbols: str, r: float, **parameters) -> Atoms:
    atoms = Atoms(symbols, positions=[[0.3, -0.2, 0.1], [0.3 + r, -0.2, 0.1]])
    atoms.calc = ZBLCalculator(**parameters)
    return atoms


def dense_cell(seed: int = 3) -> Atoms:
    """A random triclinic Si2C2 cell (seeded) with pairs below ``inner`` and pairs in the switching region."""
    rng = np.random.default_rng(seed)
    cell = [[3.2, 0.0, 0.0], [0.6, 3.0, 0.0], [0.4, -0.5, 3.1]]
    i, j = np.triu_indices(4, 1)
    while True:
        atoms = Atoms("Si2C2", scaled_positions=rng.random((4, 3)), cell=cell, pbc=True)
        distances = atoms.get_all_distances(mic=True)[i, j]
        inner, outer = ZBLCalculator().switching_distances(atoms.numbers[i], atoms.numbers[j])
        if distances.min() > 0.7 and np.any(distances < inner) and np.any((inner < distances) & (distances < outer)):
            return atoms


# --- ZBL physics ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("symbols", "r"), [("Si2", 0.9), ("CSi", 0.8), ("HCu", 0.5)])
def test_dimer_below_inner_is_the_analytic_zbl(symbols, r):
    atoms = dimer(symbols, r)
    z1, z2 = atoms.numbers
    assert r < 0.5 * (RADII[z1] + RADII[z2])  # below inner: the switch is 1
    phi, dphi = zbl(z1, z2, r)
    assert atoms.get_potential_energy() == pytest.approx(phi, rel=1e-6)
    forces = atoms.get_forces()
    np.testing.assert_allclose(forces[1], [-dphi, 0.0, 0.0], rtol=1e-6)  # repulsive: pushes atom 1 away along +x
    np.testing.assert_allclose(forces[0], -forces[1], rtol=1e-12)
    np.testing.assert_allclose(atoms.get_potential_energies(), [phi / 2, phi / 2], rtol=1e-6)
    assert phi > 10.0 and dphi < 0.0


def test_default_switching_distances_lie_below_the_bond():
    calc = ZBLCalculator()
    inner, outer = calc.switching_distances(np.array([14, 6]), np.array([14, 14]))
    np.testing.assert_allclose(inner, [1.11, 0.5 * (0.76 + 1.11)])
    np.testing.assert_allclose(outer, [0.8 * 2.22, 0.8 * (0.76 + 1.11)])
    assert outer[0] < 2.35 - 0.5  # well below the Si–Si bond
    inner, outer = ZBLCalculator(inner=0.7, outer=1.4).switching_distances(np.array([14]), np.array([29]))
    assert (inner[0], outer[0]) == (0.7, 1.4)


def test_finite_difference_forces_and_stress():
    atoms = dense_cell()
    atoms.calc = ZBLCalculator()
    energy = atoms.get_potential_energy()
    assert energy > 1.0
    np.testing.assert_allclose(atoms.get_potential_energies().sum(), energy, rtol=1e-12)
    forces = atoms.get_forces()
    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=1e-5), atol=1e-6 * abs(forces).max())
    stress = atoms.get_stress()
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-6), atol=1e-7 * abs(stress).max())


def test_periodic_images_count_once_per_pair():
    """Simple cubic, a = 1.5 Å: every atom has 6 image neighbours within outer (1.776 Å), i.e. 3 pairs per atom."""
    atoms = Atoms("Si", cell=[1.5, 1.5, 1.5], pbc=True)
    atoms.calc = ZBLCalculator(inner=1.6, outer=1.7)
    assert atoms.get_potential_energy() == pytest.approx(3 * zbl(14, 14, 1.5)[0], rel=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), 0.0, atol=1e-9)
    pressure = -atoms.get_stress()[:3].mean()  # -dE/dV: the repulsion pushes outwards
    assert pressure == pytest.approx(-3 * zbl(14, 14, 1.5)[1] * 1.5 / (3 * 1.5**3), rel=1e-6)


def test_switches_off_continuously_at_outer():
    outer = 0.8 * 2.22
    width = outer - 1.11
    phi = zbl(14, 14, outer)[0]
    for delta in (1e-2, 1e-3, 1e-4):  # s ≈ 10 (δ/w)³ and ds/dr ≈ -30 δ²/w³ just inside outer
        atoms = dimer("Si2", outer - delta)
        assert atoms.get_potential_energy() == pytest.approx(phi * 10 * (delta / width) ** 3, rel=0.05)
        assert abs(atoms.get_forces()[1, 0]) == pytest.approx(phi * 30 * delta**2 / width**3, rel=0.05)
    assert 0.0 <= dimer("Si2", outer).get_potential_energy() < 1e-30
    for r in (outer + 1e-9, outer + 0.3, 5.0):
        atoms = dimer("Si2", r)
        assert atoms.get_potential_energy() == 0.0
        assert not atoms.get_forces().any()


def test_translation_and_rotation_invariance():
    atoms = dense_cell(seed=5)
    atoms.calc = ZBLCalculator()
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
    moved = atoms.copy()
    moved.positions += [1.7, -0.4, 2.9]
    moved.calc = ZBLCalculator()
    assert moved.get_potential_energy() == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(moved.get_forces(), forces, atol=1e-10)
    rotation = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rotation.T)
    turned.positions = atoms.positions @ rotation.T
    turned.calc = ZBLCalculator()
    assert turned.get_potential_energy() == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(turned.get_forces(), forces @ rotation.T, atol=1e-9)
    np.testing.assert_allclose(turned.get_stress(voigt=False), rotation @ stress @ rotation.T, atol=1e-9)


def test_non_periodic_and_slab():
    cluster = dense_cell(seed=7)
    cluster.pbc = False
    cluster.calc = ZBLCalculator()
    forces = cluster.get_forces()
    np.testing.assert_allclose(forces, calculate_numerical_forces(cluster, eps=1e-5), atol=1e-6 * abs(forces).max())
    np.testing.assert_allclose(forces.sum(0), 0.0, atol=1e-9)
    with pytest.raises(PropertyNotImplementedError, match="periodic in all three directions"):
        cluster.get_stress()
    slab = dense_cell(seed=7)
    slab.pbc = [True, True, False]
    slab.calc = ZBLCalculator()
    assert slab.get_potential_energy() >= cluster.get_potential_energy()  # images add repulsion, never remove it
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()


# --- building baselines and configuration errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baseline", "cls", "parameters"),
    [
        ({"name": "zbl", "parameters": {"outer": 1.5}}, ZBLCalculator, {"outer": 1.5}),
        ({"name": "lj", "parameters": {"sigma": 2.3, "epsilon": 0.05}}, LennardJones, {"sigma": 2.3}),
        ({"name": "ase.calculators.lj.LennardJones", "parameters": {"rc": 4.0}}, LennardJones, {"rc": 4.0}),
        ({"name": "emt"}, EMT, {}),
    ],
)
def test_make_baseline(baseline, cls, parameters):
    calc = make_baseline(BaselineConfig(**baseline))
    assert type(calc) is cls
    assert parameters.items() <= dict(calc.parameters).items()
    assert type(make_baseline(baseline)) is cls  # a model file's JSON record builds the same


@pytest.mark.parametrize(
    ("baseline", "fragments"),
    [
        ({"name": "nonexistent"}, ("unknown baseline 'nonexistent'", "zbl, lj, morse, emt", "package.module.Class")),
        ({"name": "os.system()"}, ("unknown baseline 'os.system()'",)),
        ({"name": "zbl", "parameters": {"innr": 1.0}}, ("does not take parameter(s) innr", "known: inner, outer")),
        ({"name": "lj", "parameters": {"sigmaa": 2.0}}, ("baseline 'lj' does not take parameter(s) sigmaa",)),
        ({"name": "emt", "parameters": {"command": "true"}}, ("baseline 'emt' does not take parameter(s) command",)),
        ({"name": "zbl", "parameters": {"inner": 2.0, "outer": 1.0}}, ("inner (2.0 Å) must be below outer (1.0 Å)",)),
        ({"name": "zbl", "parameters": {"inner": "abc"}}, ("ZBL inner must be a finite non-negative distance",)),
    ],
)
def test_bad_baselines_are_configuration_errors(baseline, fragments):
    with pytest.raises(ConfigError) as error:
        load_config({"dataset": "data.extxyz", "baseline": baseline}, TrainingConfig)
    message = str(error.value)
    assert "invalid TrainingConfig" in message and "baseline:" in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("ase.atoms.Atoms", ("is not an ASE calculator", "ase.calculators.calculator.Calculator")),
        ("no_such_package.Calc", ("cannot import module 'no_such_package'",)),
        ("ase.calculators.lj.LenardJones", ("module 'ase.calculators.lj' has no attribute 'LenardJones'",)),
        ("ase.calculators.mixing.SumCalculator", ("is not an ASE calculator",)),
        (
            "ase.calculators.checkpoint.CheckpointCalculator",
            ("cannot be built with parameters {}", "missing 1 required positional argument: 'calculator'"),
        ),
    ],
)
def test_bad_trusted_import_paths_name_the_problem(name, fragments):
    """An import path passes the configuration check by its form alone (nothing is imported there); once the caller
    trusts it, building it says what is wrong."""
    config = load_config({"dataset": "data.extxyz", "baseline": {"name": name}}, TrainingConfig).baseline
    with pytest.raises(ValueError) as error:
        make_baseline(config, trusted=[name])
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)


def test_subtract_baseline(emt_frames):
    frames = emt_frames(n=3, seed=4)
    frames[1].calc.results.pop("stress")  # a frame without a stress label
    lj = LennardJones(sigma=2.3, epsilon=0.05, rc=4.0)
    residuals = subtract_baseline(frames, lj)
    for frame, residual in zip(frames, residuals, strict=True):
        reference = frame.copy()
        reference.calc = LennardJones(sigma=2.3, epsilon=0.05, rc=4.0)
        assert residual.get_potential_energy() == pytest.approx(
            frame.get_potential_energy() - reference.get_potential_energy(), abs=1e-12
        )
        np.testing.assert_allclose(residual.get_forces(), frame.get_forces() - reference.get_forces(), atol=1e-12)
        assert abs(reference.get_potential_energy()) > 0.1  # the baseline is not negligible here
        np.testing.assert_array_equal(residual.positions, frame.positions)
    np.testing.assert_allclose(residuals[0].get_stress(), frames[0].get_stress() - lj.get_stress(frames[0]))
    assert "stress" not in residuals[1].calc.results
    assert frames[0].calc.results["energy"] != residuals[0].calc.results["energy"]  # the originals are untouched
    si = Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]], cell=[6, 6, 6], pbc=True)
    si.calc = SinglePointCalculator(si, energy=-9.0, forces=np.zeros((2, 3)))
    with pytest.raises(InputDataError, match=r"baseline EMT cannot evaluate data.extxyz frame 3: NotImplementedError"):
        subtract_baseline([*frames, si], EMT(), source="data.extxyz")  # EMT has no Si


# --- delta learning through the model file --------------------------------------------------------------------------

ZBL_WIDE = {"name": "zbl", "parameters": {"inner": 1.0, "outer": 3.0}}  # reaches Cu's nearest neighbours (2.55 Å)
LJ = {"name": "lj", "parameters": {"sigma": 2.3, "epsilon": 0.05, "rc": 4.0}}


@pytest.fixture(scope="module")
def delta_models(tmp_path_factory, emt_frames, write_frames, training_settings):
    """Models trained on the same EMT Cu frames without a baseline, with a wide ZBL and with LJ: name → Trainer."""
    folder = tmp_path_factory.mktemp("delta")
    data = write_frames(folder / "train.extxyz", emt_frames(n=10, seed=1))
    validation = write_frames(folder / "validation.extxyz", emt_frames(n=3, seed=2))
    trainers = {}
    for name, baseline in (("plain", None), ("zbl", ZBL_WIDE), ("lj", LJ)):
        settings = training_settings(
            dataset=str(data), validation_dataset=str(validation), baseline=baseline, max_epochs=20
        )
        trainer = Trainer(TrainingConfig(**settings), folder / name, log=lambda line: None)
        assert trainer.run().status == "finished"
        trainers[name] = trainer
    return trainers


def probe() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.58, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.08, seed=11)
    return atoms


def results(calc, atoms: Atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = calc
    return {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
        "energies": atoms.get_potential_energies(),
    }


@pytest.mark.parametrize("name", ["zbl", "lj"])
def test_calculator_adds_the_baseline_before_and_after_the_round_trip(delta_models, name):
    trainer = delta_models[name]
    path = trainer.workdir / MODEL
    baseline = results(make_baseline(trainer.config.baseline), probe())
    assert abs(baseline["energy"]) > 0.5 and abs(baseline["forces"]).max() > 0.05  # not a vacuous sum
    network_only = load_potential(path)
    network_only.baseline_config = None
    network = results(AnnCalculator(network_only), probe())
    in_memory = results(AnnCalculator(trainer.potential), probe())
    loaded = results(AnnCalculator(str(path)), probe())
    for key in ("energy", "forces", "stress", "energies"):
        np.testing.assert_allclose(in_memory[key], network[key] + baseline[key], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(loaded[key], in_memory[key], rtol=1e-10, atol=1e-10)
    assert load_potential(path).baseline_config == trainer.config.baseline


def test_metadata_and_info_show_the_baseline(delta_models):
    path = delta_models["zbl"].workdir / MODEL
    assert read_metadata(path)["baseline"] == ZBL_WIDE
    assert read_metadata(delta_models["plain"].workdir / MODEL)["baseline"] is None
    shown = CliRunner().invoke(cli, ["info", str(path)], catch_exceptions=False)
    assert shown.exit_code == 0 and "baseline:     zbl (inner=1.0, outer=3.0)" in shown.stdout
    plain = CliRunner().invoke(cli, ["info", str(delta_models["plain"].workdir / MODEL)], catch_exceptions=False)
    assert "baseline:     none" in plain.stdout


def test_loaded_model_reproduces_the_total_labels(delta_models, tmp_path):
    """Metrics of the residuals are the errors of network + baseline against the DFT (here EMT) totals."""
    trainer = delta_models["zbl"]
    path, data = trainer.workdir / MODEL, trainer.config.dataset
    train = read_metadata(path)["metrics"]["train"]
    frames = ase.io.read(data, index=":")
    calc, network_only = AnnCalculator(str(path)), load_potential(path)
    network_only.baseline_config = None
    network = AnnCalculator(network_only)
    for model, expected in ((calc, train["energy_rmse"]), (network, None)):
        errors = [(results(model, f)["energy"] - f.get_potential_energy()) / len(f) for f in frames]
        rmse = 1000 * np.sqrt(np.mean(np.square(errors)))
        if expected is not None:
            assert rmse == pytest.approx(expected, rel=1e-6)
            force_errors = np.concatenate([(results(model, f)["forces"] - f.get_forces()).ravel() for f in frames])
            assert np.sqrt(np.mean(force_errors**2)) == pytest.approx(train["force_rmse"], rel=1e-6)
        else:  # the networks alone fit the residuals: far off the totals
            assert rmse > 5 * train["energy_rmse"], (rmse, train["energy_rmse"])
    result = CliRunner().invoke(
        cli, ["evaluate", str(path), data, "--output", str(tmp_path / "eval")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["committee_mean"]
    for key in ("energy_rmse", "force_rmse", "stress_rmse"):
        assert evaluated[key] == pytest.approx(train[key], rel=1e-6), key


def test_committees_and_warm_starts_need_the_same_baseline(delta_models):
    paths = {name: trainer.workdir / MODEL for name, trainer in delta_models.items()}
    for first, second in (("zbl", "lj"), ("zbl", "plain"), ("plain", "lj")):
        with pytest.raises(ModelFileError, match="committee members need the same baseline"):
            load_potential([paths[first], paths[second]])
    assert load_potential([paths["zbl"], paths["zbl"]]).baseline_config == BaselineConfig(**ZBL_WIDE)
    config = delta_models["zbl"].config
    for baseline in (None, LJ, {"name": "zbl", "parameters": {"inner": 1.0, "outer": 2.9}}):
        changed = config.model_copy(
            update={"init_model": str(paths["zbl"]), "baseline": baseline and BaselineConfig(**baseline)}
        )
        with pytest.raises(ModelFileError, match="warm start needs the same baseline"):
            Trainer(changed, delta_models["zbl"].workdir.parent / "warm", log=lambda line: None)
    same = config.model_copy(update={"init_model": str(paths["zbl"])})
    warm = Trainer(same, delta_models["zbl"].workdir.parent / "warm", log=lambda line: None)
    assert warm.potential.baseline_config == config.baseline
    assert (delta_models["zbl"].workdir / "checkpoint.pt").is_file()  # resuming it with another baseline fails
    other = Trainer(config.model_copy(update={"baseline": None}), delta_models["zbl"].workdir, log=lambda line: None)
    with pytest.raises(InputDataError, match=r"checkpoint\.pt was written for a different baseline"):
        other.run(resume=True)


# --- hot MD: a ZBL baseline keeps atoms apart where the plain networks let them collapse -----------------------------


def deepest_approach(model, atoms: Atoms, dynamics, steps: int) -> float:
    """Smallest interatomic distance (Å) along ``steps`` of MD; the engine refuses atoms closer than 0.5 Å, which
    ends a collapsed trajectory."""
    atoms.calc = AnnCalculator(str(model))
    closest = min_distance(atoms, 4.0)
    dyn = dynamics(atoms)
    for _ in range(steps):
        try:
            dyn.run(1)
        except InputDataError:  # atoms under 0.5 Å apart
            return min(closest, min_distance(atoms, 4.0))
        closest = min(closest, min_distance(atoms, 4.0))
    return closest


@pytest.fixture(scope="module")
def same_data_models(delta_models):
    """The plain model and one with the default ZBL, trained on the same frames (nearest pairs ≥ 2.2 Å, beyond
    Cu–Cu's outer switching distance 2.11 Å: the labels and so the networks are identical)."""
    plain = delta_models["plain"]
    frames = plain.train_frames
    assert min(min_distance(frame, 4.0) for frame in frames) > 0.8 * 2 * 1.32
    config = plain.config.model_copy(update={"baseline": BaselineConfig(name="zbl")})
    delta = Trainer(config, plain.workdir.parent / "zbl_default", log=lambda line: None)
    assert delta.run().status == "finished"
    metrics = [read_metadata(trainer.workdir / MODEL)["metrics"]["validation"] for trainer in (plain, delta)]
    assert metrics[0] == metrics[1]  # zero baseline on every label: the same networks
    return plain.workdir / MODEL, delta.workdir / MODEL


def test_hot_langevin_md(same_data_models):
    """6000 K Langevin in a 32-atom Cu cell, seeded."""
    closest = {}
    for name, model in zip(("plain", "zbl"), same_data_models, strict=True):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        thermalize_momenta(atoms, temperature_K=6000, rng=np.random.default_rng(0))
        langevin = partial(
            Langevin,
            timestep=1.0 * units.fs,
            temperature_K=6000,
            friction=0.01 / units.fs,
            fixcm=False,
            rng=np.random.default_rng(1),
        )
        closest[name] = deepest_approach(model, atoms, langevin, steps=400)
    assert closest["plain"] < 1.0, closest  # measured 0.49 Å (collapse, refused below 0.5 Å)
    assert closest["zbl"] > 1.5, closest  # measured 1.79 Å


def test_head_on_collision(same_data_models):
    """Two nearest neighbours in a 32-atom Cu cell fly at each other with 10 eV each (velocity Verlet, 0.25 fs)."""
    closest = {}
    for name, model in zip(("plain", "zbl"), same_data_models, strict=True):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        j = 1 + int(np.argmin(atoms.get_distances(0, range(1, len(atoms)), mic=True)))
        direction = atoms.get_distance(0, j, mic=True, vector=True) / atoms.get_distance(0, j, mic=True)
        speed = np.sqrt(2 * 10.0 / atoms.get_masses()[0])
        velocities = np.zeros((len(atoms), 3))
        velocities[0], velocities[j] = speed * direction, -speed * direction
        atoms.set_velocities(velocities)
        closest[name] = deepest_approach(model, atoms, lambda a: VelocityVerlet(a, 0.25 * units.fs), steps=120)
    assert closest["plain"] < 1.0, closest  # measured 0.49 Å
    assert closest["zbl"] > 1.3, closest  # measured 1.51 Å
