"""ActiveLearningWorkChain protocols: available protocols, default → protocol → overrides, strict keys, builders."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from aiida.orm import StructureData
from ase.build import bulk

from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain
from aiida_annpot.workflows.labelling import labeller_names
from aiida_annpot.workflows.labelling.quantumespresso import QuantumEspressoSettings
from tests.submission import validation_error

PROTOCOLS = ("fast", "balanced", "stringent")


# Port tests run no DFT: a fixture code and a generated pseudopotential family stand in for pw.x and Debian's UPF.
@pytest.fixture(scope="session")
def pw_code(fixture_pw_code):
    return fixture_pw_code


@pytest.fixture(scope="session")
def si_pseudo_family(generated_si_family):
    return generated_si_family


def protocol_file() -> dict:
    return yaml.safe_load(ActiveLearningWorkChain.get_protocol_filepath().read_text())


@pytest.fixture(scope="module")
def builders(pw_code, annpot_code, si_pseudo_family, si_cell):
    """One builder per protocol for the 8-atom Si cell."""
    return {
        name: ActiveLearningWorkChain.get_builder_from_protocol(
            pw_code, annpot_code, [si_cell()], si_pseudo_family, protocol=name
        )
        for name in PROTOCOLS
    }


def test_available_protocols_have_descriptions():
    available = ActiveLearningWorkChain.get_available_protocols()
    assert set(available) == set(PROTOCOLS)
    for name in PROTOCOLS:
        assert set(available[name]) == {"description"}
        assert isinstance(available[name]["description"], str) and len(available[name]["description"]) > 20
    assert "workstation" in available["fast"]["description"]
    assert ActiveLearningWorkChain.get_default_protocol() == "balanced"


def test_inputs_merge_default_then_protocol_then_overrides():
    data = protocol_file()
    overrides = {
        "max_iterations": 7,
        "reference": {"quantumespresso": {"ecutwfc": 33.0}},
        "committee": {"config": {"max_epochs": 5}},
    }
    inputs = ActiveLearningWorkChain.get_protocol_inputs("fast", overrides)

    assert inputs["max_iterations"] == 7  # override over fast's 5
    assert inputs["conv_accuracy"] == 0.9  # fast
    assert inputs["warm_start"] is False  # fast
    assert inputs["test_targets"] == data["default_inputs"]["test_targets"]  # default, untouched by fast
    reference = inputs["reference"]
    assert reference["labeller"] == "quantumespresso" and reference["max_concurrent"] == 4  # default, then fast
    qe = reference["quantumespresso"]
    assert qe["ecutwfc"] == 33.0 and qe["ecutrho"] == 80.0  # override, then fast
    assert qe["protocol"] == "fast" and qe["pseudo_family"] is None  # fast; the family comes at launch
    assert qe["electronic_type"] == "metal" and qe["kpoints_distance"] == 0.6  # default, then fast
    assert qe["kpoints_offset"] == [0.5, 0.5, 0.5] and qe["bands_factor"] == 1.5  # fast
    assert qe["parameters"] == {"ELECTRONS": {"conv_thr": 1.0e-8}, "SYSTEM": {"degauss": 0.01}}
    config = inputs["committee"]["config"]
    assert config["max_epochs"] == 5  # override
    assert config["learning_rate"] == 0.01 and config["network"] == {"hidden": [16, 16], "activation": "tanh"}  # fast
    default_loss = data["default_inputs"]["committee"]["config"]["loss"]
    assert config["loss"] == {**default_loss, "energy_weight": 100.0}  # fast's energy weight over the default
    assert inputs["committee"]["committee_size"] == 4
    selection = inputs["exploration"]["config"]["selection"]
    fast = data["protocols"]["fast"]["exploration"]["config"]["selection"]
    default = data["default_inputs"]["exploration"]["config"]["selection"]
    assert selection == {**default, **fast} and "duplicate_threshold" not in fast  # fast's keys over the default's
    assert inputs["exploration"]["config"]["friction"] == 0.01
    assert inputs["exploration"]["stage_schedule"] == data["protocols"]["fast"]["exploration"]["stage_schedule"]
    assert inputs["generation"] == data["default_inputs"]["generation"]  # fast keeps the full recipe


def test_default_protocol_and_no_overrides():
    balanced = ActiveLearningWorkChain.get_protocol_inputs("balanced")
    assert ActiveLearningWorkChain.get_protocol_inputs() == balanced
    assert balanced == protocol_file()["default_inputs"]  # balanced changes nothing
    stringent = ActiveLearningWorkChain.get_protocol_inputs("stringent")
    assert stringent["committee"]["committee_size"] == 5
    assert stringent["reference"]["quantumespresso"]["ecutwfc"] == 45.0
    assert stringent["committee"]["config"]["batch_size"] == balanced["committee"]["config"]["batch_size"]


def test_lists_are_replaced_not_merged():
    schedule = [[{"temperature": 500, "steps": 50, "timestep": 1.0, "sample_interval": 5}]]
    inputs = ActiveLearningWorkChain.get_protocol_inputs(
        "fast", {"exploration": {"stage_schedule": schedule}, "generation": {"supercell": [2, 2, 2]}}
    )
    assert inputs["exploration"]["stage_schedule"] == schedule
    assert inputs["generation"]["supercell"] == [2, 2, 2]


def test_unknown_protocol_raises():
    with pytest.raises(ValueError, match="unknown protocol 'quick'; available: fast, balanced, stringent"):
        ActiveLearningWorkChain.get_protocol_inputs("quick")


@pytest.mark.parametrize(
    ("overrides", "paths"),
    [
        ({"max_iteration": 3}, "max_iteration"),
        ({"reference": {"ecut": 30.0}}, "reference.ecut"),
        ({"reference": {"quantumespresso": {"ecut": 30.0}}}, "reference.quantumespresso.ecut"),
        ({"reference": {"vasp": {"encut": 400}}}, "reference.vasp"),  # no such labeller section
        # the settings that moved under reference.quantumespresso are unknown where they were
        (
            {"reference": {"ecutwfc": 30.0, "pw_parameters": {}, "pw_protocol": "fast"}},
            "reference.ecutwfc, reference.pw_parameters, reference.pw_protocol",
        ),
        ({"exploration": {"num_job": 2}}, "exploration.num_job"),
        ({"committee": {"size": 3, "committee_size": 3}}, "committee.size"),
        (
            {"foo": 1, "reference": {"quantumespresso": {"ecut": 30.0, "ecutwfc": 30.0}}},
            "foo, reference.quantumespresso.ecut",
        ),
    ],
)
def test_unknown_override_keys_raise_with_their_dotted_path(overrides, paths):
    with pytest.raises(ValueError, match=f"^unknown override key\\(s\\): {paths}$"):
        ActiveLearningWorkChain.get_protocol_inputs("fast", overrides)


def test_overrides_are_not_mutated_nor_aliased():
    overrides = {
        "reference": {"quantumespresso": {"ecutwfc": 33.0, "parameters": {"SYSTEM": {"nosym": True}}}},
        "committee": {"config": {"network": {"hidden": [4, 4]}}},
    }
    before = copy.deepcopy(overrides)
    inputs = ActiveLearningWorkChain.get_protocol_inputs("fast", overrides)
    assert overrides == before
    inputs["committee"]["config"]["network"]["hidden"].append(4)
    inputs["reference"]["quantumespresso"]["parameters"]["SYSTEM"]["nosym"] = False
    assert overrides == before
    assert ActiveLearningWorkChain.get_protocol_inputs("fast")["committee"]["config"]["network"]["hidden"] == [16, 16]


def test_free_form_paths_accept_any_key_at_merge_time():
    overrides = {
        "committee": {"config": {"anything_at_all": 1}},
        "exploration": {"config": {"whatever": 2}},
        "reference": {"quantumespresso": {"parameters": {"SYSTEM": {"nosym": True}}}},
        "generation": {"new_key": 3},
        "validation_targets": {"virial_rmse": 1.0},
    }
    inputs = ActiveLearningWorkChain.get_protocol_inputs("fast", overrides)
    assert inputs["committee"]["config"]["anything_at_all"] == 1
    assert inputs["exploration"]["config"]["whatever"] == 2
    assert inputs["reference"]["quantumespresso"]["parameters"] == {
        "ELECTRONS": {"conv_thr": 1.0e-8},
        "SYSTEM": {"degauss": 0.01, "nosym": True},
    }
    assert inputs["generation"]["new_key"] == 3
    assert inputs["validation_targets"] == {"virial_rmse": 1.0}


@pytest.mark.parametrize("name", PROTOCOLS)
def test_builder_of_each_protocol_passes_the_process_spec(builders, name, pw_code, annpot_code, si_pseudo_family):
    builder = builders[name]
    assert validation_error(ActiveLearningWorkChain, builder) is None
    expected = ActiveLearningWorkChain.get_protocol_inputs(name)
    reference = expected["reference"]

    assert list(builder.structures) == ["s00"] and len(builder.structures["s00"].sites) == 8
    assert builder.max_iterations.value == expected["max_iterations"]
    assert builder.conv_accuracy.value == expected["conv_accuracy"]
    assert builder.validation_targets.get_dict() == expected["validation_targets"]
    assert builder.generation.get_dict() == expected["generation"]
    assert builder.test_set.get_dict() == expected["test_set"]
    assert builder.test_targets.get_dict() == expected["test_targets"]
    assert builder.start_supercells.get_list() == expected["exploration"]["start_supercells"]

    qe = reference["quantumespresso"]
    assert builder.reference.labeller.value == "quantumespresso"
    settings = builder.reference.settings.get_dict()
    # the settings are resolved once, in full, and pass the labeller's own schema
    assert set(settings) == set(QuantumEspressoSettings.model_fields)
    assert QuantumEspressoSettings.model_validate(settings).pseudo_family == si_pseudo_family
    parameters = settings["parameters"]
    assert parameters["SYSTEM"]["ecutwfc"] == qe["ecutwfc"]
    assert parameters["SYSTEM"]["ecutrho"] == qe["ecutrho"]
    occupations = {"metal": "smearing", "insulator": "fixed"}[qe["electronic_type"]]
    assert parameters["SYSTEM"]["occupations"] == occupations
    assert parameters["ELECTRONS"]["conv_thr"] == qe["parameters"]["ELECTRONS"]["conv_thr"]
    assert parameters["CONTROL"]["tprnfor"] is True and parameters["CONTROL"]["tstress"] is True  # forces, stress
    assert settings["kpoints_distance"] == qe["kpoints_distance"]
    assert settings["kpoints_offset"] == (qe["kpoints_offset"] or [0.0, 0.0, 0.0])
    assert settings["bands_factor"] == qe["bands_factor"]
    assert not {"structure", "pseudos", "ATOMIC_SPECIES"} & set(settings)  # set per structure by the labeller
    assert builder.reference.code.uuid == pw_code.uuid
    assert builder.reference.max_concurrent.value == reference["max_concurrent"]

    assert builder.committee.committee_size.value == {"fast": 4, "balanced": 4, "stringent": 5}[name]
    assert builder.committee.config.get_dict() == expected["committee"]["config"]
    assert builder.committee.train.train.code.uuid == annpot_code.uuid
    assert builder.exploration.explore.explore.code.uuid == annpot_code.uuid
    assert builder.exploration.num_jobs.value == expected["exploration"]["num_jobs"]
    assert builder.exploration_config.get_dict() == expected["exploration"]["config"]
    assert builder.stage_schedule.get_list() == expected["exploration"]["stage_schedule"]
    wall = {
        "pw": builder.reference.options["max_wallclock_seconds"],
        "train": builder.committee.train.train.metadata.options.max_wallclock_seconds,
        "explore": builder.exploration.explore.explore.metadata.options.max_wallclock_seconds,
    }
    assert wall == {
        "pw": reference["max_wallclock_seconds"],
        "train": expected["committee"]["max_wallclock_seconds"],
        "explore": expected["exploration"]["max_wallclock_seconds"],
    }


def test_the_protocols_differ_where_they_should(builders):
    settings = {name: builders[name].reference.settings.get_dict() for name in PROTOCOLS}
    cutoffs = {name: settings[name]["parameters"]["SYSTEM"]["ecutwfc"] for name in PROTOCOLS}
    assert cutoffs == {"fast": 20.0, "balanced": 30.0, "stringent": 45.0}
    kpoints = {name: settings[name]["kpoints_distance"] for name in PROTOCOLS}
    assert kpoints == {"fast": 0.6, "balanced": 0.3, "stringent": 0.2}
    offsets = {name: settings[name]["kpoints_offset"] for name in PROTOCOLS}
    assert offsets == {"fast": [0.5, 0.5, 0.5], "balanced": [0.0, 0.0, 0.0], "stringent": [0.0, 0.0, 0.0]}
    bands = {name: settings[name]["bands_factor"] for name in PROTOCOLS}
    assert bands == {"fast": 1.5, "balanced": None, "stringent": None}


def test_options_reach_pw_and_annpot(pw_code, annpot_code, si_pseudo_family, si_cell):
    options = {
        "queue_name": "debug",
        "account": "proj42",
        "withmpi": True,
        "resources": {"num_machines": 1, "num_mpiprocs_per_machine": 2},
    }
    before = copy.deepcopy(options)
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, [si_cell()], si_pseudo_family, protocol="fast", options=options
    )
    assert options == before
    assert validation_error(ActiveLearningWorkChain, builder) is None
    pw = builder.reference.options.get_dict()
    train = builder.committee.train.train.metadata.options
    explore = builder.exploration.explore.explore.metadata.options
    for job in (pw, train, explore):
        assert job["queue_name"] == "debug" and job["account"] == "proj42"
    assert pw["withmpi"] is True and pw["resources"] == {"num_machines": 1, "num_mpiprocs_per_machine": 2}
    for job in (train, explore):  # annpot is serial: one process, no MPI, whatever the options say
        assert job["withmpi"] is False
        assert job["resources"] == {"num_machines": 1, "num_mpiprocs_per_machine": 1}


def test_default_options_are_serial(builders):
    pw = builders["fast"].reference.options.get_dict()
    train = builders["fast"].committee.train.train.metadata.options
    assert pw["withmpi"] is False and train["withmpi"] is False
    assert pw["resources"] == train["resources"] == {"num_machines": 1, "num_mpiprocs_per_machine": 1}


def test_structures_keep_their_keys_or_are_numbered(pw_code, annpot_code, si_pseudo_family, si_cell):
    cells = {"bulk": si_cell(), "strained": si_cell(scale=1.02)}
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, cells, si_pseudo_family, protocol="fast"
    )
    assert {key: node.uuid for key, node in builder.structures.items()} == {k: v.uuid for k, v in cells.items()}
    primitive = StructureData(ase=bulk("Si", "diamond", a=5.43))
    numbered = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, [si_cell(), primitive], si_pseudo_family, protocol="fast"
    )
    assert list(numbered.structures) == ["s00", "s01"] and numbered.structures["s01"].uuid == primitive.uuid
    assert validation_error(ActiveLearningWorkChain, numbered) is None


def test_overrides_reach_the_builder(pw_code, annpot_code, si_pseudo_family, si_cell):
    overrides = {
        "reference": {"quantumespresso": {"ecutwfc": 25.0, "parameters": {"SYSTEM": {"nosym": True}}}},
        "committee": {"committee_size": 3, "config": {"max_epochs": 7}},
        "max_iterations": 2,
    }
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, [si_cell()], si_pseudo_family, protocol="fast", overrides=overrides
    )
    assert validation_error(ActiveLearningWorkChain, builder) is None
    system = builder.reference.settings["parameters"]["SYSTEM"]
    assert system["ecutwfc"] == 25.0 and system["ecutrho"] == 80.0 and system["nosym"] is True
    assert builder.committee.committee_size.value == 3 and builder.committee.config["max_epochs"] == 7
    assert builder.max_iterations.value == 2
    with pytest.raises(ValueError, match=r"unknown override key\(s\): reference.ecut$"):
        ActiveLearningWorkChain.get_builder_from_protocol(
            pw_code, annpot_code, [si_cell()], si_pseudo_family, protocol="fast", overrides={"reference": {"ecut": 1.0}}
        )


# --- the labeller and its settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"ecutwfc": "high"}, ("reference.quantumespresso.ecutwfc", "Input should be a valid number", "(got 'high')")),
        ({"kpoints_offset": [0.5, 0.5]}, ("quantumespresso.kpoints_offset", "expected three shifts in [0, 1)")),
        ({"kpoints_offset": [1.0, 0.0, 0.0]}, ("quantumespresso.kpoints_offset", "got [1.0, 0.0, 0.0]")),
        ({"bands_factor": 0.5}, ("quantumespresso.bands_factor", "greater than or equal to 1")),
    ],
    ids=["ecutwfc-word", "offset-of-two", "offset-of-a-step", "bands-below-occupied"],
)
def test_a_wrong_labeller_setting_is_refused_naming_the_field(overrides, fragments):
    with pytest.raises(ValueError, match="invalid campaign settings") as info:
        ActiveLearningWorkChain.get_protocol_inputs("fast", {"reference": {"quantumespresso": overrides}})
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_an_unknown_labeller_is_refused_naming_the_installed_ones(pw_code, annpot_code, si_pseudo_family, si_cell):
    assert "quantumespresso" in labeller_names()
    message = re.escape(f"labeller: unknown labeller 'vasp'; installed: {', '.join(labeller_names())}")
    with pytest.raises(ValueError, match=message):
        ActiveLearningWorkChain.get_protocol_inputs("fast", {"reference": {"labeller": "vasp"}})
    with pytest.raises(ValueError, match=message):
        ActiveLearningWorkChain.get_builder_from_protocol(
            pw_code, annpot_code, [si_cell()], si_pseudo_family, protocol="fast", labeller="vasp"
        )
    named = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, [si_cell()], si_pseudo_family, protocol="fast", labeller="quantumespresso"
    )
    assert named.reference.labeller.value == "quantumespresso"


def test_the_pseudo_family_comes_from_the_argument_or_the_overrides(pw_code, annpot_code, si_pseudo_family, si_cell):
    overrides = {"reference": {"quantumespresso": {"pseudo_family": si_pseudo_family}}}
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, [si_cell()], protocol="fast", overrides=overrides
    )
    assert builder.reference.settings["pseudo_family"] == si_pseudo_family
    assert validation_error(ActiveLearningWorkChain, builder) is None
    with pytest.raises(ValueError, match="pseudo_family: none given"):
        ActiveLearningWorkChain.get_builder_from_protocol(pw_code, annpot_code, [si_cell()], protocol="fast")
    with pytest.raises(ValueError, match="pseudo_family: pseudo family 'NoSuchFamily' does not exist"):
        ActiveLearningWorkChain.get_builder_from_protocol(
            pw_code, annpot_code, [si_cell()], "NoSuchFamily", protocol="fast"
        )
