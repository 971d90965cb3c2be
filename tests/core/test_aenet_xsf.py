"""aenet XSF training files: values read exactly (energy comment, eV/Å forces), round trips, datasets of files,
folders and lists, and malformed files refused naming the file and the line."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Hartree

from aiida_annpot.core.aenet import read_xsf, read_xsf_folder, write_xsf
from aiida_annpot.core.dataset import read_frames
from aiida_annpot.core.errors import AenetFormatError, InputDataError

from .aenet_files import labelled, water_cluster, xsf_text

CRYSTAL = """\
# total energy = -158.47 eV

CRYSTAL
PRIMVEC
   5.43000000   0.00000000   0.00000000
   0.00000000   5.43000000   0.00000000
   0.10000000   0.00000000   5.43000000
PRIMCOORD
2 1
Si   0.00000000   0.00000000   0.00000000   0.01000000  -0.02000000   0.03000000
Si   1.35750000   1.35750000   1.35750000  -0.01000000   0.02000000  -0.03000000
"""

CLUSTER = """\
# total energy = -14.2d0 eV
ATOMS
O   0.000  0.000  0.118   0.0  0.0  -1.5d-1
H   0.000  0.757 -0.471   0.0  0.1   0.075
H   0.000 -0.757 -0.471   0.0 -0.1   0.075
"""


def write(tmp_path, text: str, name: str = "structure.xsf"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_crystal_values(tmp_path):
    atoms = read_xsf(write(tmp_path, CRYSTAL))
    assert atoms.get_chemical_symbols() == ["Si", "Si"] and atoms.pbc.all()
    np.testing.assert_array_equal(atoms.cell.array, [[5.43, 0, 0], [0, 5.43, 0], [0.1, 0, 5.43]])
    np.testing.assert_array_equal(atoms.positions, [[0, 0, 0], [1.3575, 1.3575, 1.3575]])
    assert atoms.get_potential_energy() == -158.47
    np.testing.assert_array_equal(atoms.get_forces(), [[0.01, -0.02, 0.03], [-0.01, 0.02, -0.03]])  # eV/Å as written


def test_cluster_values_with_fortran_exponents(tmp_path):
    atoms = read_xsf(write(tmp_path, CLUSTER))
    assert atoms.get_chemical_symbols() == ["O", "H", "H"] and not atoms.pbc.any()
    assert atoms.get_potential_energy() == -14.2
    np.testing.assert_array_equal(atoms.positions[1], [0.0, 0.757, -0.471])
    np.testing.assert_array_equal(atoms.get_forces()[:, 2], [-0.15, 0.075, 0.075])


def test_ase_reads_forces_in_hartree_units_and_no_energy(tmp_path):
    """Why annpot has its own reader: ASE takes XCrysDen's Hartree/Å for the force columns and skips the comment."""
    path = write(tmp_path, CRYSTAL)
    theirs, ours = ase.io.read(path, format="xsf"), read_xsf(path)
    np.testing.assert_allclose(theirs.get_forces(), Hartree * ours.get_forces())
    assert "energy" not in theirs.calc.results


def test_energy_only_file(tmp_path):
    atoms = read_xsf(write(tmp_path, "# total energy = 1.5 eV\nATOMS\nO 0 0 0\nH 0.96 0 0\n"))
    assert atoms.get_potential_energy() == 1.5 and "forces" not in atoms.calc.results


def test_comments_and_conventional_cell_are_skipped(tmp_path):
    text = CRYSTAL.replace("PRIMCOORD", "CONVVEC\n 1 0 0\n 0 1 0\n 0 0 1\n# a comment\nPRIMCOORD")
    atoms = read_xsf(write(tmp_path, "# written by a DFT code\n" + text + "\n# the end\n"))
    assert len(atoms) == 2 and atoms.cell.array[2, 0] == 0.1


def periodic_frame() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(stdev=0.05, seed=1)
    rng = np.random.default_rng(0)
    atoms.calc = SinglePointCalculator(atoms, energy=-14.123456789012345, forces=rng.normal(size=(4, 3)))
    return atoms


@pytest.mark.parametrize("kind", ["crystal", "cluster"])
def test_write_read_round_trip_is_exact(tmp_path, kind):
    if kind == "crystal":
        atoms = periodic_frame()
    else:
        atoms = water_cluster(seed=3)
        energy, forces = labelled(atoms)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    back = read_xsf(write_xsf(tmp_path / "frame.xsf", atoms))
    assert back.get_chemical_symbols() == atoms.get_chemical_symbols()
    assert (back.pbc == atoms.pbc).all()
    for got, expected in (
        (back.positions, atoms.positions),
        (back.cell.array, atoms.cell.array),
        (back.get_forces(), atoms.get_forces()),
    ):
        np.testing.assert_array_equal(got, expected)
    assert back.get_potential_energy() == atoms.get_potential_energy()


def test_values_written_by_hand_round_trip(tmp_path):
    """The tests' own writer (aenet's documented layout, 10 decimals) and the reader agree to the decimals."""
    atoms = water_cluster(seed=5)
    energy, forces = labelled(atoms)
    back = read_xsf(write(tmp_path, xsf_text(atoms, energy, forces)))
    np.testing.assert_allclose(back.positions, atoms.positions, rtol=0, atol=5e-11)
    np.testing.assert_allclose(back.get_forces(), forces, rtol=0, atol=5e-11)
    assert abs(back.get_potential_energy() - energy) < 5e-11


def test_write_refuses_what_aenet_cannot_read(tmp_path):
    with pytest.raises(ValueError, match="total energy"):
        write_xsf(tmp_path / "a.xsf", Atoms("H2", positions=[(0, 0, 0), (0.7, 0, 0)]))
    slab = periodic_frame()
    slab.pbc = (True, True, False)
    with pytest.raises(ValueError, match="periodic in 3D"):
        write_xsf(tmp_path / "b.xsf", slab)


def test_datasets_of_files_folders_and_lists(tmp_path):
    folder = tmp_path / "xsf"
    folder.mkdir()
    frames = []
    for k in (2, 0, 1):
        atoms = water_cluster(seed=k)
        energy, forces = labelled(atoms)
        frames.append(energy)
        (folder / f"w{k}.xsf").write_text(xsf_text(atoms, energy, forces))
    (folder / "notes.txt").write_text("not a structure")
    by_name = [frames[1], frames[2], frames[0]]  # w0, w1, w2
    assert [f.get_potential_energy() for f in read_frames(folder)] == pytest.approx(by_name, abs=1e-9)
    assert [f.get_potential_energy() for f in read_xsf_folder(folder)] == pytest.approx(by_name, abs=1e-9)
    listed = read_frames([str(folder / "w2.xsf"), folder / "w0.xsf"])
    assert [f.get_potential_energy() for f in listed] == pytest.approx([frames[0], frames[1]], abs=1e-9)
    assert len(read_frames(folder / "w1.xsf")) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputDataError, match=r"holds no \.xsf files"):
        read_frames(empty)
    with pytest.raises(InputDataError, match="does not exist"):
        read_frames(tmp_path / "missing.xsf")
    with pytest.raises(InputDataError, match="empty list"):
        read_frames([])


BAD = {
    "no energy": ("ATOMS\nO 0 0 0\n", None, "no '# total energy"),
    "energy in Ry": ("# total energy = -1.0 Ry\nATOMS\nO 0 0 0\n", 1, "in 'Ry'"),
    "malformed energy": ("# total energy: -1.0 eV\nATOMS\nO 0 0 0\n", 1, "malformed total energy comment"),
    "energy not a number": ("# total energy = lots eV\nATOMS\nO 0 0 0\n", 1, "expected a number, got 'lots'"),
    "nan energy": ("# total energy = nan eV\nATOMS\nO 0 0 0\n", 1, "expected a number"),
    "two energies": ("# total energy = 1 eV\n# total energy = 2 eV\nATOMS\nO 0 0 0\n", 2, "second total energy"),
    "unknown symbol": ("# total energy = 1 eV\nATOMS\nO 0 0 0\nXx 1 0 0\n", 4, "'Xx' is not a chemical element"),
    "five columns": ("# total energy = 1 eV\nATOMS\nO 0 0 0 1\n", 3, "expected 'symbol x y z'"),
    "mixed forces": ("# total energy = 1 eV\nATOMS\nO 0 0 0 1 2 3\nH 1 0 0\n", 4, "some atom lines have forces"),
    "python float": ("# total energy = 1 eV\nATOMS\nO 0 0 1_0\n", 3, "expected a number, got '1_0'"),
    "no atoms keyword": ("# total energy = 1 eV\nO 0 0 0\n", 2, "expected CRYSTAL or ATOMS"),
    "slab": ("# total energy = 1 eV\nSLAB\n", 2, "SLAB: aenet training structures"),
    "animated": ("# total energy = 1 eV\nANIMSTEPS 2\n", 2, "ANIMSTEPS: animated XSF files"),
    "after a blank line": ("# total energy = 1 eV\nATOMS\nO 0 0 0\n\nH 1 0 0\n", 5, "unexpected 'H 1 0 0'"),
    "empty atoms": ("# total energy = 1 eV\nATOMS\n", 2, "not followed by any atom line"),
    "missing primvec": (CRYSTAL.replace("PRIMVEC", "PRIMVECS"), 4, "expected PRIMVEC"),
    "bad vector": (CRYSTAL.replace("   0.00000000   5.43000000", "   x   5.43"), 6, "vector: expected a number"),
    "short vector": (CRYSTAL.replace("   0.10000000   0.00000000   5.43000000", " 0.1 5.43"), 7, "lattice vector"),
    "count line": (CRYSTAL.replace("2 1", "2 3"), 9, "atom count line"),
    "too few atoms": (CRYSTAL.replace("2 1", "3 1"), 11, "ends after 2 of the 3 atoms"),
    "too many atoms": (CRYSTAL.replace("2 1", "1 1"), 11, "unexpected 'Si"),
    "gap in atoms": (CRYSTAL.replace("\nSi   1.3575", "\n\nSi   1.3575"), 11, "blank or comment line inside"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_malformed_files_name_the_file_and_line(tmp_path, case):
    text, line, message = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(AenetFormatError, match=message) as error:
        read_xsf(path)
    where = f"{path}, line {line}:" if line else f"{path}:"
    assert str(error.value).startswith(where), str(error.value)
    with pytest.raises(InputDataError):  # the dataset reader reports it as bad input (annpot exits with 2)
        read_frames(path)


def test_binary_and_missing_files(tmp_path):
    binary = tmp_path / "water.train.xsf"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(AenetFormatError, match=f"{binary} is not a text file"):
        read_xsf(binary)
    with pytest.raises(AenetFormatError, match="does not exist"):
        read_xsf(tmp_path / "nothing.xsf")
