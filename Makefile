# Two commands do everything on a fresh machine (see README.rst):
#   make demo   installs into .venv and runs the demo on the bundled data
#   make test   installs into .venv and runs the whole test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --constraint constraints.txt --editable ".[test]"
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m deepconsensus_plugin.demo

test: $(STAMP)
	$(PY) -m pytest
