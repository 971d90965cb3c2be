"""aenet's ``generate.in`` and ``train.in`` turned into an annpot training configuration (``annpot import-aenet``).

generate.in (keywords in any order)::

    OUTPUT  water.train                 train.in:  TRAININGSET water.train
    TYPES                                          TESTPERCENT 10
    2                                              ITERATIONS  500
    O  -432.503149303  ! eV                        MAXENERGY   -2.0           (optional)
    H   -13.605693123                              METHOD
    SETUPS                                         adam mu=0.001 batchsize=32
    O  O.fingerprint.stp                           NETWORKS
    H  H.fingerprint.stp                           O  O.nn  2  10:tanh 10:tanh
    FILES                                          H  H.nn  2  10:tanh 10:tanh
    2
    xsf/0001.xsf
    xsf/0002.xsf

Paths in generate.in are relative to its folder. What maps onto annpot: the elements (TYPES), the descriptor (the
setups, :mod:`.setups`), the structures (FILES, read as XSF; MAXENERGY drops those whose energy per atom above the
TYPES atomic energies is higher, as ``train.x`` does), the validation share (TESTPERCENT / 100), the epochs
(ITERATIONS), the hidden layers and activation (NETWORKS: annpot has one architecture for every element), and
Adam's step size and batch size (METHOD adam ``mu``, ``batchsize``, with a constant learning rate as in aenet).
What does not map is reported, never dropped silently: annpot trains with Adam only (``bfgs``, ``lm``, ``ekf`` and
``online_sd`` keep annpot's training defaults), fits the per-element reference energies itself by least squares
(TYPES energies are reported; annpot has no setting for them), and ignores OUTPUT, TIMING, DEBUG, SAVE_ENERGIES,
SAMPLING and VERBOSITY with a warning. Anything else is an error naming the file and line.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import ase.io
import numpy as np
import yaml
from ase import Atoms

from ...common.config import TrainingConfig, load_config
from ..errors import AenetFormatError, ElementMismatchError, InputDataError
from .setups import FingerprintSetup, descriptor_from_setups, read_fingerprint_setup
from .text import Lines
from .xsf import read_xsf

__all__ = ["AenetImport", "GenerateInput", "TrainInput", "import_aenet", "read_generate_in", "read_train_in"]

#: Keywords of generate.x and train.x that have no effect on an annpot training: warned about, then ignored.
_IGNORED = {
    "output": "the binary training set file of generate.x is not used: annpot reads the XSF files",
    "timing": "timing output of aenet",
    "debug": "aenet's debugging output",
    "verbosity": "aenet's output verbosity",
    "trainingset": "the binary training set file of generate.x is not used: annpot reads the XSF files",
    "save_energies": "use 'annpot evaluate MODEL DATA --output FOLDER' for per-structure predictions",
    "sampling": "annpot shuffles the training structures every epoch",
}
_GENERATE_KEYWORDS = ("output", "types", "setups", "files", "timing", "debug", "verbosity")
_TRAIN_KEYWORDS = (
    "trainingset",
    "testpercent",
    "iterations",
    "maxenergy",
    "method",
    "networks",
    "sampling",
    "timing",
    "debug",
    "save_energies",
    "verbosity",
)
#: train.x's optimisers and the parameters each reads.
_METHODS = {
    "bfgs": set(),
    "lm": {"batchsize", "learnrate", "iter", "conv", "adjust"},
    "online_sd": {"alpha", "gamma"},
    "online_gd": {"alpha", "gamma"},
    "ekf": {"lambda", "lambda0", "state", "pnoise", "adaptive", "wgroup"},
    "adam": {"mu", "b1", "b2", "eps", "samplesize", "batchsize"},
}
#: aenet's Adam defaults (train.x) and torch's, which annpot uses for the moments.
_ADAM_DEFAULTS = {"mu": 0.001, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "samplesize": 500.0, "batchsize": 1.0}
#: Hidden-layer activations of aenet that annpot can represent: tanh exactly; sigmoid(x) = (1 + tanh(x/2))/2 and
#: mtanh(x) = 1.7159 tanh(2x/3) are tanh networks with rescaled weights (the same function family).
_ACTIVATIONS = {"tanh": "tanh", "sigmoid": "tanh", "mtanh": "tanh"}


#: Sections followed by data lines; the other keywords carry their value on their own line.
_DATA_SECTIONS = ("types", "setups", "files", "method", "networks")


@dataclass(frozen=True)
class _Section:
    keyword: str
    number: int
    text: str
    data: list[tuple[int, str]]

    @property
    def takes_data(self) -> bool:
        return self.keyword in _DATA_SECTIONS


def _sections(lines: Lines, keywords: tuple[str, ...]) -> dict[str, _Section]:
    """Keyword lines and the data lines under each, in any order; unknown keywords and repeats are errors."""
    sections: dict[str, _Section] = {}
    current = None
    for number, text in lines.lines:
        word = text.split()[0].lower()
        if word in keywords:
            if word in sections:
                raise lines.error(number, f"{word.upper()} is given twice (first on line {sections[word].number})")
            current = sections[word] = _Section(word, number, text, [])
        elif current is None or not current.takes_data:
            raise lines.error(
                number,
                f"unknown keyword {text.split()[0]!r} (expected one of {', '.join(k.upper() for k in keywords)})",
            )
        else:
            current.data.append((number, text))
    return sections


def _counted(lines: Lines, section: _Section, what: str) -> list[tuple[int, str]]:
    """The data of a section whose first data line is the count of the lines after it."""
    if not section.data:
        raise lines.error(section.number, f"{section.keyword.upper()} needs the number of {what} on the next line")
    number, text = section.data[0]
    count = lines.integer(
        number, lines.tokens(number, text, 1, f"the number of {what}")[0], f"number of {what}", minimum=1
    )
    entries = section.data[1:]
    if len(entries) < count:
        where = entries[-1][0] if entries else number
        raise lines.error(where, f"{section.keyword.upper()} announces {count} {what}, {len(entries)} given")
    _no_more(lines, section, entries, count, f"the {count} {what} {section.keyword.upper()} announces")
    return entries


def _no_more(lines: Lines, section: _Section, entries: list, count: int, expected: str) -> None:
    """Data lines past the ``count`` a section takes: most likely a misspelt keyword."""
    if len(entries) > count:
        number, text = entries[count]
        raise lines.error(
            number, f"unknown keyword {text.split()[0]!r}, or more {section.keyword.upper()} lines than {expected}"
        )


def _no_data(lines: Lines, section: _Section) -> None:
    if section.data:
        raise lines.error(section.data[0][0], f"unexpected line after {section.keyword.upper()}")


def _ignored(lines: Lines, sections: dict[str, _Section], warnings: list[str]) -> None:
    for keyword, section in sections.items():
        if keyword in _IGNORED:
            warnings.append(f"{lines.path}, line {section.number}: {keyword.upper()} ignored ({_IGNORED[keyword]})")


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


@dataclass(frozen=True)
class GenerateInput:
    """A parsed generate.in: TYPES (element → atomic energy, eV, in file order), SETUPS and FILES (paths resolved
    against generate.in's folder)."""

    path: Path
    types: dict[str, float]
    setups: dict[str, Path]
    files: list[Path]
    output: str | None = None
    warnings: list[str] = field(default_factory=list)


def read_generate_in(path: str | Path) -> GenerateInput:
    """Parse generate.in. :raises AenetFormatError: naming the file and line of what is malformed or missing."""
    lines = Lines(path, "generate.in")
    sections = _sections(lines, _GENERATE_KEYWORDS)
    for keyword in ("types", "setups", "files"):
        if keyword not in sections:
            raise lines.error(None, f"no {keyword.upper()} section")
    types = {}
    for number, text in _counted(lines, sections["types"], "types"):
        element, energy = lines.tokens(number, text, 2, "'<element> <atomic energy in eV>'")
        if element in types:
            raise lines.error(number, f"TYPES lists {element} twice")
        types[element] = lines.real(number, energy, f"atomic energy of {element}")
    base = lines.path.parent
    setups = {}
    _no_more(lines, sections["setups"], sections["setups"].data, len(types), f"the {len(types)} TYPES")
    for number, text in sections["setups"].data:
        element, setup = lines.tokens(number, text, 2, "'<element> <setup file>'")
        if element not in types:
            raise lines.error(number, f"SETUPS names {element}, which is not among the TYPES ({', '.join(types)})")
        if element in setups:
            raise lines.error(number, f"SETUPS lists {element} twice")
        setups[element] = _resolve(base, setup)
    missing = [e for e in types if e not in setups]
    if missing:
        raise lines.error(sections["setups"].number, f"SETUPS has no setup file for {', '.join(missing)}")
    files = [
        _resolve(base, lines.tokens(n, t, 1, "one XSF file path")[0])
        for n, t in _counted(lines, sections["files"], "structure files")
    ]
    output = None
    if "output" in sections:
        _no_data(lines, sections["output"])
        output = lines.tokens(sections["output"].number, sections["output"].text, 2, "OUTPUT <file>")[1]
    for keyword in ("timing", "debug", "verbosity"):
        if keyword in sections:
            _no_data(lines, sections[keyword])
    warnings: list[str] = []
    _ignored(lines, sections, warnings)
    return GenerateInput(lines.path, types, setups, files, output, warnings)


@dataclass(frozen=True)
class Network:
    """One NETWORKS line: the element, aenet's network file (unused), hidden layer widths and activations."""

    element: str
    file: str
    hidden: list[int]
    activations: list[str]
    number: int


@dataclass(frozen=True)
class TrainInput:
    """A parsed train.in, with aenet's defaults for what it leaves out (TESTPERCENT 10, ITERATIONS 10, bfgs)."""

    path: Path
    networks: dict[str, Network]
    testpercent: float = 10.0
    iterations: int = 10
    maxenergy: float | None = None
    method: str = "bfgs"
    method_parameters: dict[str, float] = field(default_factory=dict)
    method_line: int | None = None
    trainingset: str | None = None
    warnings: list[str] = field(default_factory=list)


def _network(lines: Lines, number: int, text: str) -> Network:
    tokens = lines.tokens(number, text, None, "a network line")
    if len(tokens) < 3:
        raise lines.error(
            number, f"expected '<element> <network file> <hidden layers> <nodes>:<activation> ...', got {text!r}"
        )
    element, file, count = tokens[:3]
    n_layers = lines.integer(number, count, "number of hidden layers", minimum=1)
    layers = tokens[3:]
    if len(layers) != n_layers:
        raise lines.error(number, f"{n_layers} hidden layers announced, {len(layers)} given ({' '.join(layers)})")
    hidden, activations = [], []
    for layer in layers:
        nodes, sign, activation = layer.partition(":")
        if not sign:
            raise lines.error(number, f"expected <nodes>:<activation> for a hidden layer, got {layer!r}")
        hidden.append(lines.integer(number, nodes, "nodes of a hidden layer", minimum=1))
        activation = activation.lower()
        if activation not in (*_ACTIVATIONS, "linear", "twist"):
            raise lines.error(number, f"unknown activation {activation!r} (aenet: linear, tanh, sigmoid, mtanh, twist)")
        activations.append(activation)
    return Network(element, file, hidden, activations, number)


def read_train_in(path: str | Path, elements: list[str]) -> TrainInput:
    """Parse train.in for a training set of ``elements`` (generate.in's TYPES): NETWORKS needs one line per
    element. :raises AenetFormatError: naming the file and line of what is malformed or missing."""
    lines = Lines(path, "train.in")
    sections = _sections(lines, _TRAIN_KEYWORDS)
    settings: dict = {}
    for keyword in ("testpercent", "iterations", "maxenergy", "trainingset"):
        if keyword in sections:
            section = sections[keyword]
            _no_data(lines, section)
            value = lines.tokens(section.number, section.text, 2, f"{keyword.upper()} <value>")[1]
            if keyword == "iterations":
                settings[keyword] = lines.integer(section.number, value, "ITERATIONS", minimum=1)
            elif keyword == "trainingset":
                settings[keyword] = value
            else:
                settings[keyword] = lines.real(section.number, value, keyword.upper())
    for keyword in ("sampling", "timing", "debug", "save_energies", "verbosity"):
        if keyword in sections:
            _no_data(lines, sections[keyword])
    if "method" in sections:
        section = sections["method"]
        if len(section.data) != 1:
            where = section.data[1][0] if section.data else section.number
            raise lines.error(where, "METHOD needs one line: the method name and its parameters")
        number, text = section.data[0]
        name, *rest = text.split(None, 1)
        name = name.lower()
        if name not in _METHODS:
            raise lines.error(number, f"unknown training method {name!r} (train.x: {', '.join(_METHODS)})")
        values = lines.key_values(number, rest[0], f"the parameters of {name}") if rest else {}
        unknown = sorted(set(values) - _METHODS[name])
        if unknown:
            raise lines.error(
                number,
                f"{name} has no parameter {', '.join(unknown)} (it takes "
                f"{', '.join(sorted(_METHODS[name])) or 'none'})",
            )
        settings.update(
            method=name, method_line=number, method_parameters={k: lines.real(number, v, k) for k, v in values.items()}
        )
    if "networks" not in sections:
        raise lines.error(None, "no NETWORKS section")
    networks = {}
    _no_more(lines, sections["networks"], sections["networks"].data, len(elements), f"the {len(elements)} TYPES")
    for number, text in sections["networks"].data:
        network = _network(lines, number, text)
        if network.element not in elements:
            raise lines.error(number, f"NETWORKS names {network.element}, not among the TYPES ({', '.join(elements)})")
        if network.element in networks:
            raise lines.error(number, f"NETWORKS lists {network.element} twice")
        networks[network.element] = network
    missing = [e for e in elements if e not in networks]
    if missing:
        raise lines.error(sections["networks"].number, f"NETWORKS has no network for {', '.join(missing)}")
    warnings: list[str] = []
    _ignored(lines, sections, warnings)
    return TrainInput(lines.path, networks, warnings=warnings, **settings)


@dataclass
class AenetImport:
    """What ``annpot import-aenet`` makes of generate.in and train.in.

    :param settings: the TrainingConfig mapping (dataset paths still to be made relative by :meth:`write`).
    :param frames: the labelled structures kept (after MAXENERGY), with ``files`` their XSF files.
    :param atomic_energies: TYPES (eV), which annpot does not use (it fits reference energies itself).
    :param notes: how settings were mapped; ``warnings``: what was ignored or approximated.
    """

    generate: GenerateInput
    train: TrainInput
    setups: dict[str, FingerprintSetup]
    settings: dict
    frames: list[Atoms]
    files: list[Path]
    atomic_energies: dict[str, float]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def write(self, config: str | Path, dataset: str | Path | None = None) -> TrainingConfig:
        """Write the configuration YAML to ``config`` and, if given, the structures as extxyz to ``dataset``
        (which the configuration then trains on; else it lists the XSF files). Paths in the YAML are relative to its
        folder. Returns the validated configuration.

        :raises ConfigError: the settings do not form a valid TrainingConfig.
        """
        config = Path(config)
        folder = config.parent
        settings = dict(self.settings)
        if dataset is not None:
            settings["dataset"] = _relative(Path(dataset), folder)
        else:
            settings["dataset"] = [_relative(path, folder) for path in self.files]
        validated = load_config(settings, TrainingConfig)  # before writing anything
        if dataset is not None:
            Path(dataset).parent.mkdir(parents=True, exist_ok=True)
            ase.io.write(dataset, self.frames, format="extxyz")
        folder.mkdir(parents=True, exist_ok=True)
        header = [
            f"Training configuration written by 'annpot import-aenet' from {self.generate.path} and {self.train.path}.",
            "Paths are relative to this file's folder.",
        ]
        energies = ", ".join(f"{e} {v!r}" for e, v in self.atomic_energies.items())
        header.append(f"aenet atomic energies (TYPES, eV, not used: annpot fits reference energies): {energies}")
        text = "".join(f"# {line}\n" for line in header)
        config.write_text(text + yaml.safe_dump(settings, sort_keys=False, default_flow_style=None, width=120))
        return validated


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` where possible (both made absolute), else absolute."""
    try:
        return os.path.relpath(path.resolve(), folder.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def _network_settings(train: TrainInput, elements: list[str], warnings: list[str]) -> dict:
    """One NetworkConfig for all elements: aenet allows one per element, annpot shares the architecture."""
    networks = [train.networks[e] for e in elements]
    shapes = {(tuple(n.hidden), tuple(n.activations)) for n in networks}
    if len(shapes) > 1:
        listing = "; ".join(
            f"{n.element}: {' '.join(f'{h}:{a}' for h, a in zip(n.hidden, n.activations, strict=True))}"
            for n in networks
        )
        raise AenetFormatError(
            f"{train.path}: the networks differ ({listing}); annpot uses one architecture for every element"
        )
    first = networks[0]
    activations = set(first.activations)
    if len(activations) > 1:
        raise AenetFormatError(
            f"{train.path}, line {first.number}: hidden layers with different activations "
            f"({', '.join(first.activations)}); annpot uses one activation"
        )
    (activation,) = activations
    if activation not in _ACTIVATIONS:
        raise AenetFormatError(
            f"{train.path}, line {first.number}: activation {activation} has no annpot "
            "equivalent (annpot: tanh, silu, softplus, gelu)"
        )
    if activation != "tanh":
        warnings.append(
            f"{train.path}, line {first.number}: activation {activation} becomes tanh (a {activation} "
            "network is a tanh network with rescaled weights, so the fitted function family is the same)"
        )
    files = ", ".join(n.file for n in networks)
    warnings.append(f"{train.path}: network files ({files}) not used: annpot writes one model file for all elements")
    return {"hidden": list(first.hidden), "activation": _ACTIVATIONS[activation]}


def _method_settings(train: TrainInput, warnings: list[str], notes: list[str]) -> dict:
    where = f"{train.path}, line {train.method_line}" if train.method_line else str(train.path)
    if train.method != "adam":
        given = " ".join(f"{k}={v:g}" for k, v in train.method_parameters.items())
        warnings.append(
            f"{where}: METHOD {train.method} {given}".rstrip() + " is not available: annpot trains "
            "with Adam; annpot's defaults (learning rate, batch size, plateau schedule) are used"
        )
        return {}
    values = {**_ADAM_DEFAULTS, **train.method_parameters}
    batch = values["batchsize"]
    if batch != int(batch) or batch < 1:
        raise AenetFormatError(f"{where}: adam batchsize must be a positive integer, got {batch:g}")
    for key, torch_default in (("b1", 0.9), ("b2", 0.999), ("eps", 1e-8)):
        if values[key] != torch_default:
            warnings.append(f"{where}: adam {key}={values[key]:g} ignored: annpot's Adam uses {key}={torch_default:g}")
    if "samplesize" in train.method_parameters:
        warnings.append(f"{where}: adam samplesize ignored: every annpot epoch uses the whole training split")
    notes.append(f"adam: learning_rate {values['mu']:g} (mu), constant as in aenet; batch_size {int(batch)}")
    return {
        "learning_rate": values["mu"],
        "min_learning_rate": min(values["mu"], 1e-5),
        "lr_schedule": "constant",
        "batch_size": int(batch),
    }


def _read_structures(generate: GenerateInput, elements: list[str]) -> list[Atoms]:
    """Every XSF file of FILES, checked like training data (the file named in every error)."""
    from ..frames import validate_labelled  # torch-free: what the training checks, with the file named

    frames = []
    for path in generate.files:
        frame = read_xsf(path)
        unknown = sorted(set(frame.get_chemical_symbols()) - set(elements))
        if unknown:
            raise ElementMismatchError(
                f"{path} holds {', '.join(unknown)}, not among the TYPES of {generate.path} ({', '.join(elements)})"
            )
        validate_labelled([frame], source=str(path), require_forces=False)
        frames.append(frame)
    return frames


def import_aenet(generate_in: str | Path, train_in: str | Path) -> AenetImport:
    """Read generate.in, its setups and XSF files, and train.in, and map them onto a TrainingConfig mapping.

    :raises AenetFormatError: malformed files (file and line named) or settings annpot cannot represent.
    :raises ElementMismatchError: setups, networks or structures whose elements disagree with TYPES.
    """
    generate = read_generate_in(generate_in)
    elements = list(generate.types)
    train = read_train_in(train_in, elements)
    warnings, notes = [*generate.warnings, *train.warnings], []
    setups = {element: read_fingerprint_setup(path) for element, path in generate.setups.items()}
    descriptor, descriptor_notes = descriptor_from_setups(setups, elements)
    notes += descriptor_notes
    rmin = {s.rmin for s in setups.values() if s.rmin is not None}
    if rmin:
        warnings.append(
            f"RMIN ({', '.join(f'{r:g}' for r in sorted(rmin))} Å) of the setups not used: annpot "
            "refuses structures with atoms closer than 0.5 Å"
        )
    frames, files = _read_structures(generate, elements), list(generate.files)
    if train.maxenergy is not None:  # train.x: the energy per atom above the atomic energies
        reference = np.array([generate.types[s] for s in elements])
        kept = [k for k, frame in enumerate(frames) if _formation_energy(frame, elements, reference) <= train.maxenergy]
        notes.append(
            f"MAXENERGY {train.maxenergy:g} eV/atom: {len(frames) - len(kept)} of {len(frames)} structures dropped"
        )
        frames, files = [frames[k] for k in kept], [files[k] for k in kept]
    if len(frames) < 2:
        raise InputDataError(f"{generate.path}: {len(frames)} structure(s) left to train on; annpot needs at least 2")
    absent = [e for e in elements if not any(e in frame.get_chemical_symbols() for frame in frames)]
    if absent:
        raise ElementMismatchError(f"no structure of {generate.path} holds {', '.join(absent)} (TYPES lists it)")
    if not 0.0 < train.testpercent < 100.0:
        raise AenetFormatError(
            f"{train.path}: TESTPERCENT {train.testpercent:g} must lie between 0 and 100 "
            "(annpot validates on a held-out share)"
        )
    settings = {
        "dataset": None,  # filled in by AenetImport.write
        "elements": elements,
        "descriptor": descriptor.model_dump(mode="json", by_alias=True),
        "network": _network_settings(train, elements, warnings),
        "validation_fraction": train.testpercent / 100.0,
        "max_epochs": train.iterations,
        **_method_settings(train, warnings, notes),
    }
    without_forces = sum(1 for frame in frames if "forces" not in frame.calc.results)
    if without_forces:
        settings["loss"] = {"energy_weight": 1.0, "force_weight": 0.0}
        notes.append(
            f"{without_forces} of {len(frames)} structures have no forces: energies only are fitted "
            "(loss.force_weight 0), as train.x does"
        )
    else:
        notes.append(
            "every structure has forces: annpot fits energies and forces (train.x fits energies only; set "
            "loss.force_weight to 0 to do the same)"
        )
    notes.append(
        f"validation_fraction {train.testpercent / 100.0:g} (TESTPERCENT), max_epochs {train.iterations} "
        "(ITERATIONS; annpot may stop earlier: early_stopping_patience)"
    )
    return AenetImport(generate, train, setups, settings, frames, files, dict(generate.types), notes, warnings)


def _formation_energy(frame: Atoms, elements: list[str], reference: np.ndarray) -> float:
    counts = np.array([frame.get_chemical_symbols().count(e) for e in elements], dtype=float)
    energy = float(frame.calc.results["energy"])
    value = (energy - counts @ reference) / len(frame)
    return value if math.isfinite(value) else math.inf
