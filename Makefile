# gdro: the two commands a newcomer types are `make demo` and `make test`.
# Both build .venv on first use (Python 3.10+, pip and venv are all they need).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.gdro-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: install demo demo-sim test test-floor lint typecheck docs experiment experiment-short bench clean

install: $(STAMP)

# torch==2.13.0 goes in first and is pinned through constraints.txt: it resolves to the CPU
# build here, while an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[cli,torch,verl,trl,docs,dev]"
	touch $(STAMP)

# The main job: GRPO + Prompt-GDRO on the embedded 1M-parameter Llama (cached SFT warm-up, then
# 200 steps with a progress bar, held-out evaluation and plots in runs/demo/report/).
demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/gdro train --out runs/demo

# The simulation lab's demo: the curriculum emerging on a simulated population (about 40 s).
demo-sim: $(STAMP)
	$(BIN)/gdro simulate --preset demo --out runs/demo-sim

lint: $(STAMP)
	$(BIN)/ruff check gdro_core gdro_lab gdro_cli adapters tests benchmarks examples
	$(BIN)/ruff format --check gdro_core gdro_lab gdro_cli adapters/gdro_torch adapters/gdro_verl adapters/gdro_trl

typecheck: $(STAMP)
	$(BIN)/mypy gdro_core gdro_lab gdro_cli adapters/gdro_verl adapters/gdro_trl adapters/gdro_torch

docs: $(STAMP)
	$(BIN)/mkdocs build --strict -q

test: $(STAMP) lint typecheck docs test-floor
	$(BIN)/python -m pytest -q

# The core's tests on the oldest numpy and numba that pyproject allows, in their own environment.
FLOOR := .venv-floor
test-floor:
	test -x $(FLOOR)/bin/python || $(PYTHON) -m venv $(FLOOR)
	test -f $(FLOOR)/.ok || ($(FLOOR)/bin/python -m pip install -q "numpy==1.24.4" "numba==0.59.1" \
		"pytest>=8" "hypothesis>=6.100" && touch $(FLOOR)/.ok)
	PYTHONPATH=. $(FLOOR)/bin/python -m pytest -q -p no:cacheprovider -m "not slow" tests/core

# The experiment of docs/results.md. `make experiment` runs the pre-registered long-horizon grid:
# 5 arms x 5 replicates (each replicate with its own warm-up), 1,000 steps of 32 prompts x 8
# rollouts on 1,000 prompts, 500 held-out prompts x 16 samples every 100 steps: about 8.4
# core-hours at one thread, run as two processes on the 2 cores. Finished runs are skipped and an
# interrupted run resumes from its latest checkpoint, so it can be run again after a stop.
EXPERIMENT_ENV = OMP_NUM_THREADS=1
LONG = benchmarks/experiment.py --grid long --out runs/experiment-long
experiment: $(STAMP)
	$(EXPERIMENT_ENV) $(BIN)/python $(LONG) --replicates 0 2 4 & \
	$(EXPERIMENT_ENV) $(BIN)/python $(LONG) --replicates 1 3; wait
	$(EXPERIMENT_ENV) $(BIN)/python $(LONG)

# The short grids of docs/results.md (100 steps, where the controllers are near-inactive): three
# grids of 6 arms x 5 replicates, about 2.5 hours on 2 idle cores with the warm-ups cached.
experiment-short: $(STAMP)
	$(EXPERIMENT_ENV) $(BIN)/python benchmarks/experiment.py --grid cpu --out runs/experiment-cpu
	$(EXPERIMENT_ENV) $(BIN)/python benchmarks/experiment.py --grid cpu --out runs/experiment-cpu-256 \
		--task "addition:min_digits=1,max_digits=5,size=256,eval_size=500"
	$(EXPERIMENT_ENV) $(BIN)/python benchmarks/experiment.py --grid cpu --out runs/experiment-chain-sum \
		--task "chain_sum:min_terms=2,max_terms=3,min_digits=1,max_digits=3,size=400,eval_size=500"

bench: $(STAMP)
	$(BIN)/python benchmarks/controller_overhead.py
	$(BIN)/python benchmarks/scale.py --quick
	$(BIN)/python benchmarks/verl_step_cost.py --json benchmarks/results/verl_step_cost.json
	$(BIN)/python benchmarks/trl_overhead.py --json benchmarks/results/trl_overhead.json

clean:
	rm -rf $(VENV) $(FLOOR) .pytest_cache .mypy_cache .ruff_cache .hypothesis
