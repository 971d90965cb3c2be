#!/usr/bin/env bash
# Idempotent developer/CI setup: a virtual environment in .venv with torch 2.13.0 (CPU) installed FIRST (an
# unpinned torch would pull gigabytes of CUDA wheels), then aiida-annpot with its dev extras, editable; and
# Debian's Quantum ESPRESSO with its pseudopotential files, Debian's CP2K with its data files and aiida-cp2k, and
# Graphviz for provenance graphs.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

export DEBIAN_FRONTEND=noninteractive
# Quantum ESPRESSO: pw.x labels the data; quantum-espresso-data ships the UPF pseudopotentials the tests use.
# Graphviz: `verdi node graph generate` draws the provenance graphs with its `dot`.
if ! command -v pw.x >/dev/null || [ ! -d /usr/share/doc/quantum-espresso/examples ] || ! command -v dot >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-upgrade quantum-espresso quantum-espresso-data graphviz >/dev/null
fi
# CP2K (2023.1 on bookworm): cp2k.psmp labels for the cp2k labeller; cp2k-data ships BASIS_MOLOPT, GTH_POTENTIALS and
# dftd3.dat in /usr/share/cp2k, the data directory built into Debian's binary.
if ! command -v cp2k.psmp >/dev/null || [ ! -f /usr/share/cp2k/BASIS_MOLOPT ]; then
    apt-get update -qq && apt-get install -y -qq --no-upgrade cp2k cp2k-data >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 ships venv separately
        apt-get update -qq && apt-get install -y -qq --no-upgrade python3-venv >/dev/null
        rm -rf "$VENV" && "$PYTHON" -m venv "$VENV"
    fi
fi
stamp="$VENV/.annpot-installed"
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q torch==2.13.0 2>&1 | grep -v '^WARNING: Location' || true
fi
"$VENV/bin/python" -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
# aiida-cp2k (the `cp2k` extra) without its declared dependencies: cp2k-output-tools 0.5.0 pins numpy<2 and
# regex<2022 and pip would downgrade numpy; aiida-cp2k uses only its xyz reader, which works with numpy 2. Its other
# dependencies are installed normally (upf-to-json, ruamel.yaml, Jinja2, Pint<0.25 and pydantic are there already).
# `pip check` reports the two pins of cp2k-output-tools; nothing else.
"$VENV/bin/python" -m pip install -q --no-deps aiida-cp2k==2.1.1 aiida-gaussian-datatypes==0.5.1 \
    cp2k-input-tools==0.9.3 cp2k-output-tools==0.5.0 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -m pip install -q transitions regex 'upf-to-json>=0.9' 'ruamel.yaml>=0.16.5' \
    2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" -c 'import torch, ase, vesin, safetensors, aiida_quantumespresso, aiida_cp2k, aiida_annpot.core.model' # fail loudly if incomplete
echo "$wanted" > "$stamp"
