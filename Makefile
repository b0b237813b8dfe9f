# Two entry points (see README): `make train` (the main job) and `make test`.
# Both create the project virtual environment on first use and reuse it afterwards.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
MSDA_EXT := torch-ms-deform-attn==0.1.1
STAMP := $(VENV)/.setup-done
MAIN_CONFIG ?= projects/dino/configs/dino_tiny_synthetic.py
MAIN_OUTPUT ?= output/main_job

.PHONY: setup train test clean-venv

setup: $(STAMP)

# Each step fails loudly (`set -e` semantics of make); the stamp is written only when all passed.
$(STAMP): setup.py tools/install_detectron2.py Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install -e '.[dev]'
	@# optional compiled CPU/CUDA kernels of the `ext` deformable-attention backend
	$(PY) -m pip install --no-build-isolation $(MSDA_EXT) \
	  || echo "WARNING: $(MSDA_EXT) did not build; the 'ext' backend is off (pytorch is used)"
	touch $@

train: setup
	$(PY) tools/train_net.py --config-file $(MAIN_CONFIG) train.output_dir=$(MAIN_OUTPUT)

test: setup
	$(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
