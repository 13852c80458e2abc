# The two commands of the README: `make demo` and `make test`. Each installs what is
# missing first (virtualenv, pinned packages, Kafka/Flink jars, bootstrap model).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: setup demo test test-unit test-pipeline test-integration down status bench lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (apache-flink 2.2 wheels); set PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,peers,audit]'
	# Its metadata requires the full `tensorflow` wheel; we run tensorflow-cpu.
	$(BIN)/pip install -q --no-deps tensorflow-serving-api==2.20.0
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)
	$(BIN)/rtd setup

demo: setup
	$(BIN)/rtd demo

test: setup
	$(BIN)/python -m pytest tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m unit tests

test-pipeline: setup
	$(BIN)/python -m pytest -m pipeline tests

test-integration: setup
	$(BIN)/python -m pytest -m integration tests

bench: setup
	$(BIN)/rtd bench --preset short

down:
	$(BIN)/rtd stack down

status:
	$(BIN)/rtd stack status

clean: down
	rm -rf .stack .stack-test models
