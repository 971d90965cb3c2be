#!/usr/bin/env bash
# Engine demo: EMT-labelled Cu → a committee of two models → MD exploration with query-by-committee selection.
set -euo pipefail
cd "$(dirname "$0")"
annpot=${ANNPOT:-../../.venv/bin/annpot}
python=${PYTHON:-../../.venv/bin/python}
"$python" make_data.py
"$annpot" train train.yaml --workdir member0
sed 's/^seed: 0/seed: 1/' train.yaml > train_seed1.yaml
"$annpot" train train_seed1.yaml --workdir member1
"$annpot" info member0/model.safetensors
"$annpot" explore explore.yaml --workdir exploration
"$annpot" evaluate member0/model.safetensors train.extxyz --member member1/model.safetensors
echo "outputs: $(pwd)/member0 $(pwd)/member1 $(pwd)/exploration"
