"""``aiida-annpot launch``: every bad campaign file is refused, naming the field, before any process exists."""

from __future__ import annotations

import pytest

from aiida_annpot.cli.campaign_file import CampaignFileError, build_from_file
from aiida_annpot.workflows.labelling import labeller_names

#: The refusal of a labeller that is not installed: it names every installed one.
UNKNOWN_LABELLER = f"labeller: unknown labeller 'vasp'; installed: {', '.join(labeller_names())}"


# Port tests run no DFT: a fixture code and a generated pseudopotential family stand in for pw.x and Debian's UPF.
@pytest.fixture(scope="session")
def pw_code(fixture_pw_code):
    return fixture_pw_code


@pytest.fixture(scope="session")
def si_pseudo_family(generated_si_family):
    return generated_si_family


def _refused(run_cli, count_processes, path, *fields, daemon=False):
    before = count_processes()
    result = run_cli("launch", path, *(["--daemon"] if daemon else []))
    assert result.exit_code != 0, result.output
    for field in fields:
        assert field in result.output, result.output
    assert "Traceback" not in result.output
    assert count_processes() == before, "nothing was run or submitted"
    return result.output


def test_valid_file_gives_a_validated_builder(write_campaign, count_processes):
    before = count_processes()
    builder = build_from_file(write_campaign(options={"max_wallclock_seconds": 900}))
    assert builder.metadata.label == "cli-test"
    assert sorted(builder.structures) == ["cell"]
    assert builder.committee.committee_size.value == 4, "the fast protocol"
    assert builder.committee.train.train.metadata.options.max_wallclock_seconds == 900
    assert count_processes() == before


def test_structure_list_gets_numbered_keys(write_campaign):
    builder = build_from_file(write_campaign(structures=["cell.cif", "cell.cif"]))
    assert sorted(builder.structures) == ["s00", "s01"]


def test_typo_key_is_named(run_cli, write_campaign, count_processes):
    output = _refused(run_cli, count_processes, write_campaign(protocl="fast"), "protocl", "unknown key")
    assert "invalid campaign file" in output


def test_typo_inside_codes_is_named(run_cli, write_campaign, count_processes, pw_code):
    codes = {"reference": pw_code.full_label, "anpot": "annpot@localhost"}
    _refused(run_cli, count_processes, write_campaign(codes=codes), "codes.anpot: unknown key", "codes.annpot")


def test_missing_code_is_named(run_cli, write_campaign, count_processes, annpot_code, local_computer):
    label = f"nocode@{local_computer.label}"
    _refused(
        run_cli,
        count_processes,
        write_campaign(codes={"reference": label, "annpot": annpot_code.full_label}),
        f"codes.reference: no code {label!r}",
    )
    # under the Quantum ESPRESSO alias the message names the key the file uses
    _refused(
        run_cli,
        count_processes,
        write_campaign(codes={"pw": label, "annpot": annpot_code.full_label}),
        f"codes.pw: no code {label!r}",
    )


def test_unknown_computer_is_named(run_cli, write_campaign, count_processes, annpot_code):
    codes = {"reference": "pw@nowhere", "annpot": annpot_code.full_label}
    _refused(run_cli, count_processes, write_campaign(codes=codes), "codes.reference: no computer 'nowhere'")


def test_code_of_the_wrong_plugin_is_named(run_cli, write_campaign, count_processes, annpot_code):
    codes = {"reference": annpot_code.full_label, "annpot": annpot_code.full_label}
    _refused(run_cli, count_processes, write_campaign(codes=codes), "codes.reference:", "quantumespresso.pw")


def test_the_pw_code_of_a_quantum_espresso_campaign_may_be_given_as_codes_pw(write_campaign, pw_code, annpot_code):
    """``codes.pw`` is the key of campaign files written before the labeller seam, and reads as codes.reference."""
    builder = build_from_file(write_campaign(codes={"pw": pw_code.full_label, "annpot": annpot_code.full_label}))
    assert builder.reference.code.uuid == pw_code.uuid and builder.reference.labeller.value == "quantumespresso"
    assert builder.committee.train.train.code.uuid == annpot_code.uuid


@pytest.mark.parametrize("codes", [{"reference": "pw@a", "pw": "pw@b"}, {}], ids=["both", "neither"])
def test_the_reference_code_must_be_given_once(run_cli, write_campaign, count_processes, annpot_code, codes):
    _refused(
        run_cli,
        count_processes,
        write_campaign(codes={**codes, "annpot": annpot_code.full_label}),
        "codes:",
        "give the reference code once, as codes.reference (codes.pw is the same key)",
    )


def test_the_labeller_key_names_the_reference_code(write_campaign, pw_code):
    builder = build_from_file(write_campaign(labeller="quantumespresso"))
    assert builder.reference.labeller.value == "quantumespresso" and builder.reference.code.uuid == pw_code.uuid
    default = build_from_file(write_campaign())  # without the key: the protocol's labeller
    assert default.reference.labeller.value == "quantumespresso"
    assert default.reference.settings.get_dict() == builder.reference.settings.get_dict()


def test_an_unknown_labeller_is_named_with_the_installed_ones(run_cli, write_campaign, count_processes):
    _refused(run_cli, count_processes, write_campaign(labeller="vasp"), UNKNOWN_LABELLER)


def test_unreadable_structure_file_is_named(run_cli, write_campaign, count_processes, tmp_path):
    (tmp_path / "garbage.cif").write_text("this is not a crystal\n")
    _refused(run_cli, count_processes, write_campaign(structures={"si": "garbage.cif"}), "structures.si:")


def test_missing_structure_file_is_named(run_cli, write_campaign, count_processes):
    _refused(run_cli, count_processes, write_campaign(structures={"si": "nowhere.cif"}), "structures.si: no file")


def test_pseudo_family_without_the_element_is_named(run_cli, write_campaign, count_processes):
    _refused(run_cli, count_processes, write_campaign(element="Cu"), "pseudo_family:", "Cu")


def test_missing_pseudo_family_is_named(run_cli, write_campaign, count_processes):
    _refused(run_cli, count_processes, write_campaign(pseudo_family="NoSuchFamily"), "pseudo_family:", "NoSuchFamily")


def test_a_quantum_espresso_campaign_without_a_pseudo_family_is_named(run_cli, write_campaign, count_processes):
    _refused(run_cli, count_processes, write_campaign(pseudo_family=None), "pseudo_family: none given")


def test_unknown_protocol_is_named(run_cli, write_campaign, count_processes):
    _refused(run_cli, count_processes, write_campaign(protocol="turbo"), "protocol: unknown protocol 'turbo'")


def test_unknown_override_key_is_named(run_cli, write_campaign, count_processes):
    overrides = {"committee": {"committee_sizee": 3}}
    _refused(run_cli, count_processes, write_campaign(overrides=overrides), "overrides:", "committee.committee_sizee")


def test_unknown_scheduler_option_is_named(run_cli, write_campaign, count_processes):
    _refused(run_cli, count_processes, write_campaign(options={"queue_nam": "debug"}), "options.queue_nam")


def test_gpus_go_to_the_annpot_jobs_only(write_campaign, run_cli, count_processes):
    builder = build_from_file(write_campaign(gpus=1, options={"max_wallclock_seconds": 900}))
    assert builder.committee.train.train.metadata.options.gpus == 1
    assert builder.exploration.explore.explore.metadata.options.gpus == 1
    assert "gpus" not in builder.reference.options.get_dict()
    assert "gpus" not in build_from_file(write_campaign()).committee.train.train.metadata.options
    hint = "options.gpus: give GPUs as the top-level gpus: key"
    _refused(run_cli, count_processes, write_campaign(options={"gpus": 1}), hint)
    _refused(run_cli, count_processes, write_campaign(gpus=-1), "gpus: Input should be greater than or equal to 0")


def test_port_validation_runs_before_submission(run_cli, write_campaign, count_processes):
    """A known key with an invalid value is caught by the work chain's own port validators."""
    overrides = {"exploration": {"config": {"selection": {"trust_lo": 0.5, "trust_hi": 0.1}}}}
    _refused(run_cli, count_processes, write_campaign(overrides=overrides), "invalid campaign inputs", "trust")


def test_several_problems_are_reported_together(write_campaign, annpot_code):
    codes = {"reference": "pw@nowhere", "annpot": annpot_code.full_label}
    with pytest.raises(CampaignFileError) as info:
        build_from_file(write_campaign(codes=codes, structures={"si": "nowhere.cif"}, protocol="turbo"))
    message = str(info.value)
    assert "codes.reference" in message and "structures.si" in message and "protocol" in message


def test_file_that_is_not_a_mapping_is_refused(run_cli, tmp_path, count_processes):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    _refused(run_cli, count_processes, path, "YAML mapping")


def test_structures_of_the_wrong_type_are_named(run_cli, write_campaign, count_processes):
    output = _refused(run_cli, count_processes, write_campaign(structures=3), "structures: expected a mapping")
    assert output.count("structures:") == 1, "one message, not one per member of the union"


def test_daemon_submission_without_a_broker_is_a_clear_error(run_cli, write_campaign, count_processes):
    """The test profile has no broker: submission fails with the engine's explanation, and no node is left."""
    _refused(run_cli, count_processes, write_campaign(), "could not submit to the daemon", "broker", daemon=True)


def test_daemon_submission_prints_how_to_follow(run_cli, write_campaign, fake_campaign, monkeypatch):
    import aiida.engine

    node = fake_campaign()
    monkeypatch.setattr(aiida.engine, "submit", lambda builder: node)
    result = run_cli("launch", write_campaign(), "--daemon")
    assert result.exit_code == 0, result.output
    assert f"aiida-annpot status {node.pk}" in result.output and f"verdi process report {node.pk}" in result.output


def test_foreground_run_ends_with_the_status_table(run_cli, write_campaign, fake_campaign, monkeypatch):
    """``run_get_node`` is replaced (a real campaign is tests/cli/test_campaign_commands.py's fixture)."""
    import aiida.engine

    node = fake_campaign()
    monkeypatch.setattr(aiida.engine, "run_get_node", lambda builder: ({}, node))
    result = run_cli("launch", write_campaign())
    assert result.exit_code == 0, result.output
    assert f"ActiveLearningWorkChain<{node.pk}>" in result.output and "not converged" in result.output


# --- input that would waste DFT before failing: refused at launch, naming the field ----------------------------------


def test_overlapping_atoms_are_refused_before_any_dft(run_cli, write_campaign, count_processes, tmp_path):
    import ase.io
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    ase.io.write(tmp_path / "overlap.cif", atoms)
    _refused(
        run_cli,
        count_processes,
        write_campaign(structures={"si": "overlap.cif"}),
        "structure structures.si: atoms 0 (Si) and 1 (Si) are 0.300 Å apart",
        "covalent radii",
    )


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (
            {"reference": {"quantumespresso": {"parameters": {"ELECTRONS": {"conv_thrr": 1e-8}}}}},
            ("parameters.ELECTRONS.conv_thrr: not a pw.x variable of &ELECTRONS", "did you mean 'conv_thr'"),
        ),
        (
            {"reference": {"quantumespresso": {"parameters": {"ELECTRON": {"conv_thr": 1e-8}}}}},
            ("'ELECTRON' is not a pw.x namelist",),
        ),
        (
            {"reference": {"quantumespresso": {"parameters": {"SYSTEM": {"degauss": "small"}}}}},
            ("parameters.SYSTEM.degauss: must be a number, got 'small'",),
        ),
        (
            {"reference": {"quantumespresso": {"ecutwfc": "high"}}},
            ("reference.quantumespresso.ecutwfc: Input should be a valid number", "(got 'high')"),
        ),
        ({"reference": {"ecutwfc": 30.0}}, ("overrides:", "unknown override key(s): reference.ecutwfc")),
        ({"reference": {"labeller": "vasp"}}, (UNKNOWN_LABELLER,)),
        ({"max_iterations": "two"}, ("max_iterations: Input should be a valid integer", "(got 'two')")),
        ({"exploration": {"start_vacancies": "sometimes"}}, ("exploration.start_vacancies",)),
        (
            {
                "committee": {
                    "config": {
                        "baseline": {"name": "ase.calculators.gulp.GULP", "parameters": {"command": "touch marker"}}
                    }
                }
            },
            ("baseline.name 'ase.calculators.gulp.GULP' is an import path", "registered baselines only"),
        ),
    ],
    ids=[
        "pw-key-typo",
        "pw-namelist-typo",
        "pw-value-type",
        "ecutwfc-word",
        "old-reference-key",
        "labeller-override",
        "max-iterations-word",
        "flag-word",
        "import-path-baseline",
    ],
)
def test_bad_settings_are_refused_naming_the_field(run_cli, write_campaign, count_processes, overrides, fragments):
    _refused(run_cli, count_processes, write_campaign(overrides=overrides), *fragments)


def test_an_unreadable_cif_says_why(run_cli, write_campaign, count_processes, tmp_path):
    """ASE fails on this CIF with an empty StopIteration after warning about the row; the message carries both."""
    (tmp_path / "ragged.cif").write_text(
        "data_x\n_cell_length_a 5.43\n_cell_length_b 5.43\nloop_\n_atom_site_label\n_atom_site_fract_x\nSi1 0.0 0.5\n"
    )
    output = _refused(run_cli, count_processes, write_campaign(structures={"si": "ragged.cif"}), "structures.si:")
    assert "no structure found in the file" in output and "Wrong number 3 of tokens, expected 2" in output, output
