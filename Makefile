# rtoolkit: `make quickstart` (set-up + the main job), `make test` (set-up + lint + the test suite) and
# `make gpu-check` (on an NVIDIA machine that has PyTorch with CUDA: the GPU tests and benchmarks, in one command).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch: on these machines pip finds it on disk; a bare `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,onnx,demo

.PHONY: venv install quickstart test lint format clean gpu-check gpu-wheels

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
		$(if $(wildcard $(QUICKSTART)/checkpoints $(QUICKSTART)/run_config.json),--resume,)
	$(VENV)/bin/rtoolkit predict fill-mask --model $(QUICKSTART)/final "The old man looked at the <mask> and smiled."

# The TensorRT type stubs install only without their dependencies (TensorRT itself needs a GPU machine), so they go
# into .typecheck, apart from the venv, where basedpyright reads them (pyproject.toml, [tool.basedpyright]).
TENSORRT_STUBS ?= tensorrt-stubs==10.13.0.35.1
TYPECHECK := .typecheck
$(TYPECHECK)/tensorrt/__init__.pyi: | $(PY)
	$(PIP) install --quiet --no-deps --target $(TYPECHECK) "$(TENSORRT_STUBS)"

lint: install $(TYPECHECK)/tensorrt/__init__.pyi
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/basedpyright

test: lint
	$(VENV)/bin/python -m pytest -q

# Uses the machine's own Python and PyTorch (no venv, no downloads): pip install --no-deps -e ., then every step.
GPU_PYTHON ?= python3
GPU_CHECK_OUT ?= runs/gpu-check
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py --install --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# On a machine with network: the wheels of required packages a GPU image may lack, for the Python versions of
# common CUDA images; `make gpu-check` installs them from .gpu-data/wheels (carry that folder to the GPU machine).
gpu-wheels: $(PY)
	for v in 3.10 3.11 3.12 3.13; do $(PIP) download --quiet --no-deps --only-binary=:all: \
		--platform manylinux2014_x86_64 --python-version $$v -d .gpu-data/wheels "sentencex>=1.0.14"; done

format: $(PY)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(TYPECHECK) runs .pytest_cache .ruff_cache build *.egg-info
