# rtoolkit: `make quickstart` (set-up + the main job) and `make test` (set-up + lint + the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch: on these machines pip finds it on disk; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,onnx,demo

.PHONY: venv install quickstart test lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

install: $(PY)
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[$(EXTRAS)]"

QUICKSTART := runs/quickstart

# A second `make quickstart` reuses the finished model (or resumes an interrupted run); rm -rf runs/quickstart retrains.
quickstart: install
	test -d $(QUICKSTART)/final || $(VENV)/bin/rtoolkit pretrain --out $(QUICKSTART) \
		$(if $(wildcard $(QUICKSTART)/checkpoints),--resume,)
	$(VENV)/bin/rtoolkit predict fill-mask --model $(QUICKSTART)/final "The old man looked at the <mask> and smiled."

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

test: lint
	$(VENV)/bin/python -m pytest -q

format: $(PY)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache build *.egg-info
