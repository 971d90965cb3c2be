"""The aiida-annpot engine: descriptors, per-element networks, committees, training and exploration.

Runs on cluster nodes as the ``annpot`` command; depends on torch, numpy, ASE and vesin, and never on AiiDA.
"""
