# Every target installs what it needs into a local virtual environment (.venv) first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test bench bench-iris bench-optuna bench-methods bench-accounting bench-populations bench-ceiling bench-sampler bench-compile bench-widths bench-peer bench-store bench-longrun bench-constants smoke reproduce clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

## The main job: gradient tuning vs random vs grid search at equal compute, equal wall time and equal execution time, on the
## digits MLP (3 hyperparameters) and on digits with noisy labels (1,280: a weight per training example).
## The command turns on JAX's persistent compilation cache (~/.cache/hypergrad/jax): a second demo compiles
## next to nothing; HYPERGRAD_COMPILATION_CACHE=0 make demo runs without it.
demo: $(STAMP)
	$(BIN)/hypergrad compare --problem digits-mlp,digits-noisy --budget 300 --out results/demo

## The test suite (float64 numerical checks, experiment smoke runs), spread over one worker process per
## core (pytest-xdist; `.venv/bin/python -m pytest tests/test_x.py` runs a part in one process). Work stealing: a
## worker that runs out of tests takes pending ones from the other, so none idles while the slow smoke runs finish.
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist worksteal

## Speed, memory and compilation tables in one run (printed, and written to benchmarks/RESULTS.md; never asserted in tests).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py --out benchmarks/RESULTS.md

## The scikit-learn iris study timed against hypergrad (speed-up, accuracy within one std).
bench-iris: $(STAMP)
	$(BIN)/python benchmarks/iris_study.py --out benchmarks/iris_study.md

## Trial throughput: Optuna's own loop against batched hg.optuna_search and random_search.
bench-optuna: $(STAMP)
	$(BIN)/python benchmarks/optuna_throughput.py --out benchmarks/optuna_throughput.md

## Memory and time against the horizon T for every hypergradient method (about 10 minutes).
bench-methods: $(STAMP)
	$(BIN)/python benchmarks/methods_vs_horizon.py --out benchmarks/methods_vs_horizon.md

## What compute accounting adds to the iris study's search, and its counts per method against the old XLA-based ones.
bench-accounting: $(STAMP)
	$(BIN)/python benchmarks/accounting_cost.py --out benchmarks/accounting_cost.md

## Populations of tuners: a population step's FLOP/s against a search chunk's, and the picks of population tune,
## single tune, random and grid search on four presets over 5 seeds at equal compute and equal wall time (30+ min on 2 cores).
bench-populations: $(STAMP)
	$(BIN)/python benchmarks/populations.py --out benchmarks/populations.md

## digits-noisy's target against the label-cleaning ceiling: oracle example weights, the population with a fixed and
## a resampled training key (ROC AUC of their weights) and random search, 5 seeds (about 5 min on 2 cores).
bench-ceiling: $(STAMP)
	$(BIN)/python benchmarks/noisy_ceiling.py --out benchmarks/noisy_ceiling.md

## The minibatch draw's share of a digits training step, before and after minibatches by epochs (about a minute).
bench-sampler: $(STAMP)
	$(BIN)/python benchmarks/sampler.py --out benchmarks/sampler.md

## Reverse() against training at hidden 50-400 and (100, 100), T=200 and 2000, vmapped, with an XLA profile (about 10 min).
bench-widths: $(STAMP)
	$(BIN)/python benchmarks/reverse_widths.py --out benchmarks/reverse_widths.md

## Compile seconds of random search and tune with JAX's persistent compilation cache off, cold and warm (three processes).
bench-compile: $(STAMP)
	$(BIN)/python benchmarks/compile_cache.py --out benchmarks/compile_cache.md

## What storage= costs: a 256-trial random search with and without the study store, alternated (a few minutes).
bench-store: $(STAMP)
	$(BIN)/python benchmarks/store_overhead.py --out benchmarks/store_overhead.md

## Costs that grow with a run, against 56817dc (the tree before their fixes): progress lines on and off,
## `hypergrad compare`'s planning per budget, RSS and live executables over many scikit-learn fits (a few minutes).
bench-longrun: $(STAMP)
	$(BIN)/python benchmarks/longrun_costs.py --baseline 56817dc --out benchmarks/longrun_costs.md

## Large closed-over arrays (fine-tuning's pretrained weights) embedded as constants against passed as arguments.
bench-constants: $(STAMP)
	$(BIN)/python benchmarks/closed_constants.py --out benchmarks/closed_constants.md

## hypergrad against a PyTorch autograd unroll of the same training, hypergradient and search, per width
## (about 8 minutes; installs torch's CPU build into the venv first: the pinned CPU wheel where the package
## index carries it, else from PyTorch's CPU index; the `bench` extra from PyPI would pull the CUDA build).
bench-peer: $(STAMP)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet 'torch==2.13.0+cpu' \
		|| $(BIN)/python -m pip install --quiet torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/python benchmarks/peer_torch.py --out benchmarks/peer_torch.md

## Every experiment in its seconds-long smoke mode (not _claims.py, a shared module, nor reproduce.py), each into
## results/smoke/<experiment>/: some write files of the same name (report.md, trials.jsonl, results.json).
smoke: $(STAMP)
	for f in experiments/*.py; do case $$(basename $$f) in _*|reproduce.py) continue;; esac; \
		$(BIN)/python $$f --smoke --out results/smoke/$$(basename $$f .py) || exit 1; done

## The classic results, reproduced: every registered experiment's full mode, then experiments/RESULTS.md,
## one line per paper's claim with our number and a verdict (target: under 30 minutes on 2 CPU cores).
reproduce: $(STAMP)
	$(BIN)/python experiments/reproduce.py

clean:
	rm -rf $(VENV) results .pytest_cache
