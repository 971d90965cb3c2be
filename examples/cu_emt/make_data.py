"""Write a small EMT-labelled fcc Cu training set and start structures for the engine demo.

ASE's EMT stands in for DFT so the demo runs in a minute on a laptop; the AiiDA campaign uses Quantum ESPRESSO.
"""

import ase.io
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

rng = np.random.default_rng(0)
frames = []
for index in range(80):
    atoms = bulk("Cu", "fcc", a=3.61 * rng.uniform(0.97, 1.03), cubic=True).repeat((2, 2, 2))
    if index % 4 == 0:
        del atoms[int(rng.integers(len(atoms)))]
    atoms.rattle(rng.uniform(0.02, 0.15), seed=index)
    atoms.calc = EMT()
    labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}
    atoms.calc = SinglePointCalculator(atoms, **labels)
    frames.append(atoms)
ase.io.write("train.extxyz", frames)
ase.io.write("start.extxyz", [bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))])
print(f"wrote train.extxyz ({len(frames)} frames) and start.extxyz")
