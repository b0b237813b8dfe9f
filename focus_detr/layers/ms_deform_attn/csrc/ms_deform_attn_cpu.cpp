// Multi-scale deformable attention on CPU: forward and backward of the `native` backend.
//
// out[n, q, h*D + d] = sum_{l, p} a[n, q, h, l, p] * bilinear(value level l, head h, location)
// with zero padding and align_corners=False: pixel coordinates x = loc_x * W_l - 0.5.
//
// Forward: one query at a time (parallel over N*Q), the D channels of a head accumulated in place
// in the output; the inner channel loop is contiguous in `value` (N, S, heads, D) and vectorizes.
// Values may be stored in bfloat16 or float16 (read, converted, accumulated in the locations'
// precision), so reduced-precision inference reads half the bytes and casts nothing.
// Backward: parallel over (n, h): each task owns value-gradient slice [n, :, h, :], so the
// scatter into it needs no atomics and the result is deterministic.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

struct Sizes {
  int64_t N, S, H, D, Q, L, P;
};

// Bilinear corners of one sampling point: x/y offsets, in-range flags and weights.
template <typename T>
struct Corners {
  int64_t offset[4];  // token offset inside the level (y * W + x)
  bool valid[4];
  T weight[4];        // bilinear weights (without the attention weight)
  T fx, fy;           // fractional parts, for the location gradient
  bool any;

  Corners(T loc_x, T loc_y, int64_t height, int64_t width) {
    const T x = loc_x * static_cast<T>(width) - T(0.5);
    const T y = loc_y * static_cast<T>(height) - T(0.5);
    any = x > T(-1) && y > T(-1) && x < static_cast<T>(width) && y < static_cast<T>(height);
    if (!any) return;
    const T x0f = std::floor(x), y0f = std::floor(y);
    const int64_t x0 = static_cast<int64_t>(x0f), y0 = static_cast<int64_t>(y0f);
    fx = x - x0f;
    fy = y - y0f;
    const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
    const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
    weight[0] = (T(1) - fy) * (T(1) - fx);
    weight[1] = (T(1) - fy) * fx;
    weight[2] = fy * (T(1) - fx);
    weight[3] = fy * fx;
    for (int k = 0; k < 4; ++k) {
      valid[k] = xs[k] >= 0 && ys[k] >= 0 && xs[k] < width && ys[k] < height;
      offset[k] = ys[k] * width + xs[k];
    }
  }
};

template <typename V, typename T>
void forward_kernel(const V* value, const int64_t* shapes, const int64_t* starts, const T* loc,
                    const T* attn, T* out, Sizes s) {
  const int64_t points = s.L * s.P;
  at::parallel_for(0, s.N * s.Q, 16, [&](int64_t begin, int64_t end) {
    for (int64_t nq = begin; nq < end; ++nq) {
      const int64_t n = nq / s.Q;
      for (int64_t h = 0; h < s.H; ++h) {
        T* a = out + (nq * s.H + h) * s.D;
        std::fill(a, a + s.D, T(0));
        const T* lq = loc + (nq * s.H + h) * points * 2;
        const T* wq = attn + (nq * s.H + h) * points;
        for (int64_t l = 0; l < s.L; ++l) {
          const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
          const V* level = value + ((n * s.S + starts[l]) * s.H + h) * s.D;
          for (int64_t p = 0; p < s.P; ++p) {
            const int64_t i = l * s.P + p;
            const Corners<T> c(lq[2 * i], lq[2 * i + 1], height, width);
            if (!c.any) continue;
            for (int k = 0; k < 4; ++k) {
              if (!c.valid[k]) continue;
              const V* v = level + c.offset[k] * s.H * s.D;
              const T cw = c.weight[k] * wq[i];
#pragma omp simd
              for (int64_t d = 0; d < s.D; ++d) a[d] += cw * static_cast<T>(v[d]);
            }
          }
        }
      }
    }
  });
}

template <typename T>
void backward_kernel(const T* value, const int64_t* shapes, const int64_t* starts, const T* loc,
                     const T* attn, const T* grad_out, T* grad_value, T* grad_loc, T* grad_attn,
                     Sizes s) {
  const int64_t points = s.L * s.P;
  at::parallel_for(0, s.N * s.H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nh = begin; nh < end; ++nh) {
      const int64_t n = nh / s.H, h = nh % s.H;
      for (int64_t q = 0; q < s.Q; ++q) {
        const int64_t row = (n * s.Q + q) * s.H + h;
        const T* lq = loc + row * points * 2;
        const T* wq = attn + row * points;
        const T* g = grad_out + row * s.D;
        T* glq = grad_loc + row * points * 2;
        T* gwq = grad_attn + row * points;
        for (int64_t l = 0; l < s.L; ++l) {
          const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
          const int64_t base = ((n * s.S + starts[l]) * s.H + h) * s.D;
          for (int64_t p = 0; p < s.P; ++p) {
            const int64_t i = l * s.P + p;
            const Corners<T> c(lq[2 * i], lq[2 * i + 1], height, width);
            if (!c.any) continue;
            const T a = wq[i];
            T dot[4] = {0, 0, 0, 0};  // <grad_out, value at corner k>
            for (int k = 0; k < 4; ++k) {
              if (!c.valid[k]) continue;
              const int64_t idx = base + c.offset[k] * s.H * s.D;
              const T* v = value + idx;
              T* gv = grad_value + idx;
              const T cw = c.weight[k] * a;
              T sum = 0;
#pragma omp simd reduction(+ : sum)
              for (int64_t d = 0; d < s.D; ++d) {
                sum += g[d] * v[d];
                gv[d] += cw * g[d];
              }
              dot[k] = sum;
            }
            gwq[i] = c.weight[0] * dot[0] + c.weight[1] * dot[1] + c.weight[2] * dot[2] +
                     c.weight[3] * dot[3];
            // d weight / d fx and d fy, times dx/dloc_x = W and dy/dloc_y = H
            const T dx = (T(1) - c.fy) * (dot[1] - dot[0]) + c.fy * (dot[3] - dot[2]);
            const T dy = (T(1) - c.fx) * (dot[2] - dot[0]) + c.fx * (dot[3] - dot[1]);
            glq[2 * i] = a * dx * static_cast<T>(width);
            glq[2 * i + 1] = a * dy * static_cast<T>(height);
          }
        }
      }
    }
  });
}

Sizes sizes_of(const at::Tensor& value, const at::Tensor& loc) {
  TORCH_CHECK(value.dim() == 4 && loc.dim() == 6, "value (N, S, heads, D) and locations "
              "(N, Q, heads, levels, points, 2) expected");
  return Sizes{value.size(0), value.size(1), value.size(2), value.size(3),
               loc.size(1),   loc.size(3),   loc.size(4)};
}

void check_common(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts,
                  const at::Tensor& loc, const at::Tensor& attn) {
  for (const auto* t : {&value, &shapes, &starts, &loc, &attn}) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous(), "CPU contiguous tensors expected");
  }
  TORCH_CHECK(shapes.scalar_type() == at::kLong && starts.scalar_type() == at::kLong,
              "spatial shapes and level starts must be int64");
  TORCH_CHECK(loc.scalar_type() == attn.scalar_type(),
              "locations and attention weights must share a dtype");
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts,
                   const at::Tensor& loc, const at::Tensor& attn) {
  check_common(value, shapes, starts, loc, attn);
  const Sizes s = sizes_of(value, loc);
  auto out = at::empty({s.N, s.Q, s.H * s.D}, loc.options());
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "ms_deform_attn_forward", [&] {
    using T = scalar_t;
    const auto* l = loc.data_ptr<T>();
    const auto* w = attn.data_ptr<T>();
    const auto* sh = shapes.data_ptr<int64_t>();
    const auto* st = starts.data_ptr<int64_t>();
    T* o = out.data_ptr<T>();
    switch (value.scalar_type()) {
      case at::kBFloat16:
        forward_kernel(value.data_ptr<at::BFloat16>(), sh, st, l, w, o, s);
        break;
      case at::kHalf:
        forward_kernel(value.data_ptr<at::Half>(), sh, st, l, w, o, s);
        break;
      default:
        TORCH_CHECK(value.scalar_type() == loc.scalar_type(),
                    "value must be bfloat16, float16 or the locations' dtype");
        forward_kernel(value.data_ptr<T>(), sh, st, l, w, o, s);
    }
  });
  return out;
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& shapes,
                                 const at::Tensor& starts, const at::Tensor& loc,
                                 const at::Tensor& attn, const at::Tensor& grad_out) {
  check_common(value, shapes, starts, loc, attn);
  TORCH_CHECK(value.scalar_type() == loc.scalar_type() &&
                  grad_out.scalar_type() == loc.scalar_type() && grad_out.is_contiguous(),
              "backward needs value, locations, weights and gradient of one dtype, contiguous");
  const Sizes s = sizes_of(value, loc);
  auto grad_value = at::zeros_like(value);
  auto grad_loc = at::zeros_like(loc);
  auto grad_attn = at::zeros_like(attn);
  AT_DISPATCH_FLOATING_TYPES(loc.scalar_type(), "ms_deform_attn_backward", [&] {
    backward_kernel(value.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(),
                    starts.data_ptr<int64_t>(), loc.data_ptr<scalar_t>(),
                    attn.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
                    grad_value.data_ptr<scalar_t>(), grad_loc.data_ptr<scalar_t>(),
                    grad_attn.data_ptr<scalar_t>(), s);
  });
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "multi-scale deformable attention forward (CPU)");
  m.def("backward", &backward, "multi-scale deformable attention backward (CPU)");
}
