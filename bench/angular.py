"""Cost of the Chebyshev angular term: moment expansion (what the descriptor uses) vs explicit triplets.

The triplet form Σ_{j<k} T_a(cos θ_jk) f_c(r_j) f_c(r_k) enumerates every pair of neighbours, so its cost grows with
neighbours² per atom; the moment form Σ_m μ_m S_m² (see ``descriptors/chebyshev.py``) is linear in pairs. Both give
the same angular features (checked here). Times for features alone and with the Jacobian (analytic for moments,
autograd through the triplet sum for triplets), fcc Cu, float32, 2 threads.

Run: ``python bench/angular.py``
"""

from __future__ import annotations

import time

import torch
from ase.build import bulk

from aiida_annpot.common.config import ChebyshevConfig
from aiida_annpot.core.descriptors.base import Descriptor, cosine_cutoff
from aiida_annpot.core.descriptors.behler_parrinello import triplet_indices
from aiida_annpot.core.descriptors.chebyshev import ChebyshevDescriptor, chebyshev_series
from aiida_annpot.core.geometry import NeighborSearch


class TripletAngular(Descriptor):
    """The angular block by explicit triplets (reference implementation for this benchmark only)."""

    def __init__(self, config: ChebyshevConfig):
        super().__init__(["Cu"])
        self.config = config

    @property
    def n_features(self) -> int:
        return self.config.angular_order + 1

    def forward(self, species, pairs):
        p, q = triplet_indices(pairs.first, pairs.n_atoms)  # ordered (p, q), p ≠ q
        r = pairs.distances
        u = pairs.vectors / r[:, None]
        fc, _ = cosine_cutoff(r, self.config.angular_cutoff)
        cos = (u[p] * u[q]).sum(1)
        terms, _ = chebyshev_series(cos, self.config.angular_order)  # (T, A+1)
        weighted = 0.5 * terms * (fc[p] * fc[q])[:, None]  # ordered pairs count each j<k twice
        return r.new_zeros((pairs.n_atoms, self.n_features)).index_add(0, pairs.first[p], weighted)


def timed(function, repeats: int = 5) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats * 1000.0


def main() -> None:
    torch.set_num_threads(2)
    print("times in ms; G = features only, G+J = features and Jacobian")
    print(
        f"{'atoms':>5} {'Rc_ang':>6} {'pairs/atom':>10} {'triplets':>9} {'moments G':>9} {'triplets G':>10} "
        f"{'moments G+J':>11} {'triplets G+J':>12} {'ratio G+J':>9} {'max |diff|':>10}"
    )
    for repeat in (4, 8):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((repeat,) * 3)
        atoms.rattle(0.05, seed=1)
        for cutoff in (4.0, 5.5):
            config = ChebyshevConfig(radial_order=0, radial_cutoff=cutoff, angular_order=4, angular_cutoff=cutoff)
            moments, triplets = ChebyshevDescriptor(["Cu"], config), TripletAngular(config)
            pairs = NeighborSearch(cutoff)(atoms.positions, atoms.cell.array, atoms.pbc, dtype=torch.float32)
            species = torch.zeros(len(atoms), dtype=torch.long)
            fast_g = timed(lambda: moments.features_and_jacobian(species, pairs, jacobian=False))  # noqa: B023
            slow_g = timed(lambda: triplets(species, pairs), repeats=2)  # noqa: B023
            fast = timed(lambda: moments.features_and_jacobian(species, pairs))  # noqa: B023
            slow = timed(lambda: triplets.features_and_jacobian(species, pairs), repeats=1)  # noqa: B023
            reference = triplets(species, pairs)
            difference = (moments(species, pairs)[:, 1:] - reference).abs().max().item()
            n_pairs = pairs.first.shape[0]
            n_triplets = int(torch.bincount(pairs.first).pow(2).sum()) - n_pairs
            print(
                f"{len(atoms):5d} {cutoff:6.1f} {n_pairs / len(atoms):10.0f} {n_triplets:9d} {fast_g:9.2f} "
                f"{slow_g:10.1f} {fast:11.2f} {slow:12.1f} {slow / fast:9.0f} {difference:10.2e}"
            )


if __name__ == "__main__":
    main()
