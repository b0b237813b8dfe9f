"""Configs, models and inputs for the analysis tools (analyze_model, benchmark, visualize, demo).

A config file is a LazyConfig exposing at least `model` (a model-only file such as
`projects/dino/configs/models/dino_r50.py` works for fixed-size inputs); dataset inputs also
need `dataloader.test`. Overrides are train_net's `key=value` (unknown keys are errors).
"""

import logging
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import detectron2.data.transforms as T
import torch
from detectron2.config import instantiate
from detectron2.data.detection_utils import read_image
from detectron2.structures import ImageList
from torch import nn

from ..engine.checkpoint import SafeDetectionCheckpointer
from ..engine.config import load_config as load_strict_config
from ..evaluation.ground_truth import GroundTruthBoxes
from ..modeling.inference import inference_config_keys, instantiate_model

__all__ = [
    "IMAGE_EXTENSIONS",
    "build_model",
    "dataset_inputs",
    "describe_encoder",
    "expand_image_paths",
    "image_file_inputs",
    "image_list",
    "load_config",
    "resolve_device",
    "synthetic_inputs",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def load_config(path: str, overrides: Sequence[str] = ()):
    """LazyConfig `path` with train_net-style `key=value` overrides applied
    (`focus_detr.engine.config.load_config`); a file without `train` still takes
    `train.init_checkpoint=...`.

    Raises:
        FileNotFoundError: no such file. KeyError: the config defines no `model`, or an
        override names an unknown key.
    """
    return load_strict_config(
        path,
        overrides,
        required=("model",),
        defaults={"train": {"init_checkpoint": ""}},
        extra_keys=inference_config_keys,
    )


def resolve_device(device: Optional[str] = None) -> torch.device:
    """`device`, or CUDA when available, else CPU. A CUDA request without CUDA is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} requested but CUDA is not available; use --device cpu")
    return device


def build_model(cfg, device="cpu", checkpoint: Optional[str] = None) -> nn.Module:
    """Instantiate `cfg.model` in eval mode on `device` with its inference transforms
    (`focus_detr.modeling.instantiate_model`: the config's `model.fold_backbone_norms`,
    `model.reduced_precision`) and load weights.

    Args:
        checkpoint: weights file (detrex/detectron2/this project's .pth, loaded `weights_only`
            through `SafeDetectionCheckpointer`, so published key names work; strict: a
            checkpoint that misses any of the model's weights, holds others or other shapes
            raises `CheckpointMismatchError`, a missing or corrupt file an error naming it); default
            `cfg.train.init_checkpoint` when the config has one. Without any, the model keeps its
            random initialization and a warning says so.
    """
    model = instantiate_model(cfg.model)
    if checkpoint is None and "train" in cfg:
        checkpoint = cfg.train.get("init_checkpoint", None) or None
    model.to(device).eval()
    if checkpoint:
        SafeDetectionCheckpointer(model, strict=True).load(checkpoint)
        logger.info(f"loaded weights from {checkpoint}")
    else:
        logger.warning(
            "no checkpoint given (train.init_checkpoint=...): the model is randomly "
            "initialized; costs are meaningful, predictions and selections are not"
        )
    return model


def synthetic_inputs(height: int, width: int, num: int = 1, seed: int = 0) -> List[Dict[str, Any]]:
    """`num` detectron2 input dicts of a random uint8 RGB image (3, height, width)."""
    if height <= 0 or width <= 0:
        raise ValueError(f"input size must be positive, got {height}x{width}")
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8),
            "height": height,
            "width": width,
            "file_name": f"synthetic_{height}x{width}_{i}",
        }
        for i in range(num)
    ]


def dataset_inputs(cfg, num: int, with_annotations: bool = False) -> List[Dict[str, Any]]:
    """The first `num` inputs of `cfg.dataloader.test` (the mapped, resized test images).

    With `with_annotations`, each dict also gets "instances" (ground-truth boxes in input
    pixels), read from the dataset's own annotations and scaled like the image (the test mapper
    drops them).
    """
    if "dataloader" not in cfg or "test" not in cfg.dataloader:
        raise KeyError(
            "dataset inputs need `dataloader.test` in the config; use a full config "
            "(e.g. projects/focus_detr/configs/focus_detr_tiny_synthetic.py) or a fixed "
            "--input-size"
        )
    if num <= 0:
        raise ValueError(f"number of inputs must be positive, got {num}")
    loader = instantiate(cfg.dataloader.test)
    inputs = []
    for batch in loader:
        inputs.extend(batch)
        if len(inputs) >= num:
            break
    inputs = inputs[:num]
    if with_annotations:
        names = cfg.dataloader.test.dataset.names
        gt = GroundTruthBoxes(names if isinstance(names, str) else list(names))
        for x in inputs:
            x["instances"] = gt.instances(x)
    return inputs


def expand_image_paths(paths: Sequence[str]) -> List[str]:
    """Image files among `paths`, folders expanded (sorted, by `IMAGE_EXTENSIONS`).

    Raises:
        FileNotFoundError: a path does not exist, or no image is found.
    """
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(
                os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {list(paths)}")
    return files


def image_file_inputs(cfg, paths: Sequence[str]) -> List[Dict[str, Any]]:
    """Input dicts of image files, resized like the config's test mapper (its `augmentation`
    and `img_format`, when the config has `dataloader.test.mapper`; else unchanged, RGB).
    "height"/"width" are the original size, so detections come back in file pixels.

    Raises:
        OSError: a file cannot be decoded (the message names it).
    """
    return list(iter_image_file_inputs(cfg, paths))


def iter_image_file_inputs(
    cfg, paths: Sequence[str], on_unreadable: Optional[Callable[[str, Exception], None]] = None
) -> Iterator[Dict[str, Any]]:
    """`image_file_inputs` one file at a time (decoded when reached). A file that cannot be
    decoded (truncated, not an image) is passed to `on_unreadable(path, error)` and skipped;
    without `on_unreadable` it raises an OSError naming the file."""
    mapper = None
    if "dataloader" in cfg and "test" in cfg.dataloader and "mapper" in cfg.dataloader.test:
        mapper = cfg.dataloader.test.mapper
    augmentation = T.AugmentationList(
        instantiate(mapper.augmentation)
        if mapper is not None and mapper.get("augmentation")
        else []
    )
    fmt = mapper.get("img_format", "RGB") if mapper is not None else "RGB"
    for path in expand_image_paths(paths):
        try:
            image = read_image(path, format=fmt)
        except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for broken files
            if on_unreadable is None:
                raise OSError(f"cannot decode image file {path}: {e}") from e
            on_unreadable(path, e)
            continue
        h, w = image.shape[:2]
        aug = T.AugInput(image)
        augmentation(aug)
        tensor = torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1)))
        yield {"image": tensor, "height": h, "width": w, "file_name": path}


def image_list(model: nn.Module, batched_inputs: List[Dict[str, Any]]) -> ImageList:
    """Normalized, padded batch with plain-int image sizes (safe under jit tracing, where
    `ImageList.from_tensors` records sizes as tensors)."""
    images = [
        (x["image"].to(model.device) - model.pixel_mean) / model.pixel_std for x in batched_inputs
    ]
    sizes: List[Tuple[int, int]] = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    batch = ImageList.from_tensors(images, getattr(model, "size_divisibility", 0))
    return ImageList(batch.tensor, sizes)


def describe_encoder(model: nn.Module) -> Dict[str, Any]:
    """{"method": "dense" | "sparse" | "focus" | class name, "keep_ratio": float or None,
    "layer_keep_fractions": [fraction of the valid tokens each encoder layer updates] or None,
    "encoder": class name} of a DINO-family model.

    Focus-DETR's `keep_ratio` is the mean over layers of its cascade (layer j keeps
    keep_ratio / mean(cascade) * cascade[j] of the tokens, e.g. 0.4 and 0.2 for 0.3 with cascade
    (1, 0.5)); Sparse DETR keeps `keep_ratio` in every layer. The fractions leave out the one
    token the published counts add per image."""
    encoder = model.transformer.encoder
    name = type(encoder).__name__
    if hasattr(encoder, "selector"):  # FocusEncoder
        selector = encoder.selector
        cascade = [float(c) for c in selector.cascade_ratios]
        return {
            "method": "focus",
            "keep_ratio": float(selector.keep_ratio),
            "layer_keep_fractions": [
                round(min(1.0, selector.foreground_ratio * c), 6) for c in cascade
            ],
            "encoder": name,
        }
    if hasattr(encoder, "keep_ratio"):  # SparseDetrEncoder
        layers = len(getattr(encoder, "layers", ())) or None
        return {
            "method": "sparse",
            "keep_ratio": float(encoder.keep_ratio),
            "layer_keep_fractions": [float(encoder.keep_ratio)] * layers if layers else None,
            "encoder": name,
        }
    if name == "DeformableEncoder":
        layers = len(getattr(encoder, "layers", ())) or None
        return {
            "method": "dense",
            "keep_ratio": 1.0,
            "layer_keep_fractions": [1.0] * layers if layers else None,
            "encoder": name,
        }
    return {"method": name, "keep_ratio": None, "layer_keep_fractions": None, "encoder": name}


def keep_description(info: Dict[str, Any]) -> str:
    """What the encoder of `describe_encoder`'s `info` keeps, for the tools' output, e.g.
    "keep ratio 0.3 = mean of the layers' 0.40, 0.20"."""
    ratio, layers = info.get("keep_ratio"), info.get("layer_keep_fractions")
    if info.get("method") == "dense":
        return "keeps every token"
    if ratio is None:
        return "keep ratio unknown"
    if not layers:
        return f"keep ratio {ratio:g}"
    if max(layers) - min(layers) < 1e-9:
        return f"keep ratio {ratio:g} in each of {len(layers)} layers"
    return f"keep ratio {ratio:g} = mean of the layers' " + ", ".join(f"{f:.2f}" for f in layers)
