"""aenet's XSF training structures: one labelled structure per file.

::

    # total energy = -158.47 eV          # total energy = -32.1 eV
    CRYSTAL                              ATOMS
    PRIMVEC                              O  0.0 0.0 0.0  fx fy fz
      a1x a1y a1z                        H  0.96 0.0 0.0  fx fy fz
      a2x a2y a2z                        ...
      a3x a3y a3z
    PRIMCOORD
    N 1
    Si  x y z  fx fy fz
    ...

Positions and lattice vectors in Å (Cartesian), the total energy in eV, forces (optional: three more columns on
every atom line) in eV/Å. ``ase.io.read(format="xsf")`` is not used: it ignores the energy comment and reads the
force columns as Hartree/Å (XCrysDen's unit), 27.2 times aenet's values, and it validates with ``assert``. This reader
accepts exactly the structure above (an optional ``CONVVEC`` block is skipped) and names the file and the line of
anything else. Like ``ase.io``, a folder of XSF files is read in sorted file-name order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from ..errors import AenetFormatError
from .text import parse_real, read_text

__all__ = ["read_xsf", "read_xsf_folder", "write_xsf"]

_ENERGY = re.compile(r"#\s*total\s+energy\s*=\s*(?P<value>\S+)(?:\s+(?P<unit>\S+))?\s*", re.IGNORECASE)
_MENTIONS_ENERGY = re.compile(r"total\s+energy", re.IGNORECASE)
#: Keywords of XSF files aenet does not read as training structures.
_UNSUPPORTED = {
    "ANIMSTEPS": "animated XSF files (several structures) are not aenet training files",
    "SLAB": "aenet training structures are CRYSTAL (periodic in 3D) or ATOMS (isolated)",
    "POLYMER": "aenet training structures are CRYSTAL (periodic in 3D) or ATOMS (isolated)",
    "MOLECULE": "aenet training structures are CRYSTAL (periodic in 3D) or ATOMS (isolated)",
}


class _Reader:
    """The content lines (not blank, not ``#`` comments) of one XSF file, with their line numbers."""

    def __init__(self, path: Path):
        self.path = path
        numbered = [(n, line.strip()) for n, line in enumerate(read_text(path, "XSF file").splitlines(), 1)]
        self.comments = [(n, t) for n, t in numbered if t.startswith("#")]
        self.content = [(n, t) for n, t in numbered if t and not t.startswith("#")]
        self.position = 0

    def error(self, number: int | None, message: str) -> AenetFormatError:
        return AenetFormatError(f"{self.path}, line {number}: {message}" if number else f"{self.path}: {message}")

    def next(self, expected: str) -> tuple[int, str]:
        if self.position >= len(self.content):
            last = self.content[-1][0] if self.content else None
            raise self.error(last, f"the file ends where {expected} was expected")
        line = self.content[self.position]
        self.position += 1
        return line

    def keyword(self, expected: tuple[str, ...]) -> tuple[int, str]:
        number, text = self.next(" or ".join(expected))
        word = text.upper()
        if word.split()[0] in _UNSUPPORTED:
            raise self.error(number, f"{word.split()[0]}: {_UNSUPPORTED[word.split()[0]]}")
        if word not in expected:
            raise self.error(number, f"expected {' or '.join(expected)}, got {text!r}")
        return number, word

    def reals(self, number: int, tokens: list[str], what: str) -> list[float]:
        return [parse_real(token, lambda message: self.error(number, f"{what}: {message}")) for token in tokens]

    def energy(self) -> float:
        """The value of the one ``# total energy = <E> [eV]`` comment."""
        found = [(n, t) for n, t in self.comments if _MENTIONS_ENERGY.search(t)]
        if not found:
            cohesive = any("cohesive energy" in t.lower() for _, t in self.comments)
            raise self.error(
                None,
                "no '# total energy = <E> eV' comment: the energy label is missing"
                + (" (a cohesive energy alone is not enough)" if cohesive else ""),
            )
        if len(found) > 1:
            raise self.error(found[1][0], f"a second total energy comment (the first is on line {found[0][0]})")
        number, text = found[0]
        match = _ENERGY.fullmatch(text)
        if not match:
            raise self.error(number, f"malformed total energy comment {text!r}: expected '# total energy = <E> eV'")
        unit = match["unit"]
        if unit is not None and unit.lower() != "ev":
            raise self.error(number, f"total energy in {unit!r}: aenet XSF energies are in eV")
        return self.reals(number, [match["value"]], "total energy")[0]

    def atom(self, number: int, text: str) -> tuple[int, list[float]]:
        """(atomic number, [x, y, z] or [x, y, z, fx, fy, fz]) of one atom line."""
        tokens = text.split()
        if len(tokens) not in (4, 7):
            raise self.error(number, f"expected 'symbol x y z' or 'symbol x y z fx fy fz', got {text!r}")
        symbol = tokens[0]
        if symbol.isdigit() and 0 < int(symbol) < len(chemical_symbols):
            z = int(symbol)
        elif symbol in chemical_symbols[1:]:
            z = chemical_symbols.index(symbol)
        else:
            raise self.error(number, f"{symbol!r} is not a chemical element symbol or atomic number")
        return z, self.reals(number, tokens[1:], "atom coordinates and forces")

    def atoms(self, lines: list[tuple[int, str]]) -> tuple[list[int], np.ndarray, np.ndarray | None]:
        parsed = [self.atom(number, text) for number, text in lines]
        columns = {len(values) for _, values in parsed}
        if len(columns) > 1:
            odd = next(number for (number, _), (_, v) in zip(lines, parsed, strict=True) if len(v) != len(parsed[0][1]))
            raise self.error(odd, "some atom lines have forces and others not: give forces for every atom or none")
        values = np.array([v for _, v in parsed], dtype=np.float64)
        return [z for z, _ in parsed], values[:, :3], values[:, 3:] if values.shape[1] == 6 else None

    def consecutive(self, count: int | None, after: int) -> list[tuple[int, str]]:
        """The next ``count`` content lines (all remaining if None), which must follow line ``after`` without blank
        or comment lines in between (aenet stops reading atoms at a blank line)."""
        lines, previous = [], after
        while self.position < len(self.content) and (count is None or len(lines) < count):
            number, text = self.content[self.position]
            if number != previous + 1:
                if count is None:
                    break
                raise self.error(previous + 1, f"blank or comment line inside the list of {count} atoms")
            lines.append((number, text))
            self.position += 1
            previous = number
        if count is not None and len(lines) < count:
            raise self.error(previous, f"the file ends after {len(lines)} of the {count} atoms PRIMCOORD announces")
        return lines

    def finish(self) -> None:
        if self.position < len(self.content):
            number, text = self.content[self.position]
            raise self.error(number, f"unexpected {text!r} after the atoms (one structure per aenet XSF file)")


def read_xsf(path: str | Path) -> Atoms:
    """One aenet XSF file as ``Atoms`` with a ``SinglePointCalculator`` holding the energy (eV) and, when the file
    has them, the forces (eV/Å). :raises AenetFormatError: naming the file and line of anything malformed."""
    reader = _Reader(Path(path))
    energy = reader.energy()
    number, kind = reader.keyword(("CRYSTAL", "ATOMS"))
    if kind == "CRYSTAL":
        reader.keyword(("PRIMVEC",))
        cell = []
        for _ in range(3):
            number, text = reader.next("a lattice vector")
            tokens = text.split()
            if len(tokens) != 3:
                raise reader.error(number, f"expected a lattice vector (3 numbers), got {text!r}")
            cell.append(reader.reals(number, tokens, "lattice vector"))
        number, word = reader.keyword(("CONVVEC", "PRIMCOORD"))
        if word == "CONVVEC":  # the conventional cell: display only, the structure is the primitive one
            for _ in range(3):
                reader.next("a conventional lattice vector")
            number, word = reader.keyword(("PRIMCOORD",))
        number, text = reader.next("the atom count line 'N 1'")
        tokens = text.split()
        if not 1 <= len(tokens) <= 2 or (len(tokens) == 2 and tokens[1] != "1") or not tokens[0].isdigit():
            raise reader.error(number, f"expected the atom count line 'N 1', got {text!r}")
        if int(tokens[0]) < 1:
            raise reader.error(number, "PRIMCOORD announces no atoms")
        numbers, positions, forces = reader.atoms(reader.consecutive(int(tokens[0]), number))
        atoms = Atoms(numbers=numbers, positions=positions, cell=np.array(cell), pbc=True)
    else:
        lines = reader.consecutive(None, number)
        if not lines:
            raise reader.error(number, "ATOMS is not followed by any atom line")
        numbers, positions, forces = reader.atoms(lines)
        atoms = Atoms(numbers=numbers, positions=positions, pbc=False)
    reader.finish()
    results = {"energy": energy} if forces is None else {"energy": energy, "forces": forces}
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def read_xsf_folder(folder: str | Path) -> list[Atoms]:
    """Every ``*.xsf`` file of a folder (not its subfolders), in sorted file-name order."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xsf" and p.is_file())
    if not files:
        raise AenetFormatError(f"folder {folder} holds no .xsf files")
    return [read_xsf(path) for path in files]


def write_xsf(path: str | Path, atoms: Atoms) -> Path:
    """Write ``atoms`` with its energy (and forces, if known) as an aenet XSF file, numbers at full precision.

    Periodic structures must be periodic along all three cell vectors (aenet's CRYSTAL); others are written as
    ATOMS (isolated).
    """
    if atoms.calc is None or "energy" not in atoms.calc.results:
        raise ValueError("an aenet XSF training file needs the total energy: attach a calculator with results")
    if atoms.pbc.any() and not atoms.pbc.all():
        raise ValueError(f"aenet XSF files are periodic in 3D or not at all, got pbc={atoms.pbc.tolist()}")
    forces = atoms.calc.results.get("forces")
    lines = [f"# total energy = {float(atoms.calc.results['energy'])!r} eV", ""]
    if atoms.pbc.all():
        lines += ["CRYSTAL", "PRIMVEC", *(" ".join(repr(float(x)) for x in row) for row in atoms.cell.array)]
        lines += ["PRIMCOORD", f"{len(atoms)} 1"]
    else:
        lines.append("ATOMS")
    for index, (symbol, position) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)):
        values = [*position, *(forces[index] if forces is not None else ())]
        lines.append(" ".join([symbol, *(repr(float(x)) for x in values)]))
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path
