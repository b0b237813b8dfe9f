"""Reduced-precision inference (`focus_detr.layers.reduced_precision`): the chosen submodules run
in bfloat16 and hand float32 to the rest; outputs stay close to float32's; training, gradients,
tracing and state-dict keys are untouched; errors restore the autocast state; bad names and
dtypes are refused with a clear message."""

from collections import namedtuple
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from focus_detr.layers import enable_reduced_precision
from focus_detr.modeling import instantiate_model

from dino_utils import make_batch
from test_focus_meta_arch import tiny_cfg


def _focus_pair():
    """The tiny Focus-DETR in float32 and with bfloat16 backbone/neck/encoder, same weights."""
    cfg = tiny_cfg()
    torch.manual_seed(0)
    full = instantiate_model(cfg.model).eval()
    cfg.model.reduced_precision = "bfloat16"
    reduced = instantiate_model(cfg.model).eval()
    reduced.load_state_dict(full.state_dict())
    return full, reduced


def _record_dtypes(model, names):
    """{name: output dtypes} of the first Linear/Conv under each named submodule."""
    seen = {}
    modules = dict(model.named_modules())
    for name in names:
        leaf = next(m for m in modules[name].modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
        leaf.register_forward_hook(
            lambda m, a, out, name=name: seen.setdefault(name, set()).add(out.dtype)
        )
    return seen


def test_chosen_modules_run_in_bfloat16_and_the_rest_in_float32():
    full, reduced = _focus_pair()
    seen = _record_dtypes(
        reduced,
        [
            "backbone",
            "neck",
            "transformer.encoder.layers.0.ffns.0",
            "transformer.decoder.layers.0.ffns.0",
        ],
    )
    images = reduced.preprocess_image(make_batch([(96, 128), (64, 96)], [2, 3]))
    with torch.no_grad():
        out = reduced.compute_outputs(images)
        ref = full.compute_outputs(images)
    assert seen == {
        "backbone": {torch.bfloat16},
        "neck": {torch.bfloat16},
        "transformer.encoder.layers.0.ffns.0": {torch.bfloat16},
        "transformer.decoder.layers.0.ffns.0": {torch.float32},
    }
    assert out["encoder_output"].memory.dtype == torch.float32  # cast back (a dataclass)
    assert all(f.dtype == torch.float32 for f in out["neck_features"])
    assert out["pred_boxes"].dtype == out["pred_logits"].dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")
    # close to float32 (bfloat16 keeps ~3 significant digits), but not equal: it did run
    for f, f_ref in zip(out["neck_features"], ref["neck_features"]):
        rel = (f - f_ref).norm() / f_ref.norm()
        assert 0 < rel < 0.03, rel
    # the two-stage proposals are scored on that memory: mostly the same tokens
    both = [
        set(a.tolist()) & set(b.tolist())
        for a, b in zip(out["enc_topk_indices"], ref["enc_topk_indices"])
    ]
    assert all(len(s) >= 0.8 * out["enc_topk_indices"].shape[1] for s in both), both


def test_proposals_and_detections_close_to_full_precision():
    full, reduced = _focus_pair()
    batch = make_batch([(160, 224)], [2])
    with torch.no_grad():
        out = reduced.compute_outputs(reduced.preprocess_image(batch))
        ref = full.compute_outputs(full.preprocess_image(batch))
        det = reduced(batch)[0]["instances"]
    assert det.scores.dtype == det.pred_boxes.tensor.dtype == torch.float32
    # bfloat16 reorders near-tied proposals: compare the proposals both runs selected, by token
    idx, idx_ref = out["enc_topk_indices"][0].tolist(), ref["enc_topk_indices"][0].tolist()
    shared = sorted(set(idx) & set(idx_ref))
    assert len(shared) >= 0.8 * len(idx)
    pos = torch.tensor([idx.index(t) for t in shared])
    pos_ref = torch.tensor([idx_ref.index(t) for t in shared])
    torch.testing.assert_close(
        out["enc_outputs"]["pred_boxes"][0, pos],
        ref["enc_outputs"]["pred_boxes"][0, pos_ref],
        rtol=0,
        atol=0.01,
    )
    torch.testing.assert_close(
        out["enc_topk_scores"][0, pos], ref["enc_topk_scores"][0, pos_ref], rtol=0.05, atol=0.05
    )


def test_training_and_gradients_stay_in_full_precision():
    full, reduced = _focus_pair()
    images = reduced.preprocess_image(make_batch([(64, 96)], [2]))
    seen = _record_dtypes(reduced, ["backbone", "transformer.encoder.layers.0.ffns.0"])
    out = reduced.compute_outputs(images)  # grad enabled: no autocast
    ref = full.compute_outputs(images)
    assert seen == {
        "backbone": {torch.float32},
        "transformer.encoder.layers.0.ffns.0": {torch.float32},
    }
    torch.testing.assert_close(out["pred_boxes"], ref["pred_boxes"], rtol=0, atol=0)
    assert out["pred_boxes"].requires_grad
    assert reduced.state_dict().keys() == full.state_dict().keys()


class _Raises(nn.Module):
    def forward(self, x):
        assert torch.is_autocast_enabled("cpu")
        raise RuntimeError("boom")


Pair = namedtuple("Pair", "a b")


@dataclass
class _Out:
    x: torch.Tensor
    extras: dict


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)
        self.outer = nn.Sequential(self.inner, nn.Linear(4, 4))
        self.fails = _Raises()

    def forward(self, x):
        y = self.outer(x)
        return _Out(y, {"pair": Pair(y, [y, x.long()])})


def test_outputs_cast_back_through_containers_and_nested_modules():
    toy = _Toy()
    x = torch.randn(2, 4)
    with torch.no_grad():
        ref = toy.outer(x)
    enable_reduced_precision(toy, ["outer", "inner"])
    seen = []
    toy.inner.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    with torch.no_grad():
        out = toy(x)
        traced = torch.jit.trace(toy.outer, x, check_trace=False)
    assert seen[0] == torch.float32  # the nested module's output is cast back by its own hook
    assert out.x.dtype == torch.float32 and not torch.equal(out.x, ref)
    torch.testing.assert_close(out.x, ref, rtol=0.03, atol=0.03)
    assert out.extras["pair"].a.dtype == torch.float32
    assert out.extras["pair"].b[0].dtype == torch.float32
    assert out.extras["pair"].b[1].dtype == torch.int64  # integers untouched
    with torch.no_grad():  # a jit trace (FLOP counting) records the float32 model
        assert torch.equal(traced(x), ref)


def test_an_error_inside_restores_the_autocast_state():
    toy = _Toy()
    enable_reduced_precision(toy, ["fails"])
    with torch.no_grad(), pytest.raises(RuntimeError, match="boom"):
        toy.fails(torch.randn(2, 4))
    assert not torch.is_autocast_enabled("cpu")
    with torch.no_grad():  # and it still works afterwards
        assert toy.outer(torch.randn(2, 4)).dtype == torch.float32


def test_handles_remove_and_full_precision_values_switch_it_off():
    toy = _Toy()
    x = torch.randn(2, 4)
    with torch.no_grad():
        ref = toy.outer(x)
        handles = enable_reduced_precision(toy, ["outer"], torch.bfloat16)
        assert not torch.equal(toy.outer(x), ref)
        for h in handles:
            h.remove()
        assert torch.equal(toy.outer(x), ref)
        for off in (None, "float32", torch.float32):
            assert enable_reduced_precision(toy, ["outer"], off) == []
            assert torch.equal(toy.outer(x), ref)


def test_bad_names_and_dtypes_are_refused():
    toy = _Toy()
    with pytest.raises(ValueError, match=r"no submodule named \['encoder'\].*outer"):
        enable_reduced_precision(toy, ["outer", "encoder"])
    with pytest.raises(ValueError, match="dtype must be .*bfloat16.*got 'int8'"):
        enable_reduced_precision(toy, ["outer"], "int8")
    cfg = tiny_cfg()
    cfg.model.reduced_precision_modules = ["backbone", "transformer.encoderr"]
    cfg.model.reduced_precision = "bf16"
    with pytest.raises(ValueError, match="transformer.encoderr"):
        instantiate_model(cfg.model)
