"""Multi-scale deformable attention: every CPU backend against an independent float64 reference,
gradients, backend selection and its errors, FLOP counting, and the module's semantics.

The Triton kernel is checked under Triton's interpreter in test_ms_deform_attn_triton.py.
"""

import concurrent.futures
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from msda_reference import level_start_index, random_inputs, reference_ms_deform_attn  # noqa: E402

from focus_detr.layers import MultiScaleDeformableAttention, ms_deform_attn  # noqa: E402
from focus_detr.layers.ms_deform_attn import (  # noqa: E402
    ENV_VAR,
    MSDA_FLOP_HANDLES,
    BackendUnavailableError,
    available_backends,
    ms_deform_attn_flops,
    resolve_backend,
)
from focus_detr.layers.ms_deform_attn import (  # noqa: E402
    backends as backends_mod,
    detrex_backend,
    ext_backend,
    module as module_mod,
    native_backend,
    triton_backend,
)
from focus_detr.layers.ms_deform_attn.op import ms_deform_attn_op  # noqa: E402

SHAPES = [(6, 4), (3, 2)]  # non-square levels, S = 30
# the triton backend runs on CPU only under the interpreter, tested in its own file
CPU_BACKENDS = [b for b in available_backends("cpu") if b != "triton"]


@pytest.fixture(autouse=True)
def _no_env_backend(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def _call(backend, value, loc, weights, shapes=SHAPES):
    return ms_deform_attn(
        value, torch.tensor(shapes), level_start_index(shapes), loc, weights, backend=backend
    )


# ---------------------------------------------------------------- numerics of every backend


def test_cpu_backends_include_pytorch_native_and_ext():
    assert "pytorch" in CPU_BACKENDS
    # ext is installed by `make setup`; when it failed to build this says so instead of passing
    assert "ext" in CPU_BACKENDS, backends_mod.backend_unavailable_reason("ext", "cpu")
    # native compiles on first use (a C++ compiler and ninja are part of the set-up)
    assert "native" in CPU_BACKENDS, backends_mod.backend_unavailable_reason("native", "cpu")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("heads,head_dim", [(2, 30), (1, 71)])
def test_forward_matches_reference_float64(backend, heads, head_dim):
    value, loc, weights = random_inputs(3, 7, heads, head_dim, SHAPES, points=3, pad_tokens=5)
    assert ((loc < 0) | (loc > 1)).any()  # some samples fall (partly) outside the levels
    out = _call(backend, value, loc, weights)
    expected = reference_ms_deform_attn(value, SHAPES, loc, weights)
    assert out.shape == (3, 7, heads * head_dim) and out.dtype == torch.float64
    assert (out - expected).abs().max() < 1e-10


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradients_match_reference_float64(backend):
    value, loc, weights = random_inputs(2, 5, 2, 30, SHAPES, points=3, seed=1, pad_tokens=4)
    inputs = [t.requires_grad_() for t in (value, loc, weights)]
    grad_out = torch.randn(2, 5, 60, dtype=torch.float64)
    got = torch.autograd.grad(_call(backend, *inputs), inputs, grad_out)
    expected = torch.autograd.grad(
        reference_ms_deform_attn(value, SHAPES, loc, weights), inputs, grad_out
    )
    for g, e, name in zip(got, expected, ("value", "locations", "weights")):
        assert (g - e).abs().max() < 1e-10, name


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck(backend):
    shapes = [(3, 2), (2, 1)]
    value, loc, weights = random_inputs(2, 3, 2, 3, shapes, points=2, seed=2)
    inputs = tuple(t.requires_grad_() for t in (value, loc, weights))
    assert torch.autograd.gradcheck(
        lambda v, l_, w: _call(backend, v, l_, w, shapes), inputs, eps=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_dtypes(backend, dtype):
    value, loc, weights = random_inputs(2, 6, 2, 30, SHAPES, points=3, seed=3)
    args = [t.to(dtype).requires_grad_() for t in (value, loc, weights)]
    out = _call(backend, *args)
    out.sum().backward()
    assert out.dtype == dtype and all(a.grad.dtype == dtype for a in args)
    tol = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    # inputs were rounded to `dtype`, so compare with the reference on the rounded inputs
    expected = reference_ms_deform_attn(
        *[a.detach() for a in args[:1]], SHAPES, *[a.detach() for a in args[1:]]
    )
    assert (out.double() - expected).abs().max() < tol * expected.abs().max()


def test_mixed_dtypes_compute_in_the_wider_dtype():
    value, loc, weights = random_inputs(1, 4, 2, 30, SHAPES, points=2, seed=4)
    out = _call("pytorch", value.to(torch.bfloat16), loc.float(), weights.float())
    assert out.dtype == torch.float32  # locations were not rounded to bfloat16
    expected = reference_ms_deform_attn(
        value.to(torch.bfloat16), SHAPES, loc.float(), weights.float()
    )
    assert (out.double() - expected).abs().max() < 1e-5


@pytest.mark.skipif("native" not in CPU_BACKENDS, reason="native kernel did not build")
@pytest.mark.parametrize("value_dtype", [torch.bfloat16, torch.float16])
def test_native_reads_reduced_precision_values_without_a_cast(value_dtype, monkeypatch):
    assert value_dtype in backends_mod.reduced_value_dtypes("native")
    assert backends_mod.reduced_value_dtypes("ext") == ()  # it is given the cast value
    value, loc, weights = random_inputs(1, 5, 2, 30, SHAPES, points=2, seed=4)
    value = value.to(value_dtype)
    seen = []
    forward = native_backend.forward
    monkeypatch.setattr(
        native_backend, "forward", lambda v, *args: seen.append(v.dtype) or forward(v, *args)
    )
    with torch.no_grad():
        out = _call("native", value, loc.float(), weights.float())
    assert seen == [value_dtype] and out.dtype == torch.float32
    # the values are exact in float32: same numbers as the float32 reference on them
    expected = reference_ms_deform_attn(
        value.double(), SHAPES, loc.float().double(), weights.float().double()
    )
    assert (out.double() - expected).abs().max() < 1e-5
    # where a gradient is needed the value is cast (the backward computes in one dtype)
    seen.clear()
    args = [value.requires_grad_(), loc.float().requires_grad_(), weights.float()]
    _call("native", *args).sum().backward()
    assert seen == [torch.float32] and value.grad.dtype == value_dtype


def test_native_unavailable_reasons(monkeypatch):
    assert "CPU only" in native_backend.unavailable_reason(torch.device("cuda"))

    def fail(**kwargs):
        raise RuntimeError("Error building extension 'focus_detr_msda_cpu'\nmore lines")

    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", fail)
    module, reason = native_backend._load.__wrapped__()  # uncached: a fresh build attempt
    assert module is None
    assert "ms_deform_attn_cpu.cpp) did not build: RuntimeError: Error building extension" in reason
    assert "more lines" not in reason and "compiler" in reason


def test_backends_agree_with_level_start_index_none_and_list_shapes():
    value, loc, weights = random_inputs(2, 4, 2, 30, SHAPES, points=2, seed=5)
    out = ms_deform_attn(value, SHAPES, None, loc, weights, backend="pytorch")
    assert (out - reference_ms_deform_attn(value, SHAPES, loc, weights)).abs().max() < 1e-10


def test_pytorch_backend_intermediates_bounded():
    """Forward: no tensor larger than output x points / heads (the issue's bound is output x
    levels x points), even with few queries and large levels, where a per-level copy of value
    would exceed it. Backward: additionally one (level, head) slice of grad_value, and grad_value
    itself."""
    from focus_detr.layers.ms_deform_attn import pytorch_backend

    shapes = [(16, 12), (8, 6)]  # S = 240 tokens, 3 queries
    n, q, heads, head_dim, points = 2, 3, 2, 8, 2
    value, loc, weights = random_inputs(n, q, heads, head_dim, shapes, points, torch.float32)
    shapes_t, starts = torch.tensor(shapes), level_start_index(shapes)
    output = n * q * heads * head_dim
    assert value.numel() > output * len(shapes) * points  # the regime where the bound bites
    sizes = []

    class Recorder(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            leaves = torch.utils._pytree.tree_leaves((args, kwargs))
            inputs = {a.untyped_storage().data_ptr() for a in leaves if isinstance(a, torch.Tensor)}
            for t in out if isinstance(out, (tuple, list)) else (out,):
                # new allocations only (views share their input's memory)
                if (
                    isinstance(t, torch.Tensor)
                    and t.shape != value.shape
                    and t.untyped_storage().data_ptr() not in inputs
                ):
                    sizes.append((t.numel(), str(func)))
            return out

    with Recorder():
        out = pytorch_backend.forward(value, shapes_t, starts, loc, weights)
    assert sizes and max(sizes)[0] <= output * points // heads, max(sizes)
    sizes.clear()
    with Recorder():
        grads = pytorch_backend.backward(
            value, shapes_t, starts, loc, weights, torch.ones_like(out)
        )
    largest_slice = n * max(h * w for h, w in shapes) * head_dim  # one (level, head) of value
    assert max(sizes)[0] <= max(output * len(shapes) * points, largest_slice), max(sizes)
    expected = reference_ms_deform_attn(value, shapes, loc, weights)
    assert (out - expected).abs().max() < 1e-5
    assert grads[0].shape == value.shape


# ---------------------------------------------------------------- input checks


def test_bad_shapes_raise_clear_errors():
    value, loc, weights = random_inputs(1, 2, 2, 4, SHAPES, points=2)
    with pytest.raises(ValueError, match="attention_weights must be"):
        _call("pytorch", value, loc, weights[..., :1])
    with pytest.raises(ValueError, match="value must be"):
        _call("pytorch", value[0], loc, weights)
    with pytest.raises(ValueError, match="does not fit"):
        _call("pytorch", value[:, :20], loc, weights)
    with pytest.raises(ValueError, match="spatial_shapes must be"):
        _call("pytorch", value, loc, weights, shapes=[(6, 4), (3, 2), (1, 1)])


# ---------------------------------------------------------------- backend selection


def test_selection_rule_argument_env_auto(monkeypatch):
    assert resolve_backend(None, "cpu") == next(
        b for b in ("native", "ext", "pytorch") if b in CPU_BACKENDS
    )
    monkeypatch.setenv(ENV_VAR, "pytorch")
    assert resolve_backend(None, "cpu") == "pytorch"
    assert resolve_backend("auto", "cpu") == "pytorch"  # "auto" defers to the environment
    assert resolve_backend("ext", "cpu") == "ext"  # argument beats environment
    monkeypatch.setenv(ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match=rf"unknown .*'nonsense'.*\${ENV_VAR}"):
        resolve_backend(None, "cpu")
    with pytest.raises(
        ValueError, match="choose one of .*'pytorch', 'native', 'ext', 'detrex', 'triton'"
    ):
        resolve_backend("cuda_op", "cpu")


def test_auto_order_on_cpu(monkeypatch):
    avail = {"native": None, "ext": None}
    for name, mod in (("native", native_backend), ("ext", ext_backend)):
        monkeypatch.setattr(
            mod, "unavailable_reason", lambda device, dtype=None, name=name: avail[name]
        )
    assert resolve_backend(None, "cpu") == "native"
    avail["native"] = "no compiler"
    assert resolve_backend(None, "cpu") == "ext"
    avail["ext"] = "no ext"
    assert resolve_backend(None, "cpu") == "pytorch"
    with pytest.raises(BackendUnavailableError, match="'native'.*no compiler"):
        resolve_backend("native", "cpu")


def test_auto_order_on_cuda(monkeypatch):
    """Selection on a CUDA device without a GPU: availabilities are faked per backend."""
    cuda = torch.device("cuda")
    avail = {"triton": None, "detrex": None, "ext": None}

    def fake_reason(name):
        return lambda device, dtype=None: avail[name]

    for name, mod in (("triton", triton_backend), ("detrex", detrex_backend), ("ext", ext_backend)):
        monkeypatch.setattr(mod, "unavailable_reason", fake_reason(name))
    assert resolve_backend(None, cuda) == "triton"
    avail["triton"] = "no triton"
    assert resolve_backend(None, cuda) == "detrex"
    avail["detrex"] = "no detrex"
    assert resolve_backend(None, cuda) == "ext"
    avail["ext"] = "no ext"
    assert resolve_backend(None, cuda) == "pytorch"
    with pytest.raises(BackendUnavailableError, match="'detrex'.*no detrex"):
        resolve_backend("detrex", cuda)


def test_ext_unavailable_falls_back_and_explains(monkeypatch):
    monkeypatch.setattr(
        ext_backend,
        "_load",
        lambda: (None, "torch_ms_deform_attn failed to import (ImportError: nope)"),
    )
    monkeypatch.setattr(native_backend, "_load", lambda: (None, "no compiler"))
    assert resolve_backend(None, "cpu") == "pytorch"
    with pytest.raises(
        BackendUnavailableError,
        match=r"'ext'.*nope.*pip install --no-build-isolation "
        r"torch-ms-deform-attn==0\.1\.1",
    ):
        resolve_backend("ext", "cpu")


def test_triton_unavailable_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "triton" not in available_backends("cpu")
    with pytest.raises(BackendUnavailableError, match="needs CUDA tensors.*TRITON_INTERPRET=1"):
        resolve_backend("triton", "cpu")


def test_detrex_not_installed_error():
    detrex_backend._load.cache_clear()
    try:
        reason = backends_mod.backend_unavailable_reason("detrex", "cpu")
        with pytest.raises(BackendUnavailableError, match=r"'detrex'.*install detrex"):
            resolve_backend("detrex", "cpu")
    finally:
        detrex_backend._load.cache_clear()
    assert "not importable" in reason


class _FakeDetrexC:
    """Stands in for detrex._C: the documented signatures, computed by the test's reference."""

    def __init__(self):
        self.calls = []

    def _check(self, value, shapes, starts, loc, weights, step, *extra):
        for t in (value, loc, weights, *extra):
            assert t.is_contiguous() and t.dtype in (torch.float32, torch.float64)
        assert shapes.dtype == starts.dtype == torch.int64
        assert value.shape[0] % min(value.shape[0], step) == 0  # detrex's batch restriction
        self.calls.append(step)

    def ms_deform_attn_forward(self, value, shapes, starts, loc, weights, im2col_step):
        self._check(value, shapes, starts, loc, weights, im2col_step)
        return reference_ms_deform_attn(value, shapes.tolist(), loc, weights).to(value.dtype)

    def ms_deform_attn_backward(self, value, shapes, starts, loc, weights, grad, im2col_step):
        self._check(value, shapes, starts, loc, weights, im2col_step, grad)

        def reference_grads():
            inputs = [t.detach().requires_grad_() for t in (value, loc, weights)]
            out = reference_ms_deform_attn(inputs[0], shapes.tolist(), *inputs[1:])
            return torch.autograd.grad(out, inputs, grad.double())

        # a custom op's kernel runs with autograd switched off for its thread; a fresh thread
        # has it on again, so the reference's autograd gradients are available to the fake
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            grads = pool.submit(reference_grads).result()
        return [g.to(value.dtype) for g in grads]


@pytest.fixture
def fake_detrex(monkeypatch):
    import types

    fake = _FakeDetrexC()
    package = types.ModuleType("detrex")
    package.__path__ = []
    native = types.ModuleType("detrex._C")
    native.ms_deform_attn_forward = fake.ms_deform_attn_forward
    native.ms_deform_attn_backward = fake.ms_deform_attn_backward
    package._C = native
    monkeypatch.setitem(sys.modules, "detrex", package)
    monkeypatch.setitem(sys.modules, "detrex._C", native)
    detrex_backend._load.cache_clear()
    yield fake
    detrex_backend._load.cache_clear()


def test_detrex_selected_on_cuda_only(fake_detrex, monkeypatch):
    assert backends_mod.backend_unavailable_reason("detrex", "cuda") is None
    with pytest.raises(BackendUnavailableError, match="CUDA tensors only"):
        resolve_backend("detrex", "cpu")
    assert "detrex" not in available_backends("cpu")
    monkeypatch.setattr(triton_backend, "unavailable_reason", lambda d, t=None: "no triton")
    assert resolve_backend(None, "cuda") == "detrex"


@pytest.mark.parametrize("batch", [1, 5])
def test_detrex_adapter_passes_documented_arguments(fake_detrex, batch):
    """The adapter's calls into detrex._C (argument order, contiguity, dtype, im2col_step for any
    batch size) and its gradients, run on CPU through the fake op."""
    value, loc, weights = random_inputs(batch, 4, 2, 5, SHAPES, points=2, seed=6)
    inputs = tuple(t.requires_grad_() for t in (value, loc, weights))
    shapes, starts = torch.tensor(SHAPES), level_start_index(SHAPES)

    def op(v, l_, w):
        return ms_deform_attn_op(v, shapes, starts, l_, w, "detrex")

    out = op(*inputs)
    assert (out - reference_ms_deform_attn(value, SHAPES, loc, weights)).abs().max() < 1e-12
    if batch == 1:
        assert torch.autograd.gradcheck(op, inputs, eps=1e-6, atol=1e-8)
    else:
        grad_out = torch.randn_like(out)
        got = torch.autograd.grad(out, inputs, grad_out)
        expected = torch.autograd.grad(
            reference_ms_deform_attn(value, SHAPES, loc, weights), inputs, grad_out
        )
        assert all((g - e).abs().max() < 1e-12 for g, e in zip(got, expected))
    assert fake_detrex.calls and all(batch % step == 0 for step in fake_detrex.calls)
    half = op(*[t.detach().half() for t in inputs])  # computed in float32 by the fake op
    assert half.dtype == torch.float16


# ---------------------------------------------------------------- FLOP counting


def _flop_analysis(model, inputs, handles=True):
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, inputs)
    if handles:
        analysis.set_op_handle(**MSDA_FLOP_HANDLES)
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


class _Functional(torch.nn.Module):
    def __init__(self, backend, fn=None):
        super().__init__()
        self.backend, self.fn = backend, fn

    def forward(self, value, loc, weights):
        if self.fn is not None:
            return self.fn(value, loc, weights)
        return _call(self.backend, value, loc, weights)


def test_flop_formula_by_hand():
    # 1 image, 2 queries, 2 heads, 2 levels, 3 points, 4 channels: 24 samples x 4 channels x
    # (4 corner multiply-adds + 1 weighting)
    assert ms_deform_attn_flops(1, 2, 2, 2, 3, 4) == 24 * 4 * 5


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fvcore_counts_the_op(backend):
    value, loc, weights = random_inputs(2, 7, 2, 30, SHAPES, points=3, dtype=torch.float32)
    expected = 5 * (2 * 7 * 2 * 2 * 3) * 30
    analysis = _flop_analysis(_Functional(backend), (value, loc, weights))
    assert analysis.total() == expected
    assert analysis.by_operator() == {"ms_deform_attn": expected}
    unhandled = _flop_analysis(_Functional(backend), (value, loc, weights), handles=False)
    assert unhandled.total() == 0  # one named op, skipped without the handle
    assert "focus_detr::ms_deform_attn" in unhandled.unsupported_ops()


def test_fvcore_handles_ext_op_and_detrex_function_names():
    value, loc, weights = random_inputs(1, 3, 2, 4, SHAPES, points=2, dtype=torch.float32)
    shapes, starts = torch.tensor(SHAPES), level_start_index(SHAPES)
    expected = ms_deform_attn_flops(1, 3, 2, 2, 2, 4)

    class MultiScaleDeformableAttnFunction(torch.autograd.Function):  # detrex's Function name
        @staticmethod
        def forward(ctx, v, spatial_shapes, starts, l_, w, im2col_step):
            return reference_ms_deform_attn(v, SHAPES, l_, w).float()

    fns = [lambda v, l_, w: MultiScaleDeformableAttnFunction.apply(v, shapes, starts, l_, w, 64)]
    if "ext" in CPU_BACKENDS:
        fns.append(
            lambda v, l_, w: torch.ops.torch_ms_deform_attn.forward(v, shapes, starts, l_, w, 1)
        )
    for fn in fns:
        assert _flop_analysis(_Functional(None, fn), (value, loc, weights)).total() == expected


@pytest.mark.parametrize("backend", CPU_BACKENDS + [None])
def test_fvcore_counts_module(backend, monkeypatch):
    """The module traces on CPU with every backend (and the default) and its count is the
    four linear layers plus the op."""
    n, q, c, heads, levels, points = 2, 5, 16, 2, 2, 3
    attn = MultiScaleDeformableAttention(
        c, heads, levels, points, batch_first=True, backend=backend
    ).eval()
    s = sum(h * w for h, w in SHAPES)

    class Wrapper(torch.nn.Module):  # jit tracing wants tensor arguments only
        def __init__(self):
            super().__init__()
            self.attn = attn

        def forward(self, query, value, mask, ref, shapes, starts):
            return self.attn(
                query,
                value=value,
                key_padding_mask=mask,
                reference_points=ref,
                spatial_shapes=shapes,
                level_start_index=starts,
            )

    inputs = (
        torch.randn(n, q, c),
        torch.randn(n, s, c),
        torch.zeros(n, s, dtype=torch.bool),
        torch.rand(n, q, levels, 2),
        torch.tensor(SHAPES),
        level_start_index(SHAPES),
    )
    linear = n * s * c * c + n * q * c * (heads * levels * points * 3) + n * q * c * c
    msda = ms_deform_attn_flops(n, q, heads, levels, points, c // heads)
    analysis = _flop_analysis(Wrapper(), inputs)
    assert analysis.by_operator()["ms_deform_attn"] == msda
    assert analysis.total() == linear + msda


# ---------------------------------------------------------------- the module


def _module(backend="pytorch", **kwargs):
    torch.manual_seed(0)
    attn = MultiScaleDeformableAttention(
        embed_dim=12,
        num_heads=2,
        num_levels=2,
        num_points=3,
        dropout=0.0,
        backend=backend,
        **kwargs,
    ).double()
    with torch.no_grad():  # non-trivial offsets and weights so every path matters
        for p in attn.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return attn


def _module_inputs(n=2, q=5, c=12, seed=0, ref_dim=2):
    g = torch.Generator().manual_seed(seed)
    s = sum(h * w for h, w in SHAPES)
    query = torch.randn(q, n, c, generator=g, dtype=torch.float64)
    value = torch.randn(s, n, c, generator=g, dtype=torch.float64)
    pos = torch.randn(q, n, c, generator=g, dtype=torch.float64)
    if ref_dim == 2:
        ref = torch.rand(n, q, 2, 2, generator=g, dtype=torch.float64)
    else:
        ref = torch.cat(
            [
                torch.rand(n, q, 2, 2, generator=g, dtype=torch.float64),
                0.1 + torch.rand(n, q, 2, 2, generator=g, dtype=torch.float64),
            ],
            -1,
        )
    return query, value, pos, ref


def _expected_module_output(attn, query, value, pos, ref, mask=None):
    """Batch-first re-derivation of the module from the facts page, in float64."""
    q_in = (query + pos).transpose(0, 1)  # (N, Q, C)
    v = attn.value_proj(value.transpose(0, 1))
    if mask is not None:
        v = v.masked_fill(mask[..., None], 0)
    n, nq, _ = q_in.shape
    heads, levels, points = attn.num_heads, attn.num_levels, attn.num_points
    off = attn.sampling_offsets(q_in).view(n, nq, heads, levels, points, 2)
    if ref.shape[-1] == 2:
        wh = torch.tensor([[w, h] for h, w in SHAPES], dtype=torch.float64)  # (levels, 2)
        loc = ref[:, :, None, :, None, :] + off / wh[:, None, :]
    else:
        loc = ref[:, :, None, :, None, :2] + off / points * ref[:, :, None, :, None, 2:] * 0.5
    logits = attn.attention_weights(q_in).view(n, nq, heads, levels * points)
    weights = logits.softmax(-1).view(n, nq, heads, levels, points)
    out = reference_ms_deform_attn(v.view(n, v.shape[1], heads, -1), SHAPES, loc, weights)
    return attn.output_proj(out).transpose(0, 1) + query, loc


def _run(attn, query, value, pos, ref, mask=None):
    return attn(
        query,
        value=value,
        query_pos=pos,
        key_padding_mask=mask,
        reference_points=ref,
        spatial_shapes=torch.tensor(SHAPES),
        level_start_index=level_start_index(SHAPES),
    )


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_sampling_locations_and_output(ref_dim, monkeypatch):
    attn = _module()
    query, value, pos, ref = _module_inputs(ref_dim=ref_dim)
    seen = {}

    def recording(value_, shapes, starts, loc, weights, backend=None):
        seen["loc"] = loc
        return ms_deform_attn(value_, shapes, starts, loc, weights, backend)

    monkeypatch.setattr(module_mod, "ms_deform_attn", recording)
    with torch.no_grad():
        out = _run(attn, query, value, pos, ref)
        expected, loc = _expected_module_output(attn, query, value, pos, ref)
    assert (seen["loc"] - loc).abs().max() < 1e-12
    assert ((loc < 0) | (loc > 1)).any()
    assert out.shape == query.shape
    assert (out - expected).abs().max() < 1e-10


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_returns_the_sampling_it_used(ref_dim, batch_first):
    """`return_sampling=True`: the same output, plus the locations and weights the attention
    computed: they equal the stand-alone `deformable_sampling` exactly and the float64 formula
    of `_expected_module_output`; batch-first in both layouts."""
    from focus_detr.modeling.transformer.decoder import deformable_sampling

    attn = _module(batch_first=batch_first)
    query, value, pos, ref = _module_inputs(ref_dim=ref_dim)
    layout = (lambda x: x.transpose(0, 1)) if batch_first else (lambda x: x)
    with torch.no_grad():
        plain = _run(attn, layout(query), layout(value), layout(pos), ref)
        out, locations, weights = attn(
            layout(query),
            value=layout(value),
            query_pos=layout(pos),
            reference_points=ref,
            spatial_shapes=torch.tensor(SHAPES),
            level_start_index=level_start_index(SHAPES),
            return_sampling=True,
        )
        alone = deformable_sampling(attn, (query + pos).transpose(0, 1), ref, torch.tensor(SHAPES))
        expected, expected_loc = _expected_module_output(attn, query, value, pos, ref)
    assert torch.equal(out, plain)
    assert (layout(out) - expected).abs().max() < 1e-10
    assert locations.shape == (2, 5, 2, 2, 3, 2) and weights.shape == (2, 5, 2, 2, 3)
    assert torch.equal(locations, alone[0]) and torch.equal(weights, alone[1])
    assert (locations - expected_loc).abs().max() < 1e-12
    q_in = (query + pos).transpose(0, 1)
    expected_weights = attn.attention_weights(q_in).view(2, 5, 2, 6).softmax(-1)
    assert (weights - expected_weights.view(2, 5, 2, 2, 3)).abs().max() < 1e-12


def test_module_reference_point_formulas_by_hand():
    """One query, one head, one level, 2 points, offsets set by hand."""
    attn = MultiScaleDeformableAttention(
        embed_dim=4, num_heads=1, num_levels=1, num_points=2, batch_first=True
    )
    with torch.no_grad():
        attn.sampling_offsets.weight.zero_()
        attn.sampling_offsets.bias.copy_(torch.tensor([2.0, -1.0, 4.0, 3.0]))  # (x, y) per point
    query, shapes = torch.zeros(1, 1, 4), torch.tensor([[5, 8]])  # H = 5, W = 8
    points = attn.sampling_locations(query, torch.tensor([[[[0.5, 0.25]]]]), shapes)
    expected = torch.tensor([[0.5 + 2 / 8, 0.25 - 1 / 5], [0.5 + 4 / 8, 0.25 + 3 / 5]])
    assert torch.allclose(points.view(2, 2), expected)
    boxes = attn.sampling_locations(query, torch.tensor([[[[0.5, 0.25, 0.2, 0.4]]]]), shapes)
    # ref_xy + offset / num_points * wh / 2
    expected = torch.tensor(
        [[0.5 + 2 / 2 * 0.1, 0.25 - 1 / 2 * 0.2], [0.5 + 4 / 2 * 0.1, 0.25 + 3 / 2 * 0.2]]
    )
    assert torch.allclose(boxes.view(2, 2), expected)
    with pytest.raises(ValueError, match="must end in 2 .* or 4"):
        attn.sampling_locations(query, torch.zeros(1, 1, 1, 3), shapes)


def test_module_sampling_locations_keep_the_references_precision_under_autocast():
    """Under bfloat16 autocast the offsets come out of their projection in bfloat16, but the
    per-level scale and the sum stay in the references' float32: the locations equal the float64
    formula on those same offsets to float32 rounding (dividing in bfloat16, as before, was off
    by up to 5e-4 here, 2^-9 of the offset term)."""
    torch.manual_seed(0)
    attn = MultiScaleDeformableAttention(
        embed_dim=16, num_heads=2, num_levels=2, num_points=2, batch_first=True
    )
    with torch.no_grad():
        attn.sampling_offsets.bias.uniform_(-4.0, 4.0)
    query, shapes = torch.randn(1, 5, 16), torch.tensor([[100, 152], [13, 19]])
    ref = torch.rand(1, 5, 2, 2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        offsets = attn.sampling_offsets(query).view(1, 5, 2, 2, 2, 2)
        points = attn.sampling_locations(query, ref, shapes)
    assert offsets.dtype == torch.bfloat16 and points.dtype == torch.float32
    wh = shapes.flip(-1).double()[None, None, None, :, None]
    expected = ref.double()[:, :, None, :, None] + offsets.double() / wh
    assert (points.double() - expected).abs().max() < 2e-7


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_padded_tokens_never_influence_output(backend):
    attn = _module(backend)
    query, value, pos, ref = _module_inputs()
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[1, 12:24] = True  # item 1: a band of level 0 padded
    mask[1, 26:] = True  # and part of level 1
    changed = value.clone()
    changed[mask.transpose(0, 1)] = 1e3 * torch.randn(int(mask.sum()), 12, dtype=torch.float64)
    with torch.no_grad():
        out = _run(attn, query, value, pos, ref, mask)
        out_changed = _run(attn, query, changed, pos, ref, mask)
        unmasked = _run(attn, query, changed, pos, ref)
        expected, _ = _expected_module_output(attn, query, value, pos, ref, mask)
    assert torch.equal(out, out_changed)
    assert (out - expected).abs().max() < 1e-10
    assert not torch.allclose(unmasked[:, 1], out[:, 1])  # the padded tokens are sampled


def test_value_differs_from_query_and_batch_first_both_ways():
    attn = _module()
    query, value, pos, ref = _module_inputs(q=4)  # 4 queries, 30 value tokens
    with torch.no_grad():
        seq_first = _run(attn, query, value, pos, ref)
        attn.batch_first = True
        batch_first = _run(
            attn, query.transpose(0, 1), value.transpose(0, 1), pos.transpose(0, 1), ref
        )
        expected, _ = _expected_module_output(attn, query, value, pos, ref)
    assert seq_first.shape == (4, 2, 12) and batch_first.shape == (2, 4, 12)
    assert (seq_first - expected).abs().max() < 1e-10
    assert torch.equal(batch_first.transpose(0, 1), seq_first)


def test_module_backend_attribute_beats_environment(monkeypatch):
    attn = _module(backend="pytorch")
    query, value, pos, ref = _module_inputs()
    monkeypatch.setenv(ENV_VAR, "nonsense")
    with torch.no_grad():
        _run(attn, query, value, pos, ref)  # the attribute wins; the environment is not read
        attn.backend = None
        with pytest.raises(ValueError, match="unknown deformable-attention backend 'nonsense'"):
            _run(attn, query, value, pos, ref)
        attn.backend = "no_such_backend"
        with pytest.raises(ValueError, match="'no_such_backend'"):
            _run(attn, query, value, pos, ref)
        attn.backend = "detrex"
        with pytest.raises(BackendUnavailableError, match="'detrex'"):
            _run(attn, query, value, pos, ref)


def test_module_gradients_flow_with_default_backend():
    attn = _module(backend=None)
    query, value, pos, ref = _module_inputs()
    value.requires_grad_()
    _run(attn, query, value, pos, ref).square().sum().backward()
    assert value.grad.abs().sum() > 0
    assert attn.sampling_offsets.weight.grad.abs().sum() > 0
    assert attn.attention_weights.weight.grad.abs().sum() > 0
    assert math.isfinite(float(attn.value_proj.weight.grad.sum()))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_custom_op_registration(backend):
    """Schema, autograd registration and fake (meta) kernel of the op agree (torch.compile and
    FakeTensor tracing rely on them)."""
    value, loc, weights = random_inputs(2, 3, 2, 4, SHAPES, points=2)
    args = (
        value.requires_grad_(),
        torch.tensor(SHAPES),
        level_start_index(SHAPES),
        loc.requires_grad_(),
        weights.requires_grad_(),
        backend,
    )
    torch.library.opcheck(
        ms_deform_attn_op,
        args,
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )
