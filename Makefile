# `make test` is the project's test command (README, .ci/run): it installs what is missing, then runs pytest.
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: install test test-quickstart lint bench demo campaign

install:
	bash scripts/setup.sh

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The quick start's campaign as a test: converged, and its potential meets the targets on its own test set
test-quickstart: install
	$(VENV)/bin/python -m pytest -m quickstart tests/test_quick_start.py $(PYTEST_ARGS)

# The real-CP2K tests (labeller physics and a water campaign, about 5.5 minutes), kept out of `make test`'s budget
test-cp2k: install
	$(VENV)/bin/python -m pytest -m cp2k $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check aiida_annpot tests bench
	$(VENV)/bin/ruff format --check aiida_annpot tests bench

bench: install
	$(VENV)/bin/python bench/inference.py
	$(VENV)/bin/python bench/training.py

demo: install
	bash examples/cu_emt/run.sh

# The quick start's main job: a real Si active-learning campaign with pw.x on a `verdi presto` profile in .aiida/
campaign: install
	$(VENV)/bin/python examples/si_campaign/run.py
