"""FLOP counting of DINO-family detectors with fvcore, split into the model's parts.

Counting convention (fvcore's): one fused multiply-add = one flop; convolutions, linear layers,
matrix products and normalizations are counted by fvcore's handles; elementwise arithmetic,
softmax, sigmoid, top-k, gather/scatter are not (fvcore leaves them out). Three ops fvcore does
not know are counted here:

- deformable attention (`focus_detr::ms_deform_attn`, through the op's `MSDA_FLOP_HANDLES`):
  5 multiply-adds per sampled point and channel (4 for the bilinear corners, 1 for the attention
  weight), i.e. 5 * N * Q * heads * levels * points * head_dim. detrex's pure-PyTorch path is
  counted by fvcore as `grid_sampler` only, i.e. 4 per point and channel: ours is higher by
  N * Q * heads * levels * points * head_dim per call (0.5 GFLOPs for DINO-R50 at 800x1216).
- scaled-dot-product attention (`aten::scaled_dot_product_attention`, what
  `nn.MultiheadAttention` runs with need_weights=False): 2 * N * heads * Lq * Lk * head_dim
  (q k^T and attention x v), the count fvcore gives the equivalent bmm path.
- batched matrix product plus bias (`aten::baddbmm`, e.g. several layers' projections of one map
  in one call): B * n * k * m, the count of B separate linear layers.

Parts (a partition: they sum to the total exactly): backbone; neck (channel mapper + position
embedding); encoder (`transformer.encoder`, including the heads it calls, e.g. Focus's shared
class head); decoder (`transformer.decoder` forward, including its per-layer prediction heads);
heads (the rest of the transformer: two-stage proposal projection, proposal class/box heads,
query selection); other (outside these modules: pre/post-processing). Ops are attributed to the
modules that are *executing* (fvcore's "caller" mode), so a head called by the encoder counts for
the encoder, not for the decoder that owns it.
"""

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis
from torch import nn

from ..layers.ms_deform_attn import MSDA_FLOP_HANDLES
from .model_io import image_list

__all__ = [
    "ACTIVATION_HANDLES",
    "FLOP_HANDLES",
    "MODEL_PARTS",
    "InferenceTracer",
    "activation_analysis",
    "flop_analysis",
    "model_part_counts",
    "module_counts",
    "model_part_parameters",
    "baddbmm_flop_jit",
    "sdpa_flop_jit",
    "sdpa_flops",
]

MODEL_PARTS = ("backbone", "neck", "encoder", "decoder", "heads", "other")
# part -> the module paths (relative to the detector) whose calls it covers
_PART_MODULES = OrderedDict(
    backbone=("backbone",),
    neck=("neck", "position_embedding"),
    encoder=("transformer.encoder",),
    decoder=("transformer.decoder",),
)


def sdpa_flops(batch_heads: int, q_len: int, k_len: int, head_dim: int, v_dim: int) -> int:
    """Multiply-adds of softmax(q k^T) v for (B*heads) q (Lq, d), k (Lk, d), v (Lk, dv)."""
    return batch_heads * q_len * k_len * (head_dim + v_dim)


def _sizes(value) -> List[int]:
    return value.type().sizes() if value.isCompleteTensor() else []


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle of `aten::scaled_dot_product_attention(q, k, v, ...)`: q (..., Lq, d),
    k (..., Lk, d), v (..., Lk, dv), any leading batch/head dims."""
    q, k, v = (_sizes(x) for x in inputs[:3])
    if not (q and k and v):
        raise ValueError("scaled_dot_product_attention FLOP handle: incomplete input shapes")
    batch = 1
    for d in q[:-2]:
        batch *= d
    return sdpa_flops(batch, q[-2], k[-2], q[-1], v[-1])


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """fvcore handle of `aten::baddbmm(bias, batch1 (B, n, k), batch2 (B, k, m), ...)`: the
    product's B * n * k * m multiply-adds (the bias add is elementwise, not counted, as for
    fvcore's `addmm`)."""
    a, b = _sizes(inputs[1]), _sizes(inputs[2])
    if len(a) != 3 or len(b) != 3:
        raise ValueError(f"baddbmm FLOP handle: expected 3-d batches, got shapes {a} and {b}")
    return a[0] * a[1] * a[2] * b[2]


FLOP_HANDLES: Dict[str, Callable] = dict(MSDA_FLOP_HANDLES)
FLOP_HANDLES["aten::scaled_dot_product_attention"] = sdpa_flop_jit
FLOP_HANDLES["aten::baddbmm"] = baddbmm_flop_jit


def _output_numel(inputs: List[Any], outputs: List[Any]) -> int:
    sizes = _sizes(outputs[0])
    n = 1
    for d in sizes:
        n *= d
    return n if sizes else 0


# activations (output elements) of the ops fvcore's ActivationCountAnalysis does not know
ACTIVATION_HANDLES: Dict[str, Callable] = {op: _output_numel for op in FLOP_HANDLES}

# ops fvcore does not count, named once so that its warnings stay readable
_IGNORED_OPS = (
    "aten::add",
    "aten::add_",
    "aten::sub",
    "aten::rsub",
    "aten::mul",
    "aten::mul_",
    "aten::div",
    "aten::div_",
    "aten::addcmul",
    "aten::reciprocal",
    "aten::sigmoid",
    "aten::sigmoid_",
    "aten::softmax",
    "aten::log",
    "aten::exp",
    "aten::pow",
    "aten::sin",
    "aten::cos",
    "aten::sqrt",
    "aten::gelu",
    "aten::relu",
    "aten::relu_",
    "aten::topk",
    "aten::sort",
    "aten::argsort",
    "aten::cumsum",
    "aten::sum",
    "aten::mean",
    "aten::max",
    "aten::max_pool2d",
    "aten::meshgrid",
    "aten::where",
    "aten::scatter",
    "aten::scatter_",
    "aten::gather",
    "aten::index_select",
    "aten::index_copy_",
    "aten::masked_fill",
    "aten::masked_fill_",
    "aten::lt",
    "aten::gt",
    "aten::le",
    "aten::ge",
    "aten::eq",
    "aten::ne",
    "aten::__or__",
    "aten::__and__",
    "aten::any",
    "aten::all",
    "aten::prod",
    "aten::flip",
    "aten::minimum",
    "aten::maximum",
    "aten::clamp",
    "aten::clamp_min",
    "aten::expand_as",
    "aten::resolve_conj",
    "aten::resolve_neg",
    "aten::rsqrt",
    "aten::neg",
    "aten::abs",
    "aten::floor_divide",
    "aten::remainder",
    "aten::fill_",
    "aten::zero_",
    "aten::ones_like",
    "aten::zeros_like",
    "aten::empty_like",
    "aten::numel",
    "aten::arange",
    "aten::linspace",
    "aten::log_sigmoid",
    "aten::bitwise_not",
    "aten::sub_",
    "aten::logical_not",
    "aten::exp_",
    "aten::frobenius_norm",
    "aten::norm",
    "aten::sign",
    "aten::round",
    "aten::floor",
    "aten::ceil",
    "aten::repeat_interleave",
    "aten::index_put_",
    "aten::tanh",
    "aten::std",
    "aten::var",
    "aten::argmax",
    "aten::nonzero",
    "aten::pad",
    "aten::constant_pad_nd",
)


class InferenceTracer(nn.Module):
    """Traceable inference of a DINO-family detector: image tensors in, detection tensors out.

    Runs `compute_outputs` and `postprocess` on a batch built with plain-int sizes (see
    `image_list`); the pixel normalization runs outside the trace (elementwise, 0 flops).

    The detector's children are registered as this module's children (the detector itself is
    held unregistered), so module names in the analysis are the detector's own ("backbone",
    "transformer.encoder", ...).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        self._detector = [model]  # a list: not registered as a submodule

    @property
    def model(self) -> nn.Module:
        return self._detector[0]

    def forward(self, *images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        # no_grad here, not in the caller: fvcore traces lazily (at the first query), and
        # detectron2's FrozenBatchNorm2d takes a different path (not counted) with grad enabled
        with torch.no_grad():
            batch = image_list(self.model, [{"image": im} for im in images])
            out = self.model.compute_outputs(batch)
            results = self.model.postprocess(
                out["pred_logits"], out["pred_boxes"], batch.image_sizes
            )
        tensors = []
        for r in results:
            inst = r["instances"]
            tensors += [inst.pred_boxes.tensor, inst.scores, inst.pred_classes]
        return tuple(tensors)


def flop_analysis(
    model: nn.Module, images: Sequence[torch.Tensor], warn_unsupported: bool = False
) -> FlopCountAnalysis:
    """fvcore `FlopCountAnalysis` of `model`'s inference on a batch of (3, H, W) images, with
    the handles of this module, in "caller" attribution mode (module names as in `model`)."""
    analysis = FlopCountAnalysis(*_tracer_and_inputs(model, images))
    analysis.set_op_handle(**FLOP_HANDLES)
    return _configure(analysis, warn_unsupported)


def activation_analysis(
    model: nn.Module, images: Sequence[torch.Tensor], warn_unsupported: bool = False
) -> ActivationCountAnalysis:
    """fvcore `ActivationCountAnalysis` (output elements of convolutions, linear layers, matrix
    products, deformable and scaled-dot-product attention), like `flop_analysis`."""
    analysis = ActivationCountAnalysis(*_tracer_and_inputs(model, images))
    analysis.set_op_handle(**ACTIVATION_HANDLES)
    return _configure(analysis, warn_unsupported)


def _tracer_and_inputs(model: nn.Module, images: Sequence[torch.Tensor]):
    if len(images) == 0:
        raise ValueError("the analysis needs at least one image")
    for im in images:
        if im.dim() != 3:
            raise ValueError(f"images must be (C, H, W) tensors, got shape {tuple(im.shape)}")
    return InferenceTracer(model).eval(), tuple(im.to(model.device) for im in images)


def _configure(analysis, warn_unsupported: bool):
    analysis.set_op_handle(**{op: None for op in _IGNORED_OPS})  # none has a handle
    analysis.ancestor_mode("caller")
    analysis.unsupported_ops_warnings(warn_unsupported)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def model_part_counts(analysis, model: Optional[nn.Module] = None) -> "OrderedDict[str, int]":
    """Count (flops or activations) of each of `MODEL_PARTS` (see the module docstring) and
    "total"; the parts sum to the total exactly.

    Args:
        analysis: from `flop_analysis` or `activation_analysis`.
        model: the detector, to check that each part's modules exist (a part a model lacks,
            e.g. a model without a neck, counts 0).
    """
    by_module = analysis.by_module()
    total = analysis.total()

    def module_total(path: str) -> int:
        if model is not None and _get_submodule(model, path) is None:
            return 0
        return int(by_module.get(path, 0))

    parts: "OrderedDict[str, int]" = OrderedDict()
    for part, paths in _PART_MODULES.items():
        parts[part] = sum(module_total(p) for p in paths)
    parts["heads"] = module_total("transformer") - parts["encoder"] - parts["decoder"]
    parts["other"] = total - sum(parts.values())
    parts["total"] = total
    return parts


def module_counts(analysis, model: nn.Module, max_depth: int = 3) -> "OrderedDict[str, int]":
    """Counts of `model`'s modules up to `max_depth` levels deep ("model" = the whole), in
    module order, modules with a zero count left out."""
    by_module = analysis.by_module()
    out: "OrderedDict[str, int]" = OrderedDict()
    for name, _ in model.named_modules():
        depth = 0 if name == "" else name.count(".") + 1
        if depth <= max_depth and by_module.get(name, 0):
            out[name or "model"] = int(by_module[name])
    return out


def model_part_parameters(model: nn.Module) -> "OrderedDict[str, int]":
    """Parameters (shared tensors once) of each of `MODEL_PARTS` and "total", by name:
    backbone, neck (+ position embedding), encoder, decoder (with its prediction heads), heads
    (the transformer's other parameters: two-stage projection, level and query embeddings),
    other (the rest, e.g. the denoising label embedding)."""
    parts: "OrderedDict[str, int]" = OrderedDict((p, 0) for p in MODEL_PARTS)
    prefixes = [(path + ".", part) for part, paths in _PART_MODULES.items() for path in paths]
    for name, p in model.named_parameters():  # each shared tensor once, under its first name
        part = next((pt for prefix, pt in prefixes if name.startswith(prefix)), None)
        if part is None:
            part = "heads" if name.startswith("transformer.") else "other"
        parts[part] += p.numel()
    parts["total"] = sum(parts.values())
    return parts


def _get_submodule(model: nn.Module, path: str) -> Optional[nn.Module]:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None
