"""Helpers for setting up a local AiiDA stack: codes and pseudopotential families from Debian packages."""
