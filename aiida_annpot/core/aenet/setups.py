"""aenet's structural fingerprint setups (``*.fingerprint.stp``, one per element) as descriptor configurations.

::

    DESCR                                   ATOM O
      free text                             ENV 2
    END DESCR                               O
    ATOM Si                                 H
    ENV  1                                  RMIN 0.75d0
    Si                                      BASIS type=Chebyshev
    RMIN 0.75d0                             radial_Rc = 8.0  radial_N = 16  angular_Rc = 6.5  angular_N = 4
    SYMMFUNC type=Behler2011   (or FUNCTIONS)
    2
    G=2 type2=Si eta=0.003214 Rs=0.0 Rc=6.5
    G=4 type2=Si type3=Si eta=0.000357 lambda=-1.0 zeta=1.0 Rc=6.5

Keywords are case-insensitive; blank lines and lines starting with ``!``, ``#`` or ``%`` are skipped. Behler2011
functions G=2 and G=4 become per-element function sets of
:class:`~aiida_annpot.common.config.BehlerParrinelloConfig` (with aenet's neighbour types and cut-offs per
function; G=1, 3 and 5 are refused); the Chebyshev basis becomes a
:class:`~aiida_annpot.common.config.ChebyshevConfig` (one for all elements, so every setup must agree), with aenet's
type weights: 0, ±1, ±2, … in the order of ``ENV``. Features follow each file's function order (aenet groups them by
neighbour type internally), and G4 values are twice aenet's (annpot sums ordered neighbour pairs, see
:mod:`~aiida_annpot.core.descriptors.behler_parrinello`); the networks standardise every feature, as aenet does, so
neither the order nor the factor changes a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ...common.config import G2, G4, BehlerParrinelloConfig, BehlerParrinelloSet, ChebyshevConfig
from ..errors import AenetFormatError, ElementMismatchError
from .text import Lines

__all__ = ["FingerprintSetup", "descriptor_from_setups", "read_fingerprint_setup"]

#: Behler2011 keys of each function kind aenet reads (lower case), and the ones it needs.
_FUNCTION_KEYS = {2: {"g", "type2", "eta", "rs", "rc"}, 4: {"g", "type2", "type3", "eta", "lambda", "zeta", "rc"}}
_CHEBYSHEV_KEYS = ("radial_rc", "radial_n", "angular_rc", "angular_n")


@dataclass(frozen=True)
class FingerprintSetup:
    """One parsed ``*.fingerprint.stp`` file.

    :param basis: ``"behler2011"`` (``functions`` set) or ``"chebyshev"`` (``chebyshev`` set).
    :param functions: the G2/G4 functions, each naming its neighbour element(s) and cut-off (Å).
    :param chebyshev: radial_Rc (Å), radial_N, angular_Rc (Å), angular_N.
    """

    path: Path
    element: str
    environment: tuple[str, ...]
    rmin: float | None
    basis: str
    description: str = ""
    functions: BehlerParrinelloSet | None = None
    chebyshev: dict | None = None

    @property
    def cutoff(self) -> float:
        """The largest cut-off of the setup (Å)."""
        if self.functions is not None:
            return max(g.cutoff for g in [*self.functions.g2, *self.functions.g4])
        return max(self.chebyshev["radial_rc"], self.chebyshev["angular_rc"])


def _problems(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field: reason; ...``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())


def _once(lines: Lines, seen: dict, keyword: str, number: int) -> None:
    if keyword in seen:
        raise lines.error(number, f"{keyword.upper()} is given twice (first on line {seen[keyword]})")
    seen[keyword] = number


def _function(lines: Lines, number: int, text: str, environment: tuple[str, ...]):
    """One Behler2011 function line → G2 or G4 with its neighbours and cut-off."""
    values = lines.key_values(number, text, "a symmetry function")
    if "g" not in values:
        raise lines.error(number, f"a symmetry function needs its type G=2 or G=4, got {text!r}")
    kind = lines.integer(number, values["g"], "G")
    if kind not in _FUNCTION_KEYS:
        raise lines.error(number, f"G={kind} functions are not supported: only G=2 (radial) and G=4 (angular)")
    keys = _FUNCTION_KEYS[kind]
    unknown, missing = sorted(set(values) - keys), sorted(keys - set(values))
    if unknown or missing:
        problems = ([f"unknown {', '.join(unknown)}"] if unknown else []) + (
            [f"missing {', '.join(missing)}"] if missing else []
        )
        raise lines.error(number, f"G={kind} takes {', '.join(sorted(keys - {'g'}))}: {'; '.join(problems)}")
    for key in ("type2", "type3") if kind == 4 else ("type2",):
        if values[key] not in environment:
            raise lines.error(number, f"{key}={values[key]} is not in ENV ({', '.join(environment)})")
    numbers = {key: lines.real(number, values[key], key) for key in keys - {"g", "type2", "type3"}}
    try:
        if kind == 2:
            return G2(eta=numbers["eta"], r_s=numbers["rs"], cutoff=numbers["rc"], neighbour=values["type2"])
        if numbers["lambda"] not in (-1.0, 1.0):
            raise lines.error(number, f"lambda must be -1 or +1, got {values['lambda']}")
        return G4(
            eta=numbers["eta"],
            zeta=numbers["zeta"],
            lambda_=int(numbers["lambda"]),
            cutoff=numbers["rc"],
            neighbours=(values["type2"], values["type3"]),
        )
    except ValidationError as exc:
        raise lines.error(number, f"invalid G={kind} function: {_problems(exc)}") from exc


def read_fingerprint_setup(path: str | Path) -> FingerprintSetup:
    """Parse one aenet fingerprint setup file. :raises AenetFormatError: naming the file and line."""
    lines = Lines(path, "fingerprint setup")
    seen: dict[str, int] = {}
    element, environment, rmin, description = None, None, None, ""
    basis, functions, chebyshev = None, None, None
    while not lines.at_end():
        number, text = lines.next("a keyword")
        keyword = text.split()[0].lower()
        if keyword == "descr":
            _once(lines, seen, keyword, number)
            block, start = [], number  # free text: every raw line up to END DESCR, comment characters and all
            for raw_number in range(number + 1, len(lines.raw) + 1):
                if lines.raw[raw_number - 1].strip().lower().startswith("end descr"):
                    break
                block.append(lines.raw[raw_number - 1].strip())
            else:
                raise lines.error(start, "DESCR is not closed by END DESCR")
            while not lines.at_end() and lines.peek()[0] <= raw_number:
                lines.next("END DESCR")
            description = "\n".join(block).strip()
        elif keyword == "atom":
            _once(lines, seen, keyword, number)
            element = lines.tokens(number, text, 2, "ATOM <element>")[1]
        elif keyword == "env":
            _once(lines, seen, keyword, number)
            count = lines.integer(number, lines.tokens(number, text, 2, "ENV <count>")[1], "ENV count", minimum=1)
            names = [
                lines.tokens(*lines.next(f"ENV element {k + 1} of {count}"), 1, "one element")[0] for k in range(count)
            ]
            if len(set(names)) != len(names):
                raise lines.error(number, f"ENV lists an element twice: {', '.join(names)}")
            environment = tuple(names)
        elif keyword == "rmin":
            _once(lines, seen, keyword, number)
            rmin = lines.real(number, lines.tokens(number, text, 2, "RMIN <distance>")[1], "RMIN")
        elif keyword in ("symmfunc", "functions", "basis"):
            if basis is not None:
                raise lines.error(number, f"a second basis definition (the first is on line {seen['basis']})")
            seen["basis"] = number
            if environment is None:
                raise lines.error(number, f"{keyword.upper()} before ENV: the functions' neighbour types need ENV")
            rest = lines.key_values(number, text.split(None, 1)[1] if len(text.split()) > 1 else "", keyword.upper())
            if set(rest) != {"type"}:
                raise lines.error(number, f"expected '{keyword.upper()} type=...', got {text!r}")
            basis = rest["type"].lower()
            if keyword == "basis":
                if basis != "chebyshev":
                    raise lines.error(number, f"BASIS type={rest['type']} is not supported: only type=Chebyshev")
                values_number, values_text = lines.next("the Chebyshev parameters")
                values = lines.key_values(values_number, values_text, "the Chebyshev parameters")
                if set(values) != set(_CHEBYSHEV_KEYS):
                    raise lines.error(
                        values_number,
                        "expected radial_Rc = <Å> radial_N = <order> angular_Rc = <Å> "
                        f"angular_N = <order>, got {values_text!r}",
                    )
                chebyshev = {
                    key: lines.integer(values_number, values[key], key, minimum=0)
                    if key.endswith("_n")
                    else lines.real(values_number, values[key], key)
                    for key in _CHEBYSHEV_KEYS
                }
            else:
                if basis != "behler2011":
                    raise lines.error(
                        number, f"{keyword.upper()} type={rest['type']} is not supported: only type=Behler2011"
                    )
                count_number, count_text = lines.next("the number of functions")
                count = lines.integer(
                    count_number,
                    lines.tokens(count_number, count_text, 1, "the number of functions")[0],
                    "number of functions",
                    minimum=1,
                )
                parsed = [lines.next(f"function {k + 1} of {count}") for k in range(count)]
                terms = [(n, _function(lines, n, t, environment)) for n, t in parsed]
                g2 = [g for _, g in terms if isinstance(g, G2)]
                g4 = [g for _, g in terms if isinstance(g, G4)]
                functions = BehlerParrinelloSet(g2=g2, g4=g4)
        else:
            raise lines.error(
                number,
                f"unknown keyword {text.split()[0]!r} (expected DESCR, ATOM, ENV, RMIN, SYMMFUNC, FUNCTIONS or BASIS)",
            )
    for keyword, what in (("atom", "ATOM"), ("env", "ENV"), ("basis", "SYMMFUNC, FUNCTIONS or BASIS")):
        if keyword not in seen:
            raise lines.error(None, f"no {what}")
    return FingerprintSetup(
        path=lines.path,
        element=element,
        environment=environment,
        rmin=rmin,
        basis=basis,
        description=description,
        functions=functions,
        chebyshev=chebyshev,
    )


def _typespin(order: tuple[str, ...]) -> dict[str, float]:
    """aenet's Chebyshev type weights: 0, ±1, ±2, … over ``order`` (ENV order), 0 skipped for an even count."""
    n = len(order)
    values = [v for v in range(-(n // 2), n // 2 + 1) if n % 2 or v != 0]
    return {element: float(v) for element, v in zip(order, values, strict=True)}


def descriptor_from_setups(setups: dict[str, FingerprintSetup], elements: list[str]):
    """The descriptor configuration of one setup per element, and notes for the user.

    :param setups: element → its setup (as generate.in's SETUPS pairs them).
    :param elements: the elements of the training set (generate.in's TYPES).
    :raises ElementMismatchError: setups missing or extra, an ATOM other than its element, an ENV element that is
        not in ``elements``.
    :raises AenetFormatError: setups that cannot form one configuration (mixed bases, differing Chebyshev
        parameters, cut-offs out of range).
    """
    notes = []
    missing, extra = sorted(set(elements) - set(setups)), sorted(set(setups) - set(elements))
    if missing or extra:
        raise ElementMismatchError(
            "the fingerprint setups do not match the elements "
            + ", ".join(elements)
            + (f": no setup for {', '.join(missing)}" if missing else "")
            + (f": setups for {', '.join(extra)}, which are not among them" if extra else "")
        )
    for element, setup in setups.items():
        if setup.element != element:
            raise ElementMismatchError(f"{setup.path}: ATOM {setup.element}, but it is the setup of {element}")
        unknown = [e for e in setup.environment if e not in elements]
        if unknown:
            raise ElementMismatchError(
                f"{setup.path}: ENV names {', '.join(unknown)}, not among the elements {', '.join(elements)}"
            )
        ignored = [e for e in elements if e not in setup.environment]
        if ignored:
            notes.append(f"{setup.path}: ENV lacks {', '.join(ignored)}: {element} atoms do not see those neighbours")
    bases = {setup.basis for setup in setups.values()}
    if len(bases) > 1:
        listing = ", ".join(f"{s.path.name}: {s.basis}" for s in setups.values())
        raise AenetFormatError(f"the fingerprint setups mix basis types ({listing}); aenet and annpot need one")
    ordered = [setups[e] for e in elements]
    if bases == {"chebyshev"}:
        first = ordered[0]
        for setup in ordered[1:]:
            if setup.chebyshev != first.chebyshev or setup.environment != first.environment:
                raise AenetFormatError(
                    f"{setup.path} and {first.path} differ in their Chebyshev parameters or ENV order: annpot uses "
                    "one Chebyshev basis (and one set of type weights) for every element"
                )
        values = first.chebyshev
        settings = {
            "radial_order": values["radial_n"],
            "radial_cutoff": values["radial_rc"],
            "angular_order": values["angular_n"],
            "angular_cutoff": values["angular_rc"],
        }
        if len(first.environment) > 1:
            settings["type_weights"] = _typespin(first.environment)
        try:
            return ChebyshevConfig(**settings), notes
        except ValidationError as exc:
            raise AenetFormatError(
                f"{first.path}: the Chebyshev basis is out of annpot's range: {_problems(exc)}"
            ) from exc
    cutoff = max(setup.cutoff for setup in ordered)
    per_element = {}
    for setup in ordered:  # a function at the overall cut-off needs no cut-off of its own
        g2 = [g.model_copy(update={"cutoff": None if g.cutoff == cutoff else g.cutoff}) for g in setup.functions.g2]
        g4 = [g.model_copy(update={"cutoff": None if g.cutoff == cutoff else g.cutoff}) for g in setup.functions.g4]
        per_element[setup.element] = BehlerParrinelloSet(g2=g2, g4=g4)
    try:
        return BehlerParrinelloConfig(cutoff=cutoff, per_element=per_element), notes
    except ValidationError as exc:
        paths = ", ".join(str(s.path) for s in ordered)
        raise AenetFormatError(f"{paths}: the functions do not form a valid descriptor: {_problems(exc)}") from exc
