#!/usr/bin/env python
"""focus_detr: Focus-DETR, DINO and Sparse DETR for detectron2.

detectron2 itself is not a requirement here: it publishes no installable distribution. Run
`python tools/install_detectron2.py` (the Makefile does) or build detectron2 yourself.
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="focus_detr",
    version="0.1.0",
    description="Focus-DETR (ICCV 2023), DINO and Sparse DETR as a detectron2 plugin",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=("focus_detr", "focus_detr.*")),
    # the `native` deformable-attention backend compiles this source on first use
    package_data={
        "focus_detr.layers.ms_deform_attn": ["csrc/*.cpp"],
        "focus_detr.data": ["published_figures.json"],
    },
    install_requires=[
        "torch>=2.4",  # torch.library.custom_op, device-type autocast queries; tested with 2.14.1;
        # no exact pin so that users keep their build
        "torchvision>=0.19",  # the torch 2.4 release
        "numpy>=1.26",
        "Pillow>=10.3",
        "scipy>=1.10",
        "fvcore>=0.1.5",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
        "pycocotools>=2.0.6",
        "matplotlib>=3.7",
        "tensorboard>=2.12",
        "tqdm>=4.60",
        "opencv-python-headless>=4.8",  # detectron2 Visualizer (tools/demo.py)
        "ninja>=1.11",  # builds the `native` deformable-attention CPU kernel on first use
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "timm>=1.0", "ruff>=0.6"],
        "timm": ["timm>=1.0"],  # TimmBackbone (any timm feature extractor)
        # focus_detr.deploy / tools/export_model.py: ONNX export, ONNX Runtime and OpenVINO
        "deploy": ["onnx>=1.16", "onnxruntime>=1.18", "openvino>=2024.0"],
    },
)
