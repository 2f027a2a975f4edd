# cadence: make demo | make test | make check | make bench | make dashboard
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench dashboard lint check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,mazes,libero,ray,gpu]"
	touch $(STAMP)

install: $(STAMP)

## SRL-8 against SAC-1 on InvertedPendulum-v5: train both, sweep FAS, print the table, write the plot and TensorBoard logs.
demo: $(STAMP)
	$(PY) scripts/demo.py

## The fast test suite (what CI runs).
test: $(STAMP)
	$(PY) -m pytest

## Measured comparisons; results land in benchmarks/results/.
bench: $(STAMP)
	$(PY) benchmarks/sac_throughput.py
	$(PY) benchmarks/replay.py
	$(PY) benchmarks/ensemble_throughput.py
	$(PY) benchmarks/batched_rollout.py
	$(PY) benchmarks/morec_synthetic.py
	$(PY) benchmarks/sac_learning.py --env InvertedPendulum-v5 --seeds 1 2 3 --steps 20000
	$(PY) benchmarks/sac_learning.py --env Hopper-v5 --seeds 1 2 --steps 300000
	$(PY) benchmarks/srl_fas.py --env InvertedPendulum-v5 --seeds 1 2 3 --steps 20000
	$(PY) benchmarks/srl_fas.py --env Reacher-v5 --seeds 1 2 3 --steps 30000
	$(PY) benchmarks/srl_fas.py --env Hopper-v5 --seeds 1 --steps 50000
	$(PY) benchmarks/srl_throughput.py --threads 1
	$(VENV)/bin/cadence collect --env Hopper-v5 --kind random --record-reference
	$(VENV)/bin/cadence collect --env Hopper-v5 --kind medium-expert --policy-steps 300000 --policy-seed 2 --record-reference
	$(PY) benchmarks/offline_mbrl.py --datasets hopper-medium --seeds 1 2 --heldout hopper-expert
	$(PY) benchmarks/continual_mbrl.py
	$(PY) benchmarks/curricula.py --suite physics
	$(PY) benchmarks/curricula.py --suite mazes
	$(PY) benchmarks/mbes_speed.py
	$(PY) benchmarks/continual_offline.py
	$(PY) benchmarks/libero.py
	$(PY) benchmarks/sweep_overhead.py

dashboard: $(STAMP)
	$(VENV)/bin/cadence dashboard --logdir runs

## ruff over every Python file.
lint: $(STAMP)
	$(VENV)/bin/ruff check cadence tests scripts benchmarks

## What CI runs: the tests, then ruff.
check: test lint

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
