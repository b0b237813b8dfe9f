"""A timm feature extractor (e.g. Swin-T) as a detectron2 `Backbone`.

timm (PyPI, optional: ``pip install timm``) provides Swin and many other backbones; with
``pretrained=False`` nothing is downloaded, so it runs offline; weights come from a checkpoint
with this model's keys (``backbone.body.*``) through `train.init_checkpoint`.
"""

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone

__all__ = ["TimmBackbone"]


class TimmBackbone(Backbone):
    """``timm.create_model(model_name, features_only=True, out_indices=...)`` with detectron2's
    backbone interface: a dict of (N, C, H, W) maps named `out_features`.

    The input is zero-padded on the right and bottom to a multiple of `size_divisibility` (Swin's
    patch embedding and window partitions need it) and each output is cropped back to
    ceil(input / stride), the size a strided convolutional backbone gives, so the padding masks
    that DINO derives from the image sizes still describe the maps.

    Args:
        model_name: timm model name. Default "swin_tiny_patch4_window7_224" (Swin-T).
        out_indices: timm feature indices to return. Default (1, 2, 3): strides 8, 16, 32.
        out_features: names of those outputs, in order. Default ("p1", "p2", "p3") (detrex's).
        pretrained: let timm load its pretrained weights (needs network access). Default False.
        size_divisibility: pad the input to a multiple of this. Default 32.
        **kwargs: passed to `timm.create_model` (e.g. drop_path_rate=0.1).
    """

    def __init__(
        self,
        model_name: str = "swin_tiny_patch4_window7_224",
        out_indices: Sequence[int] = (1, 2, 3),
        out_features: Sequence[str] = ("p1", "p2", "p3"),
        pretrained: bool = False,
        size_divisibility: int = 32,
        **kwargs,
    ):
        super().__init__()
        try:
            import timm
        except ImportError as e:
            raise ImportError(f"TimmBackbone({model_name!r}) needs timm: pip install timm") from e
        if len(out_features) != len(out_indices):
            raise ValueError(f"{len(out_features)} out_features for {len(out_indices)} out_indices")
        if size_divisibility < 1:
            raise ValueError(f"size_divisibility must be >= 1, got {size_divisibility}")
        if "swin" in model_name:  # any input size (padded to windows), not only 224 x 224
            kwargs.setdefault("strict_img_size", False)
        self.body = timm.create_model(
            model_name,
            pretrained=pretrained,
            features_only=True,
            out_indices=tuple(out_indices),
            **kwargs,
        )
        fmt = getattr(self.body, "output_fmt", "NCHW")
        self._channels_last_output = str(getattr(fmt, "value", fmt)) == "NHWC"
        self._pad_multiple = int(size_divisibility)
        self._out_features = list(out_features)
        channels = self.body.feature_info.channels()
        strides = self.body.feature_info.reduction()
        self._out_feature_channels = dict(zip(self._out_features, channels))
        self._out_feature_strides = dict(zip(self._out_features, strides))

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (N, 3, H, W) -> {name: (N, C, ceil(H / stride), ceil(W / stride))}."""
        h, w = x.shape[-2:]
        d = self._pad_multiple
        x = F.pad(x, (0, (-w) % d, 0, (-h) % d))
        outputs: Dict[str, torch.Tensor] = {}
        for name, feature in zip(self._out_features, self.body(x)):
            if self._channels_last_output:
                feature = feature.permute(0, 3, 1, 2)
            s = self._out_feature_strides[name]
            outputs[name] = feature[..., : -(-h // s), : -(-w // s)].contiguous()
        return outputs
