"""How ExplorationWorkChain spreads start structures over jobs; the campaign relies on the same rule to find the
start structure (and so the k-point mesh) of every selected frame."""

from __future__ import annotations

from aiida_annpot.workflows.exploration import deal_start_structures


def test_sorted_keys_are_dealt_round_robin():
    assert deal_start_structures(["c", "a", "e", "b", "d"], 2) == [["a", "c", "e"], ["b", "d"]]


def test_never_more_jobs_than_structures_and_every_key_once():
    dealt = deal_start_structures(["s1", "s0"], 5)
    assert dealt == [["s0"], ["s1"]]
    assert deal_start_structures(["x"], 1) == [["x"]]
