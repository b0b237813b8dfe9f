# Two entry points (see README): `make train` (the main job) and `make test`.
# Both create the project virtual environment on first use and reuse it afterwards; every step
# fails loudly (make stops at the first failing command) and the set-up is only marked done when
# all of it succeeded, so an interrupted set-up is completed by the next run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu for CPU-only wheels
TORCH_INDEX ?=
MSDA_EXT := torch-ms-deform-attn==0.1.1
STAMP := $(VENV)/.setup-done

# The flagship model's config: the first of these that exists (override with MAIN_CONFIG=...).
MAIN_CANDIDATES := projects/focus_detr/configs/focus_detr_tiny_synthetic.py \
                   projects/dino/configs/dino_tiny_synthetic.py
MAIN_CONFIG ?= $(firstword $(wildcard $(MAIN_CANDIDATES)))
MAIN_OUTPUT ?= output/main_job
MAIN_DEVICE ?= cpu
# extra key=value overrides of the main job, e.g. MAIN_ARGS="train.max_iter=100"
MAIN_ARGS ?=

.PHONY: setup train test clean-venv

setup: $(STAMP)

$(STAMP): setup.py tools/install_detectron2.py Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 9), sys.version' \
	  || { echo "ERROR: $(PYTHON) must be Python >= 3.9 (3.11 tested); set PYTHON=..." >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_PINS)
	$(PY) tools/install_detectron2.py
	@# no build isolation: re-runs need no index (setuptools comes with the venv)
	$(PY) -m pip install --no-build-isolation -e '.[dev,deploy]'
	@# optional compiled CPU/CUDA kernels of the `ext` deformable-attention backend
	$(PY) -m pip install --no-build-isolation $(MSDA_EXT) \
	  || echo "WARNING: $(MSDA_EXT) did not build; the 'ext' backend is off (pytorch is used)"
	@# our own CPU deformable-attention kernel (backend `native`), compiled once here (~30 s) rather
	@# than at the first model call; without a compiler the `ext`/`pytorch` backends are used
	$(PY) -c 'from focus_detr.layers.ms_deform_attn import backend_unavailable_reason as r; why = r("native", "cpu"); print("native deformable-attention kernel:", "WARNING: " + why if why else "built")'
	$(PY) -c 'import torch, detectron2, focus_detr, focus_detr.data; print("set-up OK:", torch.__version__, "detectron2", detectron2.__version__)'
	touch $@

train: setup
	@test -n "$(MAIN_CONFIG)" || { echo "ERROR: none of $(MAIN_CANDIDATES) exists yet; run 'make train MAIN_CONFIG=<config.py>'" >&2; exit 1; }
	time $(PY) tools/train_net.py --config-file $(MAIN_CONFIG) \
	  train.device=$(MAIN_DEVICE) train.output_dir=$(MAIN_OUTPUT) $(MAIN_ARGS)

test: setup
	@# lint and format check first (ruff.toml: pyflakes, syntax errors, one code style): seconds,
	@# and names the line; `ruff format .` fixes the style
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
