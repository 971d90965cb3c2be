"""Bad campaign inputs are refused at submit time by the process spec, with a message naming the problem.

Every case starts from the fast protocol's inputs (which pass), breaks one thing and validates the inputs as
submitting them would (``spec().inputs.pre_process`` then ``validate``), before any node exists.
"""

from __future__ import annotations

import copy

import pytest
from aiida.engine import run
from aiida.orm import Dict, Float, Int, List, ProcessNode, QueryBuilder, Str, StructureData
from ase import Atoms
from ase.build import bulk

from aiida_annpot.data import AnnPotential, AtomisticDataset
from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain
from aiida_annpot.workflows.campaign_inputs import split_exploration_config
from aiida_annpot.workflows.committee import CommitteeTrainingWorkChain
from aiida_annpot.workflows.exploration import ExplorationWorkChain
from aiida_annpot.workflows.labelling import labeller_names
from aiida_annpot.workflows.reference import ReferenceWorkChain
from tests.submission import validation_error

STAGE = {"temperature": 300, "steps": 20, "timestep": 1.0, "sample_interval": 5}


# Port tests run no DFT: a fixture code and a generated pseudopotential family stand in for pw.x and Debian's UPF.
@pytest.fixture(scope="session")
def pw_code(fixture_pw_code):
    return fixture_pw_code


@pytest.fixture(scope="session")
def si_pseudo_family(generated_si_family):
    return generated_si_family


def assert_refused(process_class, inputs: dict, port: str, *fragments: str) -> str:
    """The inputs fail validation at ``port`` (dotted, below ``inputs``) with every fragment in the message."""
    message = validation_error(process_class, inputs)
    assert message is not None, "the inputs were accepted"
    assert f"port '{port}'" in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def structure(symbol: str, **kwargs) -> StructureData:
    return StructureData(ase=bulk(symbol, **kwargs))


@pytest.fixture(scope="module")
def fast_builder(pw_code, annpot_code, si_pseudo_family, si_cell):
    return ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, [si_cell()], si_pseudo_family, protocol="fast"
    )


@pytest.fixture
def inputs(fast_builder):
    """A fresh copy of the fast protocol's inputs (nested dicts new, nodes shared)."""
    fresh = fast_builder._inputs(prune=True)
    assert validation_error(ActiveLearningWorkChain, fresh) is None
    return fresh


def process_count() -> int:
    return QueryBuilder().append(ProcessNode).count()


# --- ActiveLearningWorkChain ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "kwargs"),
    [("Cu", {"crystalstructure": "fcc", "a": 3.61}), ("C", {"crystalstructure": "diamond", "a": 3.57})],
)
def test_an_element_missing_from_the_pseudo_family(inputs, si_pseudo_family, symbol, kwargs):
    inputs["structures"]["s01"] = structure(symbol, **kwargs)
    assert_refused(
        ActiveLearningWorkChain,
        inputs,
        "inputs",
        f"structure s01: pseudo family '{si_pseudo_family}' has no pseudopotential for {symbol}",
    )


def with_settings(reference: dict, **changes) -> dict:
    """The ``reference`` inputs with ``changes`` to the labeller's settings (None removes a key)."""
    settings = {**reference["settings"].get_dict(), **changes}
    return {**reference, "settings": Dict({key: value for key, value in settings.items() if value is not None})}


def test_a_pseudo_family_that_does_not_exist(inputs):
    inputs["reference"] = with_settings(inputs["reference"], pseudo_family="SSSP-nonexistent")
    assert_refused(ActiveLearningWorkChain, inputs, "inputs", "pseudo family 'SSSP-nonexistent' does not exist")


def test_a_group_that_is_not_a_pseudo_family(inputs):
    from aiida.orm import Group

    Group(label="plain-group-for-validation").store()
    inputs["reference"] = with_settings(inputs["reference"], pseudo_family="plain-group-for-validation")
    assert_refused(ActiveLearningWorkChain, inputs, "inputs", "'plain-group-for-validation' is not a pseudopotential")


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"learning_rat": 0.01}, ("invalid TrainingConfig", "learning_rat: Extra inputs are not permitted")),
        ({"learning_rate": -0.01}, ("learning_rate: Input should be greater than 0",)),
        ({"network": {"hidden": [0]}}, ("hidden layer widths must be positive",)),
        ({"dataset": "mine.extxyz"}, ("do not set dataset: the calculation writes these files from its inputs",)),
        ({"baseline": {"name": "zbl-typo"}}, ("baseline", "zbl-typo")),  # delta learning: unknown baseline name
    ],
)
def test_an_invalid_training_config(inputs, changes, fragments):
    inputs["committee"]["config"] = Dict({**inputs["committee"]["config"].get_dict(), **changes})
    assert_refused(ActiveLearningWorkChain, inputs, "inputs.committee.config", *fragments)


def test_the_builder_already_refuses_an_invalid_training_config(fast_builder):
    builder = copy.deepcopy(fast_builder)
    with pytest.raises(ValueError, match="learning_rate: Input should be greater than 0"):
        builder.committee.config = Dict({**fast_builder.committee.config.get_dict(), "learning_rate": -1.0})


def test_a_committee_of_zero(inputs):
    inputs["committee"]["committee_size"] = Int(0)
    assert_refused(
        ActiveLearningWorkChain, inputs, "inputs.committee.committee_size", "committee_size must be at least 1, got 0"
    )


def test_no_exploration_job_or_no_concurrent_dft(inputs):
    """Checked by the ports themselves, so also where the work chains are exposed in the campaign."""
    no_jobs = {**inputs, "exploration": {**inputs["exploration"], "num_jobs": Int(0)}}
    assert_refused(
        ActiveLearningWorkChain, no_jobs, "inputs.exploration.num_jobs", "num_jobs must be at least 1, got 0"
    )
    no_dft = {**inputs, "reference": {**inputs["reference"], "max_concurrent": Int(-1)}}
    assert_refused(
        ActiveLearningWorkChain, no_dft, "inputs.reference.max_concurrent", "max_concurrent must be at least 1, got -1"
    )


def test_an_invalid_exploration_config(inputs):
    inputs["exploration_config"] = Dict({**inputs["exploration_config"].get_dict(), "thermostat": "nose-hoover"})
    assert_refused(
        ActiveLearningWorkChain,
        inputs,
        "inputs",
        "exploration_config with stages",
        "invalid ExplorationConfig",
        "thermostat: Extra inputs are not permitted",
    )


def test_exploration_config_must_not_name_files(inputs):
    inputs["exploration_config"] = Dict({**inputs["exploration_config"].get_dict(), "models": ["a.safetensors"]})
    assert_refused(ActiveLearningWorkChain, inputs, "inputs", "do not set models")


def test_trust_levels_in_the_wrong_order(inputs):
    config = inputs["exploration_config"].get_dict()
    config["selection"] = {**config["selection"], "trust_lo": 0.6, "trust_hi": 0.3}
    inputs["exploration_config"] = Dict(config)
    assert_refused(
        ActiveLearningWorkChain,
        inputs,
        "inputs",
        "exploration_config.selection:",
        "trust_lo (0.6) must be below trust_hi (0.3)",
    )


def test_get_builder_from_protocol_without_structures(pw_code, annpot_code, si_pseudo_family):
    for empty in ([], {}):
        with pytest.raises(ValueError, match="no structures given: a campaign needs at least one input structure"):
            ActiveLearningWorkChain.get_builder_from_protocol(
                pw_code, annpot_code, empty, si_pseudo_family, protocol="fast"
            )


def test_an_empty_structures_namespace(inputs):
    inputs["structures"] = {}
    assert_refused(
        ActiveLearningWorkChain, inputs, "inputs", "no initial structures: the structures namespace is empty"
    )


@pytest.mark.parametrize(
    ("schedule", "port", "fragments"),
    [
        ([], "inputs.stage_schedule", ("stage_schedule is empty",)),
        ([[]], "inputs.stage_schedule", ("stage_schedule[0] must be a non-empty list of stages",)),
        ([[STAGE], STAGE], "inputs.stage_schedule", ("stage_schedule[1] must be a non-empty list of stages",)),
        (
            [[STAGE], [STAGE, {**STAGE, "temperature": 0}]],
            "inputs.stage_schedule",
            ("stage_schedule[1][1]", "temperature: Input should be greater than 0"),
        ),
        ([[{**STAGE, "temperature": -300}]], "inputs.stage_schedule", ("stage_schedule[0][0]", "temperature")),
        (
            [[{**STAGE, "temprature": 300}]],
            "inputs.stage_schedule",
            ("stage_schedule[0][0]", "temprature: Extra inputs are not permitted"),
        ),
        ([[{**STAGE, "timestep": 20.0}]], "inputs.stage_schedule", ("timestep: Input should be less than or equal",)),
    ],
)
def test_a_bad_stage_schedule(inputs, schedule, port, fragments):
    inputs["stage_schedule"] = List(schedule)
    assert_refused(ActiveLearningWorkChain, inputs, port, *fragments)


@pytest.mark.parametrize(
    ("targets", "fragments"),
    [
        (
            {"energy_rmse": 5.0, "virial_rmse": 1.0},
            ("unknown validation target(s) virial_rmse", "known: energy_rmse, force_rmse"),
        ),
        ({"energy_rmse": 0.0}, ("validation targets must be positive", "'energy_rmse': 0.0")),
    ],
)
def test_bad_validation_targets(inputs, targets, fragments):
    inputs["validation_targets"] = Dict(targets)
    assert_refused(ActiveLearningWorkChain, inputs, "inputs.validation_targets", *fragments)


@pytest.mark.parametrize(
    ("targets", "port", "fragments"),
    [
        (
            {"energy_rmse": 5.0, "stress_rmse": 1.0},
            "inputs.test_targets",
            ("unknown test target(s) stress_rmse", "known: energy_rmse, force_rmse, volume_error"),
        ),
        ({"vacancy_error": -0.3}, "inputs.test_targets", ("test targets must be positive", "'vacancy_error': -0.3")),
    ],
)
def test_bad_test_targets(inputs, targets, port, fragments):
    inputs["test_targets"] = Dict(targets)
    assert_refused(ActiveLearningWorkChain, inputs, port, *fragments)


def test_test_targets_without_a_test_set_are_refused(inputs):
    inputs["test_set"] = Dict({"generation": None})
    assert_refused(ActiveLearningWorkChain, inputs, "inputs", "test_targets", "are set but there is no test set")
    inputs["test_targets"] = Dict(dict.fromkeys(inputs["test_targets"].get_dict()))  # every target switched off
    assert validation_error(ActiveLearningWorkChain, inputs) is None


def test_test_targets_the_test_set_cannot_give_are_refused(inputs):
    test_set = inputs["test_set"].get_dict()
    inputs["test_set"] = Dict({**test_set, "generation": {**test_set["generation"], "vacancies": 0, "volumes": 0}})
    assert_refused(
        ActiveLearningWorkChain,
        inputs,
        "inputs",
        "volume_error / bulk_modulus_error need",
        "vacancy_error needs test_set.generation.vacancies ≥ 1",
    )


def test_test_structures_need_pseudopotentials_too(inputs):
    inputs["test_structures"] = {"gold": structure("Au", cubic=True)}
    assert_refused(ActiveLearningWorkChain, inputs, "inputs", "structure test_structures.gold", "Au")


def test_vacancies_for_a_one_atom_structure(inputs):
    one_atom = StructureData(ase=Atoms("Si", cell=[2.6, 2.6, 2.6], pbc=True))  # simple cubic Si, 1 atom
    inputs["structures"] = {"sc": one_atom, "diamond": inputs["structures"]["s00"]}
    inputs["generation"] = Dict({**inputs["generation"].get_dict(), "vacancies": 1, "supercell": [1, 1, 1]})
    assert_refused(
        ActiveLearningWorkChain,
        inputs,
        "inputs",
        "vacancies asked for, but structure(s) sc would have fewer than 2 atoms",
    )


def test_vacancies_for_a_one_atom_structure_in_a_supercell_pass(inputs):
    one_atom = StructureData(ase=Atoms("Si", cell=[2.6, 2.6, 2.6], pbc=True))
    inputs["structures"] = {"sc": one_atom}
    inputs["generation"] = Dict({**inputs["generation"].get_dict(), "vacancies": 1, "supercell": [2, 1, 1]})
    assert validation_error(ActiveLearningWorkChain, inputs) is None


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"vacancie": 1}, ("invalid GenerationConfig", "vacancie: Extra inputs are not permitted")),
        ({"supercell": [2, 0, 1]}, ("supercell repetitions must be at least 1",)),
        (
            {
                "include_ideal": False,
                "volumes": 0,
                "isotropic_strains": 0,
                "anisotropic_strains": 0,
                "rattles": 0,
                "vacancies": 0,
            },
            ("generation makes no structure",),
        ),
        ({"volumes": 1}, ("volumes must be 0 (no energy–volume series) or at least 2",)),
        ({"rattle_amplitudes": [0.1, 1.5]}, ("rattle amplitudes must lie in (0, 1) Å, got [0.1, 1.5]",)),
    ],
)
def test_an_invalid_generation(inputs, changes, fragments):
    inputs["generation"] = Dict({**inputs["generation"].get_dict(), **changes})
    assert_refused(ActiveLearningWorkChain, inputs, "inputs.generation", *fragments)


@pytest.mark.parametrize("accuracy", [0.0, -0.5, 1.5])
def test_conv_accuracy_out_of_range(inputs, accuracy):
    inputs["conv_accuracy"] = Float(accuracy)
    assert_refused(ActiveLearningWorkChain, inputs, "inputs", f"conv_accuracy must be in (0, 1], got {accuracy}")


def test_conv_accuracy_of_one_and_zero_iterations(inputs):
    inputs["conv_accuracy"] = Float(1.0)
    assert validation_error(ActiveLearningWorkChain, inputs) is None
    inputs["max_iterations"] = Int(0)
    assert_refused(ActiveLearningWorkChain, inputs, "inputs", "max_iterations must be at least 1, got 0")


def test_run_refuses_before_anything_is_created(inputs):
    inputs["structures"]["s01"] = structure("Cu", crystalstructure="fcc", a=3.61)
    before = process_count()
    with pytest.raises(ValueError, match="has no pseudopotential for Cu"):
        run(ActiveLearningWorkChain, **inputs)
    assert process_count() == before  # no work chain, no calculation, no calcfunction


# --- the work chains underneath -------------------------------------------------------------------------------------


@pytest.fixture
def reference_inputs(inputs, si_cell):
    structures = {"a": si_cell(), "b": si_cell(rattle=0.05)}
    return {
        "structures": structures,
        "labeller": inputs["reference"]["labeller"],
        "code": inputs["reference"]["code"],
        "settings": inputs["reference"]["settings"],
        "max_concurrent": Int(2),
    }


def test_reference_work_chain(reference_inputs, si_pseudo_family):
    assert validation_error(ReferenceWorkChain, reference_inputs) is None
    bad = {**reference_inputs, "structures": {**reference_inputs["structures"], "cu": structure("Cu", a=3.61)}}
    assert_refused(
        ReferenceWorkChain,
        bad,
        "inputs",
        f"structure cu: pseudo family '{si_pseudo_family}' has no pseudopotential for Cu",
    )
    assert_refused(
        ReferenceWorkChain,
        with_settings(reference_inputs, pseudo_family="nope"),
        "inputs",
        "pseudo family 'nope' does not exist",
    )
    assert_refused(
        ReferenceWorkChain,
        {**reference_inputs, "structures": {}},
        "inputs",
        "no structures to label: the structures namespace is empty",
    )
    assert_refused(
        ReferenceWorkChain,
        {**reference_inputs, "max_concurrent": Int(0)},
        "inputs.max_concurrent",
        "max_concurrent must be at least 1, got 0",
    )
    before = process_count()
    with pytest.raises(ValueError, match="has no pseudopotential for Cu"):
        run(ReferenceWorkChain, **bad)
    assert process_count() == before


def test_reference_work_chain_refuses_overlapping_atoms_and_bad_pw_settings(reference_inputs):
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.positions[1] = atoms.positions[0] + [0.0, 0.2, 0.0]
    overlapping = {**reference_inputs, "structures": {**reference_inputs["structures"], "c": StructureData(ase=atoms)}}
    assert_refused(ReferenceWorkChain, overlapping, "inputs", "structure c: atoms 0 (Si) and 1 (Si) are 0.200 Å apart")
    lone = Atoms("Si", cell=[1.0, 5.0, 5.0], pbc=True)  # 1 Å from its own image along x
    alone = {**reference_inputs, "structures": {"d": StructureData(ase=lone)}}
    assert_refused(
        ReferenceWorkChain, alone, "inputs", "structure d: atom 0 (Si) is 1.000 Å from its own periodic image"
    )
    parameters = reference_inputs["settings"]["parameters"]
    typo = with_settings(
        reference_inputs, parameters={**parameters, "SYSTEM": {**parameters["SYSTEM"], "ecut_wfc": 30.0}}
    )
    message = "parameters.SYSTEM.ecut_wfc: not a pw.x variable of &SYSTEM"
    assert_refused(ReferenceWorkChain, typo, "inputs", "quantumespresso settings", message, "did you mean 'ecutwfc'")
    before = process_count()
    with pytest.raises(ValueError, match=r"0\.200 Å apart"):
        run(ReferenceWorkChain, **overlapping)
    assert process_count() == before


def test_an_unknown_labeller_is_refused_naming_the_installed_ones(inputs, reference_inputs):
    assert "quantumespresso" in labeller_names()
    fragment = f"labeller: unknown labeller 'vasp'; installed: {', '.join(labeller_names())}"
    assert_refused(ReferenceWorkChain, {**reference_inputs, "labeller": Str("vasp")}, "inputs.labeller", fragment)
    inputs["reference"]["labeller"] = Str("vasp")
    assert_refused(ActiveLearningWorkChain, inputs, "inputs.reference.labeller", fragment)
    before = process_count()
    with pytest.raises(ValueError, match="unknown labeller 'vasp'"):
        run(ReferenceWorkChain, **{**reference_inputs, "labeller": Str("vasp")})
    assert process_count() == before


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"kpoint_distance": 0.3}, ("kpoint_distance: Extra inputs are not permitted",)),
        ({"kpoints_distance": None}, ("kpoints_distance: Field required",)),
        ({"kpoints_distance": "dense"}, ("kpoints_distance: Input should be a valid number", "(got 'dense')")),
        ({"pw_base": {"max_iterations": 1}}, ("pw_base: Extra inputs are not permitted",)),  # the old namespace
        (
            {"parameters": {"SYSTEM": {"ecut_wfc": 30.0}}},
            ("parameters.SYSTEM.ecut_wfc: not a pw.x variable of &SYSTEM", "did you mean 'ecutwfc'"),
        ),
        ({"parameters": {"ELECTRON": {"conv_thr": 1e-8}}}, ("'ELECTRON' is not a pw.x namelist",)),
        (
            {"parameters": {"SYSTEM": {"degauss": "small"}}},
            ("parameters.SYSTEM.degauss: must be a number, got 'small'",),
        ),
    ],
    ids=[
        "unknown-key",
        "missing-key",
        "word-for-number",
        "old-namespace",
        "pw-key-typo",
        "pw-namelist-typo",
        "pw-value-type",
    ],
)
def test_bad_labeller_settings_are_refused_naming_the_field(inputs, reference_inputs, changes, fragments):
    """The settings Dict is checked against the labeller's schema where the reference work chain runs alone and
    where the campaign exposes it, before any process exists."""
    prefix = "settings: quantumespresso settings"
    assert_refused(ReferenceWorkChain, with_settings(reference_inputs, **changes), "inputs", prefix, *fragments)
    campaign = {**inputs, "reference": with_settings(inputs["reference"], **changes)}
    assert_refused(ActiveLearningWorkChain, campaign, "inputs.reference", prefix, *fragments)
    before = process_count()
    with pytest.raises(ValueError, match=prefix):
        run(ActiveLearningWorkChain, **campaign)
    assert process_count() == before


@pytest.fixture(scope="module")
def cu_potential(trained_model):
    return AnnPotential.from_files([trained_model]).store()


@pytest.fixture
def exploration_inputs(inputs, cu_potential):
    engine, selection = split_exploration_config(inputs["exploration_config"].get_dict())
    config = {**engine, "stages": [STAGE]}
    return {
        "potential": cu_potential,
        "structures": {"cu": structure("Cu", crystalstructure="fcc", a=3.61)},
        "config": Dict(config),
        "selection": Dict(selection),
        "num_jobs": Int(1),
        "explore": inputs["exploration"]["explore"],
    }


def test_exploration_work_chain(exploration_inputs):
    assert validation_error(ExplorationWorkChain, exploration_inputs) is None
    base = exploration_inputs["config"].get_dict()
    si = {**exploration_inputs, "structures": {"si": structure("Si", crystalstructure="diamond", a=5.43)}}
    assert_refused(
        ExplorationWorkChain, si, "inputs", "start structure si has element(s) Si the potential does not cover"
    )
    assert_refused(
        ExplorationWorkChain,
        {**exploration_inputs, "structures": {}},
        "inputs",
        "no start structures: the structures namespace is empty",
    )
    assert_refused(
        ExplorationWorkChain,
        {**exploration_inputs, "num_jobs": Int(0)},
        "inputs.num_jobs",
        "num_jobs must be at least 1, got 0",
    )
    unknown = {**exploration_inputs, "config": Dict({**base, "thermostat": "berendsen"})}
    assert_refused(ExplorationWorkChain, unknown, "inputs.config", "thermostat: Extra inputs are not permitted")
    window = {**exploration_inputs, "selection": Dict({"trust_lo": 0.4, "trust_hi": 0.1})}
    assert_refused(ExplorationWorkChain, window, "inputs.selection", "trust_lo (0.4) must be below trust_hi (0.1)")
    in_the_engine = {**exploration_inputs, "config": Dict({**base, "selection": {"trust_lo": 0.1}})}
    assert_refused(ExplorationWorkChain, in_the_engine, "inputs.config", "selection is not an exploration setting")
    no_stage = {**exploration_inputs, "config": Dict({**base, "stages": []})}
    assert_refused(ExplorationWorkChain, no_stage, "inputs.config", "stages: List should have at least 1 item")
    cold = {**exploration_inputs, "config": Dict({**base, "stages": [{**STAGE, "temperature": 0}]})}
    assert_refused(ExplorationWorkChain, cold, "inputs.config", "temperature: Input should be greater than 0")


@pytest.fixture(scope="module")
def cu_dataset(emt_frames):
    return AtomisticDataset.from_frames(emt_frames(n=4, seed=5)).store()


@pytest.fixture
def committee_inputs(inputs, cu_dataset):
    return {
        "dataset": cu_dataset,
        "config": inputs["committee"]["config"],
        "committee_size": Int(2),
        "train": inputs["committee"]["train"],
    }


def test_committee_training_work_chain(committee_inputs):
    assert validation_error(CommitteeTrainingWorkChain, committee_inputs) is None
    assert_refused(
        CommitteeTrainingWorkChain,
        {**committee_inputs, "committee_size": Int(0)},
        "inputs.committee_size",
        "committee_size must be at least 1, got 0",
    )
    assert_refused(
        CommitteeTrainingWorkChain,
        {**committee_inputs, "committee_size": Int(-3)},
        "inputs.committee_size",
        "committee_size must be at least 1, got -3",
    )
    config = committee_inputs["config"].get_dict()
    bad = {**committee_inputs, "config": Dict({**config, "learning_rate": -0.1})}
    assert_refused(CommitteeTrainingWorkChain, bad, "inputs.config", "learning_rate: Input should be greater than 0")
    lr = {**committee_inputs, "config": Dict({**config, "min_learning_rate": 0.1})}
    assert_refused(CommitteeTrainingWorkChain, lr, "inputs.config", "min_learning_rate (0.1) exceeds learning_rate")
    before = process_count()
    with pytest.raises(ValueError, match="committee_size must be at least 1, got 0"):
        run(CommitteeTrainingWorkChain, **{**committee_inputs, "committee_size": Int(0)})
    assert process_count() == before
