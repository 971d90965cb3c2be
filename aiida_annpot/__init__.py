"""aiida-annpot: aenet-style neural-network potentials built by active learning, with AiiDA provenance.

The package has two sides: :mod:`aiida_annpot.core` (PyTorch engine, never imports AiiDA) and the AiiDA plugin
modules. :mod:`aiida_annpot.common` holds configuration schemas shared by both.
"""

__version__ = "0.1.0"
