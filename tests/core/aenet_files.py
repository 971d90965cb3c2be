"""aenet input files for the tests, written to aenet's documented formats (http://ann.atomistic.net/documentation/):
a two-element, non-periodic set of water-like clusters labelled by ASE's EMT, its fingerprint setups (Behler2011
G2/G4 functions with type2/type3 per function), generate.in and train.in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.emt import EMT
from scipy.spatial.transform import Rotation

#: Isolated-atom energies of the TYPES section (eV); any values do, annpot only reports them.
ATOMIC_ENERGIES = {"O": -432.503149303, "H": -13.605693123}

#: O.fingerprint.stp: 5 G2 and 4 G4 functions, one of them with a shorter cut-off (4.5 Å).
O_SETUP = """\
DESCR
  Structural fingerprint setup for O in water-like clusters (test set).
  ! a DESCR line may look like a comment or a keyword: ATOM H
END DESCR

ATOM O

ENV  2
O
H

RMIN 0.75d0

SYMMFUNC type=Behler2011
9
G=2 type2=O   eta=0.003214  Rs=0.0000  Rc=6.0000
G=2 type2=H   eta=0.003214  Rs=0.0000  Rc=6.0000
G=2 type2=H   eta=0.5       Rs=0.9600  Rc=6.0000
G=2 type2=O   eta=0.2       Rs=2.8000  Rc=6.0000
G=2 type2=H   eta=0.071421  Rs=0.0000  Rc=4.5000
G=4 type2=H  type3=H    eta=0.000357 lambda= -1.0  zeta= 1.0  Rc=6.0000
G=4 type2=H  type3=H    eta=0.028569 lambda=  1.0  zeta= 2.0  Rc=6.0000
G=4 type2=O  type3=H    eta=0.000357 lambda= -1.0  zeta= 1.0  Rc=6.0000
G=4 type2=O  type3=O    eta=0.000357 lambda=  1.0  zeta= 4.0  Rc=6.0000
"""

#: H.fingerprint.stp: 3 G2 and 2 G4 functions (fewer than O: the features of H are padded).
H_SETUP = """\
DESCR
  Structural fingerprint setup for H in water-like clusters (test set).
END DESCR

ATOM H

ENV  2
O
H

RMIN 0.75d0

FUNCTIONS type=Behler2011
5
G=2 type2=O   eta=0.5       Rs=0.9600  Rc=6.0000
G=2 type2=O   eta=0.003214  Rs=0.0000  Rc=6.0000
G=2 type2=H   eta=0.003214  Rs=0.0000  Rc=6.0000
G=4 type2=O  type3=H    eta=0.000357 lambda= -1.0  zeta= 1.0  Rc=6.0000
G=4 type2=H  type3=O    eta=0.028569 lambda=  1.0  zeta= 2.0  Rc=6.0000
"""

#: Functions per element of the setups above.
N_FUNCTIONS = {"O": 9, "H": 5}

GENERATE_IN = """\
OUTPUT  water.train

TYPES
2
O   {O!r}  ! eV
H   {H!r}  | eV

SETUPS
O   setups/O.fingerprint.stp
H   setups/H.fingerprint.stp

TIMING

FILES
{count}
{files}
"""

TRAIN_IN = """\
TRAININGSET water.train
TESTPERCENT 25
ITERATIONS  {iterations}
{maxenergy}
METHOD
adam  mu=0.005  batchsize=4

NETWORKS
! atom   network         hidden
! types  file-name       layers  nodes:activation
  O      O.4t-4t.nn      2       4:tanh  4:tanh
  H      H.4t-4t.nn      2       4:tanh  4:tanh
"""


def water_cluster(seed: int, molecules: int = 2) -> Atoms:
    """``molecules`` rigid-ish water molecules (O–H 0.96 Å, 104.5°), randomly rotated, about 2.9 Å apart, with
    small random distortions: 3 × ``molecules`` atoms, not periodic."""
    rng = np.random.default_rng(seed)
    angle = np.radians(104.5)
    molecule = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [0.96 * np.cos(angle), 0.96 * np.sin(angle), 0.0]])
    positions, symbols = [], []
    for k in range(molecules):
        rotated = molecule @ Rotation.random(random_state=rng.integers(1 << 30)).as_matrix().T
        positions.append(rotated + np.array([2.9 * k, 0.3 * rng.normal(), 0.3 * rng.normal()]))
        symbols += ["O", "H", "H"]
    positions = np.concatenate(positions) + rng.normal(scale=0.04, size=(3 * molecules, 3))
    return Atoms(symbols, positions=positions, pbc=False)


def labelled(atoms: Atoms) -> tuple[float, np.ndarray]:
    """EMT energy (eV) and forces (eV/Å)."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    return float(atoms.get_potential_energy()), atoms.get_forces()


def xsf_text(atoms: Atoms, energy: float, forces: np.ndarray | None) -> str:
    """aenet's XSF: the total energy comment, then ATOMS (isolated) or CRYSTAL/PRIMVEC/PRIMCOORD (periodic)."""
    lines = [f"# total energy = {energy:.10f} eV", ""]
    if atoms.pbc.all():
        lines += ["CRYSTAL", "PRIMVEC", *(" ".join(f"{x:15.10f}" for x in row) for row in atoms.cell.array)]
        lines += ["PRIMCOORD", f"{len(atoms)} 1"]
    else:
        lines.append("ATOMS")
    for index, (symbol, position) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)):
        values = [*position, *(forces[index] if forces is not None else ())]
        lines.append(f"{symbol:<2s} " + " ".join(f"{x:15.10f}" for x in values))
    return "\n".join(lines) + "\n"


def write_water_set(
    folder: Path, n: int = 10, iterations: int = 3, maxenergy: float | None = None, forces: bool = True
) -> tuple[Path, Path, list[Atoms]]:
    """XSF files, setups, generate.in and train.in of ``n`` two-molecule clusters in ``folder``: (generate.in,
    train.in, the labelled clusters in FILES order, with ``info['energy']`` and ``arrays['forces']``)."""
    (folder / "xsf").mkdir(parents=True, exist_ok=True)
    (folder / "setups").mkdir(exist_ok=True)
    (folder / "setups" / "O.fingerprint.stp").write_text(O_SETUP)
    (folder / "setups" / "H.fingerprint.stp").write_text(H_SETUP)
    clusters, files = [], []
    for k in range(n):
        atoms = water_cluster(seed=k)
        energy, atom_forces = labelled(atoms)
        atoms.info["energy"] = energy
        atoms.arrays["forces"] = atom_forces
        name = f"xsf/water-{k:03d}.xsf"
        (folder / name).write_text(xsf_text(atoms, energy, atom_forces if forces else None))
        clusters.append(atoms)
        files.append(f"./{name}")
    generate = folder / "generate.in"
    generate.write_text(GENERATE_IN.format(count=n, files="\n".join(files), **ATOMIC_ENERGIES))
    train = folder / "train.in"
    limit = "" if maxenergy is None else f"MAXENERGY {float(maxenergy)!r}"
    train.write_text(TRAIN_IN.format(iterations=iterations, maxenergy=limit))
    return generate, train, clusters
