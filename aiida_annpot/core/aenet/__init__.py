"""aenet's own file formats, for people who come from aenet (N. Artrith and A. Urban, Comput. Mater. Sci. 114, 135
(2016); http://ann.atomistic.net): XSF training structures (:mod:`.xsf`), structural fingerprint setups
``*.fingerprint.stp`` (:mod:`.setups`) and the ``generate.in``/``train.in`` inputs of ``generate.x`` and
``train.x`` (:mod:`.inputs`), turned into a :class:`~aiida_annpot.common.config.TrainingConfig`.

These files are untrusted input: they are parsed strictly, line by line; nothing a file names is ever imported or
run, and a malformed file raises :class:`~aiida_annpot.core.errors.AenetFormatError` naming the file and the line.
Nothing here imports torch.
"""

from __future__ import annotations

from .inputs import AenetImport, GenerateInput, TrainInput, import_aenet, read_generate_in, read_train_in
from .setups import FingerprintSetup, descriptor_from_setups, read_fingerprint_setup
from .xsf import read_xsf, read_xsf_folder, write_xsf

__all__ = [
    "AenetImport",
    "FingerprintSetup",
    "GenerateInput",
    "TrainInput",
    "descriptor_from_setups",
    "import_aenet",
    "read_fingerprint_setup",
    "read_generate_in",
    "read_train_in",
    "read_xsf",
    "read_xsf_folder",
    "write_xsf",
]
