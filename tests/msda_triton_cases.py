"""Checks of the Triton backend, run by test_ms_deform_attn_triton.py in a subprocess.

On CPU they need Triton's interpreter, which must be switched on (TRITON_INTERPRET=1) before
triton is imported, hence the separate process; with a GPU they run the compiled kernels.
Shapes are tiny: the interpreter executes every program in Python.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from msda_reference import level_start_index, random_inputs, reference_ms_deform_attn  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED or not torch.cuda.is_available() else "cuda"
if DEVICE == "cpu" and not INTERPRETED:
    pytest.skip("needs a GPU or TRITON_INTERPRET=1", allow_module_level=True)

from focus_detr.layers import MultiScaleDeformableAttention, ms_deform_attn  # noqa: E402
from focus_detr.layers.ms_deform_attn import available_backends  # noqa: E402

SHAPES = [(6, 4), (3, 2)]


def _call(value, loc, weights, shapes=SHAPES, backend="triton"):
    return ms_deform_attn(
        value,
        torch.tensor(shapes, device=DEVICE),
        level_start_index(shapes).to(DEVICE),
        loc,
        weights,
        backend=backend,
    )


def _inputs(*args, dtype=torch.float64, **kwargs):
    return random_inputs(*args, dtype=dtype, device=DEVICE, **kwargs)


def _max_rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


def test_triton_is_available():
    assert "triton" in available_backends(DEVICE)


@pytest.mark.parametrize("batch,heads,head_dim", [(3, 2, 30), (1, 1, 71)])
def test_forward_and_gradients_float64(batch, heads, head_dim):
    value, loc, weights = _inputs(batch, 5, heads, head_dim, SHAPES, 3, pad_tokens=5)
    inputs = [t.requires_grad_() for t in (value, loc, weights)]
    out = _call(*inputs)
    expected = reference_ms_deform_attn(*inputs[:1], SHAPES, *inputs[1:])
    assert out.shape == (batch, 5, heads * head_dim)
    assert (out - expected).abs().max() < 1e-10
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs, grad_out)
    want = torch.autograd.grad(expected, inputs, grad_out)
    for g, w, name in zip(got, want, ("value", "locations", "weights")):
        assert (g - w).abs().max() < 1e-10, name


def test_float32_forward_and_gradients_within_1e_5():
    # 70 queries: several query blocks, the last one partial
    value, loc, weights = _inputs(2, 70, 2, 30, SHAPES, 3, seed=1, pad_tokens=4)
    expected_inputs = [t.requires_grad_() for t in (value, loc, weights)]
    inputs = [t.detach().float().requires_grad_() for t in expected_inputs]
    out = _call(*inputs)
    expected = reference_ms_deform_attn(expected_inputs[0], SHAPES, *expected_inputs[1:])
    assert out.dtype == torch.float32 and _max_rel(out, expected) < 1e-5
    grad_out = torch.randn_like(expected)
    got = torch.autograd.grad(out, inputs, grad_out.float())
    want = torch.autograd.grad(expected, expected_inputs, grad_out)
    for g, w, name in zip(got, want, ("value", "locations", "weights")):
        assert _max_rel(g, w) < 1e-5, name


def test_gradcheck():
    shapes = [(3, 2), (2, 1)]
    value, loc, weights = _inputs(1, 2, 1, 3, shapes, 2, seed=2)
    inputs = tuple(t.requires_grad_() for t in (value, loc, weights))
    assert torch.autograd.gradcheck(
        lambda v, l_, w: _call(v, l_, w, shapes), inputs, eps=1e-6, atol=1e-8
    )


def test_float16_computes_in_float32():
    value, loc, weights = _inputs(1, 6, 2, 8, SHAPES, 2, seed=3, dtype=torch.float16)
    inputs = [t.requires_grad_() for t in (value, loc, weights)]
    out = _call(*inputs)
    out.float().sum().backward()
    assert out.dtype == torch.float16 and all(t.grad.dtype == torch.float16 for t in inputs)
    expected = reference_ms_deform_attn(
        *[t.detach() for t in inputs[:1]], SHAPES, *[t.detach() for t in inputs[1:]]
    )
    assert _max_rel(out, expected) < 2e-3


def test_empty_queries():
    value, loc, weights = _inputs(2, 0, 2, 4, SHAPES, 2)
    assert _call(value, loc, weights).shape == (2, 0, 8)


def test_module_with_triton_matches_pytorch_and_ignores_padding():
    torch.manual_seed(0)
    attn = (
        MultiScaleDeformableAttention(12, 2, 2, 2, dropout=0.0, batch_first=True, backend="triton")
        .double()
        .to(DEVICE)
    )
    query = torch.randn(2, 4, 12, dtype=torch.float64, device=DEVICE)
    value = torch.randn(2, 30, 12, dtype=torch.float64, device=DEVICE)
    ref = torch.rand(2, 4, 2, 4, dtype=torch.float64, device=DEVICE)  # 4-d boxes
    mask = torch.zeros(2, 30, dtype=torch.bool, device=DEVICE)
    mask[1, 10:] = True
    kwargs = dict(
        key_padding_mask=mask,
        reference_points=ref,
        spatial_shapes=torch.tensor(SHAPES, device=DEVICE),
        level_start_index=level_start_index(SHAPES).to(DEVICE),
    )
    with torch.no_grad():
        out = attn(query, value=value, **kwargs)
        changed = value.clone()
        changed[mask] = 100.0
        assert torch.equal(attn(query, value=changed, **kwargs), out)
        attn.backend = "pytorch"
        assert (attn(query, value=value, **kwargs) - out).abs().max() < 1e-12


def test_fvcore_traces_the_triton_backend():
    from fvcore.nn import FlopCountAnalysis

    from focus_detr.layers.ms_deform_attn import MSDA_FLOP_HANDLES, ms_deform_attn_flops

    class Op(torch.nn.Module):
        def forward(self, value, loc, weights):
            return _call(value, loc, weights)

    value, loc, weights = _inputs(1, 3, 2, 4, SHAPES, 2, dtype=torch.float32)
    analysis = FlopCountAnalysis(Op(), (value, loc, weights)).set_op_handle(**MSDA_FLOP_HANDLES)
    assert analysis.unsupported_ops_warnings(False).total() == ms_deform_attn_flops(
        1, 3, 2, 2, 2, 4
    )
