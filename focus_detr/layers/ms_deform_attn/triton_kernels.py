"""Triton kernels of multi-scale deformable attention (imported only when the backend runs).

One program handles a block of BLOCK_Q queries of one (batch, head) pair, vectorised over the
head's channels (BLOCK_D >= head_dim; masked unless EVEN_D, which keeps the channel rows as
128-bit loads). It loops over levels and points (runtime loops: fully unrolled, the 16
points' gathers were scheduled together and spilled registers); for each it loads the (x, y)
locations and weights of its queries, gathers the four bilinear corners as (BLOCK_Q, BLOCK_D)
tiles of contiguous channel rows (zero outside the level) and accumulates in registers.
Nothing of size queries x heads x levels x points x channels is materialised.

Backward: the same walk; each program loads its output-gradient tile once, then per point
computes d/d(weight) and d/d(x, y) from the corner values in registers (stored directly, no
atomics: each (query, head, level, point) belongs to one program) and scatters
weight x bilinear-coefficient x grad into grad_value with atomic adds.

Conventions: value (N, S, M, D), locations (N, Q, M, L, P, 2), weights (N, Q, M, L, P), output
(N, Q, M*D), all contiguous; pixel coordinates are x = loc_x * W - 0.5 (align_corners=False).
ACC is the accumulation dtype: float64 for float64 inputs, else float32. Offsets inside one image
are int32 (the wrapper checks the range), across images int64. Atomics are relaxed: only their
sum matters.
"""

import triton
import triton.language as tl


@triton.jit
def _bilinear_setup(loc_ptr, w_ptr, shapes_ptr, starts_ptr, lp, lvl, q_mask, ACC: tl.constexpr):
    """Loads one (level, point) of a query block; returns corner geometry and weights."""
    h = tl.load(shapes_ptr + 2 * lvl).to(tl.int32)
    w = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int32)
    start = tl.load(starts_ptr + lvl).to(tl.int32)
    lx = tl.load(loc_ptr + 2 * lp, mask=q_mask, other=0.0).to(ACC)
    ly = tl.load(loc_ptr + 2 * lp + 1, mask=q_mask, other=0.0).to(ACC)
    aw = tl.load(w_ptr + lp, mask=q_mask, other=0.0).to(ACC)
    wf = w.to(ACC)
    hf = h.to(ACC)
    # clamp so far-away (or huge) locations cannot overflow int32; all corners stay outside
    x = tl.minimum(tl.maximum(lx * wf - 0.5, -2.0), wf + 1.0)
    y = tl.minimum(tl.maximum(ly * hf - 0.5, -2.0), hf + 1.0)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    fx = x - x0f
    fy = y - y0f
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    return h, w, start, wf, hf, aw, fx, fy, x0, y0


@triton.jit
def _corner(value_base, start, yi, xi, h, w, q_mask, d_offs, d_mask, row, ACC: tl.constexpr):
    """Offsets, mask and values (BLOCK_Q, BLOCK_D) of corner (yi, xi); zero outside."""
    valid = q_mask & (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    tok = start + yi * w + xi
    offs = tok[:, None] * row + d_offs[None, :]
    mask = valid[:, None] & d_mask[None, :]
    vals = tl.load(value_base + offs, mask=mask, other=0.0).to(ACC)
    return offs, mask, vals


@triton.jit
def _program_block(
    S, Q, D, M: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr
):
    """This program's (batch, head) pair and query block, shared by forward and backward:
    query/channel offsets and masks, the value row stride, the offset of its (batch, head) in
    the value (and grad_value) tensor, and the flat (n, q, m) index of its queries."""
    pid_q = tl.program_id(0)
    pid_nm = tl.program_id(1)
    n = pid_nm // M
    m = pid_nm % M
    q_offs = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d_offs = tl.arange(0, BLOCK_D)
    q_mask = q_offs < Q
    if EVEN_D:  # a constant mask along channels keeps the row loads vectorised
        d_mask = tl.full((BLOCK_D,), 1, tl.int1)
    else:
        d_mask = d_offs < D
    row = M * D  # elements between consecutive value tokens
    batch_offset = n.to(tl.int64) * S * row + m * D
    # flat (n, q, m) index; locations/weights of one (n, q, m) are L*P consecutive entries
    nqm = ((n * Q + q_offs) * M + m).to(tl.int64)
    return q_offs, d_offs, q_mask, d_mask, row, batch_offset, nqm


@triton.jit
def msda_fwd_kernel(
    value_ptr,
    shapes_ptr,
    starts_ptr,
    loc_ptr,
    attw_ptr,
    out_ptr,
    S,
    Q,
    D,
    M: tl.constexpr,
    L: tl.constexpr,
    P: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    EVEN_D: tl.constexpr,
    ACC: tl.constexpr,
):
    q_offs, d_offs, q_mask, d_mask, row, batch_offset, nqm = _program_block(
        S, Q, D, M, BLOCK_Q, BLOCK_D, EVEN_D
    )
    value_base = value_ptr + batch_offset
    lp_base = nqm * (L * P)
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=ACC)
    for lvl in range(L):
        for pt in range(P):
            h, w, start, wf, hf, aw, fx, fy, x0, y0 = _bilinear_setup(
                loc_ptr, attw_ptr, shapes_ptr, starts_ptr, lp_base + lvl * P + pt, lvl, q_mask, ACC
            )
            _, _, v00 = _corner(value_base, start, y0, x0, h, w, q_mask, d_offs, d_mask, row, ACC)
            _, _, v01 = _corner(
                value_base, start, y0, x0 + 1, h, w, q_mask, d_offs, d_mask, row, ACC
            )
            _, _, v10 = _corner(
                value_base, start, y0 + 1, x0, h, w, q_mask, d_offs, d_mask, row, ACC
            )
            _, _, v11 = _corner(
                value_base, start, y0 + 1, x0 + 1, h, w, q_mask, d_offs, d_mask, row, ACC
            )
            gx = 1.0 - fx
            gy = 1.0 - fy
            acc += (
                (aw * gy * gx)[:, None] * v00
                + (aw * gy * fx)[:, None] * v01
                + (aw * fy * gx)[:, None] * v10
                + (aw * fy * fx)[:, None] * v11
            )
    out_ptrs = out_ptr + nqm[:, None] * D + d_offs[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=q_mask[:, None] & d_mask[None, :])


@triton.jit
def msda_bwd_kernel(
    value_ptr,
    shapes_ptr,
    starts_ptr,
    loc_ptr,
    attw_ptr,
    grad_out_ptr,
    grad_value_ptr,
    grad_loc_ptr,
    grad_attw_ptr,
    S,
    Q,
    D,
    M: tl.constexpr,
    L: tl.constexpr,
    P: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    EVEN_D: tl.constexpr,
    ACC: tl.constexpr,
):
    q_offs, d_offs, q_mask, d_mask, row, batch_offset, nqm = _program_block(
        S, Q, D, M, BLOCK_Q, BLOCK_D, EVEN_D
    )
    value_base = value_ptr + batch_offset
    grad_value_base = grad_value_ptr + batch_offset
    lp_base = nqm * (L * P)
    g = tl.load(
        grad_out_ptr + nqm[:, None] * D + d_offs[None, :],
        mask=q_mask[:, None] & d_mask[None, :],
        other=0.0,
    ).to(ACC)
    gv_dtype = grad_value_ptr.dtype.element_ty
    for lvl in range(L):
        for pt in range(P):
            lp = lp_base + lvl * P + pt
            h, w, start, wf, hf, aw, fx, fy, x0, y0 = _bilinear_setup(
                loc_ptr, attw_ptr, shapes_ptr, starts_ptr, lp, lvl, q_mask, ACC
            )
            o00, m00, v00 = _corner(
                value_base, start, y0, x0, h, w, q_mask, d_offs, d_mask, row, ACC
            )
            o01, m01, v01 = _corner(
                value_base, start, y0, x0 + 1, h, w, q_mask, d_offs, d_mask, row, ACC
            )
            o10, m10, v10 = _corner(
                value_base, start, y0 + 1, x0, h, w, q_mask, d_offs, d_mask, row, ACC
            )
            o11, m11, v11 = _corner(
                value_base, start, y0 + 1, x0 + 1, h, w, q_mask, d_offs, d_mask, row, ACC
            )
            gx = 1.0 - fx
            gy = 1.0 - fy
            # d out / d weight = <grad, bilinear sample>
            sampled = (
                (gy * gx)[:, None] * v00
                + (gy * fx)[:, None] * v01
                + (fy * gx)[:, None] * v10
                + (fy * fx)[:, None] * v11
            )
            tl.store(
                grad_attw_ptr + lp,
                tl.sum(g * sampled, axis=1).to(grad_attw_ptr.dtype.element_ty),
                mask=q_mask,
            )
            # d sample / d x_pixel and / d y_pixel; x_pixel = loc_x * W - 0.5
            dx = gy[:, None] * (v01 - v00) + fy[:, None] * (v11 - v10)
            dy = gx[:, None] * (v10 - v00) + fx[:, None] * (v11 - v01)
            gl_dtype = grad_loc_ptr.dtype.element_ty
            tl.store(
                grad_loc_ptr + 2 * lp, (aw * wf * tl.sum(g * dx, axis=1)).to(gl_dtype), mask=q_mask
            )
            tl.store(
                grad_loc_ptr + 2 * lp + 1,
                (aw * hf * tl.sum(g * dy, axis=1)).to(gl_dtype),
                mask=q_mask,
            )
            # scatter weight x bilinear coefficient x grad into the four corners
            tl.atomic_add(
                grad_value_base + o00,
                ((aw * gy * gx)[:, None] * g).to(gv_dtype),
                mask=m00,
                sem="relaxed",
            )
            tl.atomic_add(
                grad_value_base + o01,
                ((aw * gy * fx)[:, None] * g).to(gv_dtype),
                mask=m01,
                sem="relaxed",
            )
            tl.atomic_add(
                grad_value_base + o10,
                ((aw * fy * gx)[:, None] * g).to(gv_dtype),
                mask=m10,
                sem="relaxed",
            )
            tl.atomic_add(
                grad_value_base + o11,
                ((aw * fy * fx)[:, None] * g).to(gv_dtype),
                mask=m11,
                sem="relaxed",
            )
