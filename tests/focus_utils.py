"""Test helpers for the Focus-DETR components: build `EncoderInputs` the way the DINO transformer
does (padded canvas, padding mask, valid ratios, reference points, position embedding, two-stage
projection), for a batch of images of different sizes or for one image alone."""

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

from focus_detr.modeling.transformer.encoder_api import EncoderInputs

STRIDES = (8, 16, 32, 64)


def level_sizes(
    image_hw: Tuple[int, int], strides: Sequence[int] = STRIDES
) -> List[Tuple[int, int]]:
    return [(math.ceil(image_hw[0] / s), math.ceil(image_hw[1] / s)) for s in strides]


def sine_position(valid_h: int, valid_w: int, h: int, w: int, dim: int) -> torch.Tensor:
    """(h, w, dim) sine embedding of coordinates normalised by the VALID size (as detectron2-style
    DETR embeddings do), so that a valid token's embedding does not depend on padding."""
    y = (torch.arange(h, dtype=torch.float64) + 0.5) / valid_h
    x = (torch.arange(w, dtype=torch.float64) + 0.5) / valid_w
    freq = 10000.0 ** (-torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    ey = torch.cat([(y[:, None] * freq * 6.28).sin(), (y[:, None] * freq * 6.28).cos()], -1)
    ex = torch.cat([(x[:, None] * freq * 6.28).sin(), (x[:, None] * freq * 6.28).cos()], -1)
    return torch.cat([ey[:, None, :].expand(h, w, -1), ex[None, :, :].expand(h, w, -1)], -1).float()


class Projection(nn.Module):
    """Stand-in for the transformer's two-stage projection: zero padded tokens, Linear, LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.padding_mask = None

    def forward(self, x):
        if self.padding_mask is not None:
            x = x.masked_fill(self.padding_mask[..., None], 0.0)
        return self.norm(self.linear(x))


class Scene:
    """Random multi-scale features for several images of different sizes.

    Each image i has per-level feature maps (C, h_il, w_il); `batch()` pads them into a canvas
    (padded values: `pad_value` noise, which must never matter) and `alone(i)` gives image i by
    itself. `batch_index(i)` maps image i's own flattened token order to the batch's flat indices.
    """

    def __init__(
        self,
        image_sizes: Sequence[Tuple[int, int]],
        dim: int = 32,
        seed: int = 0,
        strides: Sequence[int] = STRIDES,
        dtype=torch.float32,
    ):
        g = torch.Generator().manual_seed(seed)
        self.dim, self.strides, self.dtype = dim, tuple(strides), dtype
        self.sizes = [level_sizes(hw, strides) for hw in image_sizes]
        self.features = [
            [torch.randn(dim, h, w, generator=g).to(dtype) for h, w in sizes]
            for sizes in self.sizes
        ]
        self.level_embed = torch.randn(len(strides), dim, generator=g).to(dtype) * 0.2

    def _build(self, images: List[int], pad_seed: int) -> EncoderInputs:
        n, num_levels = len(images), len(self.strides)
        shapes = [
            (max(self.sizes[i][l][0] for i in images), max(self.sizes[i][l][1] for i in images))
            for l in range(num_levels)
        ]
        g = torch.Generator().manual_seed(pad_seed)
        tokens, pos, masks, ratios = [], [], [], []
        for l, (h, w) in enumerate(shapes):
            canvas = torch.randn(n, h, w, self.dim, generator=g).to(self.dtype) * 3.0
            mask = torch.ones(n, h, w, dtype=torch.bool)
            level_pos = torch.zeros(n, h, w, self.dim, dtype=self.dtype)
            ratio = torch.zeros(n, 2)
            for b, i in enumerate(images):  # test-data construction only
                vh, vw = self.sizes[i][l]
                canvas[b, :vh, :vw] = self.features[i][l].permute(1, 2, 0)
                mask[b, :vh, :vw] = False
                level_pos[b] = sine_position(vh, vw, h, w, self.dim).to(self.dtype)
                ratio[b] = torch.tensor([vw / w, vh / h])
            tokens.append(canvas.flatten(1, 2))
            pos.append(level_pos.flatten(1, 2) + self.level_embed[l])
            masks.append(mask.flatten(1))
            ratios.append(ratio)
        spatial_shapes = torch.tensor(shapes, dtype=torch.int64)
        level_start_index = torch.cat(
            [spatial_shapes.new_zeros(1), spatial_shapes.prod(1).cumsum(0)[:-1]]
        )
        valid_ratios = torch.stack(ratios, 1).to(self.dtype)  # (N, L, 2) (w, h)
        refs = []
        for l, (h, w) in enumerate(shapes):
            ry, rx = torch.meshgrid(
                torch.arange(h, dtype=self.dtype) + 0.5,
                torch.arange(w, dtype=self.dtype) + 0.5,
                indexing="ij",
            )
            ry = ry.reshape(1, -1) / (valid_ratios[:, l, 1:2] * h)
            rx = rx.reshape(1, -1) / (valid_ratios[:, l, 0:1] * w)
            refs.append(torch.stack([rx, ry], -1))
        reference_points = torch.cat(refs, 1)[:, :, None] * valid_ratios[:, None]
        padding_mask = torch.cat(masks, 1)
        inputs = EncoderInputs(
            tokens=torch.cat(tokens, 1),
            pos=torch.cat(pos, 1),
            padding_mask=padding_mask,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            valid_ratios=valid_ratios,
            reference_points=reference_points,
            strides=list(self.strides),
        )
        return inputs

    def batch(self, images: Sequence[int] = None, pad_seed: int = 1) -> EncoderInputs:
        images = list(range(len(self.sizes))) if images is None else list(images)
        return self._build(images, pad_seed)

    def alone(self, i: int) -> EncoderInputs:
        return self._build([i], 0)

    def batch_index(self, i: int, images: Sequence[int] = None) -> torch.Tensor:
        """Flat batch indices of image i's tokens, in image i's own flattened order."""
        images = list(range(len(self.sizes))) if images is None else list(images)
        shapes = [
            (max(self.sizes[j][l][0] for j in images), max(self.sizes[j][l][1] for j in images))
            for l in range(len(self.strides))
        ]
        out, start = [], 0
        for l, (h, w) in enumerate(shapes):
            vh, vw = self.sizes[i][l]
            r, c = torch.meshgrid(torch.arange(vh), torch.arange(vw), indexing="ij")
            out.append(start + r.reshape(-1) * w + c.reshape(-1))
            start += h * w
        return torch.cat(out)


def attach_projection(
    inputs: EncoderInputs, projection: Projection, class_head=None
) -> EncoderInputs:
    """Give `inputs` a two-stage projection bound to its padding mask and a class head."""

    def project(x, _mask=inputs.padding_mask):
        projection.padding_mask = _mask
        return projection(x)

    inputs.proposal_projection = project
    inputs.class_head = class_head
    return inputs
