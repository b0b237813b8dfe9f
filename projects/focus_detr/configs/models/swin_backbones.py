"""The published Focus-DETR Swin backbones (detrex's `focus_detr_swin_*` model configs): the
`SwinTransformer` settings of each size and `use_swin`, which puts one into a model config with
its stages 1-3 (strides 8/16/32) feeding the channel mapper."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec

from focus_detr.modeling.backbone import SwinTransformer

SWIN_TINY_224 = dict(
    pretrain_img_size=224,
    embed_dim=96,
    depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24),
    window_size=7,
    drop_path_rate=0.1,
)
SWIN_SMALL_224 = dict(
    pretrain_img_size=224,
    embed_dim=96,
    depths=(2, 2, 18, 2),
    num_heads=(3, 6, 12, 24),
    window_size=7,
    drop_path_rate=0.2,
)
SWIN_BASE_384 = dict(
    pretrain_img_size=384,
    embed_dim=128,
    depths=(2, 2, 18, 2),
    num_heads=(4, 8, 16, 32),
    window_size=12,
    drop_path_rate=0.2,
)
SWIN_LARGE_224 = dict(
    pretrain_img_size=224,
    embed_dim=192,
    depths=(2, 2, 18, 2),
    num_heads=(6, 12, 24, 48),
    window_size=7,
    drop_path_rate=0.2,
)
SWIN_LARGE_384 = dict(SWIN_LARGE_224, pretrain_img_size=384, window_size=12)

OUT_INDICES = (1, 2, 3)


def use_swin(model, settings: dict):
    """Give the LazyConfig `model` the Swin backbone of `settings` (one of the dicts above) and
    the channel mapper inputs of its stages 1-3."""
    model.backbone = L(SwinTransformer)(**settings, out_indices=OUT_INDICES)
    model.neck.input_shapes = {
        f"p{i}": ShapeSpec(channels=settings["embed_dim"] * 2**i, stride=4 * 2**i)
        for i in OUT_INDICES
    }
    model.neck.in_features = [f"p{i}" for i in OUT_INDICES]
    return model
