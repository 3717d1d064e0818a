# Two commands do all the set-up on a fresh machine:
#   make demo   - creates .venv from pyproject.toml, then runs the main job on the built-in phantom
#   make test   - creates .venv from pyproject.toml, then runs the test suite
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: demo test benchmark

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nnUNetv2_diffusion_demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/iteration_cost.py
