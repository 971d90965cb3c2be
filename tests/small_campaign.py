"""Protocol overrides that make the fast protocol small enough for the test suite (the full quick start runs in
tests/test_quick_start.py). Plain data, imported by the session fixture and by the integration driver, which runs
in its own process."""

from __future__ import annotations

#: The fast protocol made small: fewer generated structures, a test set of eight 8-atom cells, a committee of 2,
#: two iterations. It keeps every kind of step: an energy-volume series, strains, rattles, a vacancy in a 16-atom
#: cell, a test set whose volumes fall between the training ones.
SMALL_CAMPAIGN = {
    "max_iterations": 2,
    "generation": {
        "volumes": 5,
        "max_volume_strain": 0.06,
        "anisotropic_strains": 2,
        "rattles": 1,
        "rattle_amplitudes": [0.05, 0.1],
        "vacancies": 1,
        "vacancy_supercell": [2, 1, 1],
        "vacancy_rattles": [],
    },
    "test_set": {
        "generation": {
            "volumes": 6,
            "max_volume_strain": 0.09,
            "anisotropic_strains": 1,
            "rattles": 1,
            "rattle_amplitudes": [0.08],
            "vacancies": 0,
        },
        "md_frames": 0,
    },
    "test_targets": {"vacancy_error": None},  # the small test set has no vacancy
    "committee": {"committee_size": 2, "config": {"max_epochs": 300}},
    "exploration": {
        "start_supercells": [[1, 1, 1]],
        "config": {
            "selection": {
                "trust_lo": 0.1,
                "trust_hi": 0.6,
                "min_distance": 1.9,
                "candidate_fraction": 0.25,
                "min_candidates": 2,
                "max_candidates": 4,
            }
        },
    },
}

#: Overrides that switch the generated test set off (campaigns that test something else).
NO_TEST_SET = {
    "test_set": {"generation": None, "md_frames": 0},
    "test_targets": dict.fromkeys(("energy_rmse", "force_rmse", "volume_error", "bulk_modulus_error", "vacancy_error")),
}
