// RMSNorm of a few float32 rows in one call (eager decoding).
//
// The C++ side of dhian.nn.cpu_kernels.rms_norm: y (M, E) = x · rsqrt(mean(x²) + eps) · w, with
// the products rounded as PyTorch's nn.RMSNorm rounds them, (x · r) · w (this file is built
// with -ffp-contract=off); only the order of the sum of squares differs (16 partial sums, one
// per AVX-512 lane). At decoding sizes PyTorch's RMSNorm is six small ops (pow, mean, add,
// rsqrt, two products): ~35 µs a call on one 576-wide row here, ~2 ms of every SmolLM2 step
// (61 norms); this is one call of a few µs.

#include <immintrin.h>

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>

namespace {

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(),
              "rms_norm: x must be a contiguous (M, E) float32 tensor, received ", x.sizes(), " ",
              x.scalar_type());
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(1) &&
                  weight.scalar_type() == at::kFloat && weight.is_contiguous(),
              "rms_norm: weight must be a contiguous (E,) float32 tensor with E = ", x.size(1),
              ", received ", weight.sizes(), " ", weight.scalar_type());
  const int64_t rows = x.size(0), e = x.size(1), body = e - e % 16;
  at::Tensor y = at::empty_like(x);
  const float* w = weight.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data_ptr<float>() + r * e;
    float* yr = y.data_ptr<float>() + r * e;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < body; i += 16) {
      const __m512 v = _mm512_loadu_ps(xr + i);
      acc = _mm512_add_ps(acc, _mm512_mul_ps(v, v));
    }
    float sum = _mm512_reduce_add_ps(acc);
    for (int64_t i = body; i < e; ++i) sum += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(e) + static_cast<float>(eps));
    const __m512 iv = _mm512_set1_ps(inv);
    for (int64_t i = 0; i < body; i += 16) {
      const __m512 scaled = _mm512_mul_ps(_mm512_loadu_ps(xr + i), iv);
      _mm512_storeu_ps(yr + i, _mm512_mul_ps(scaled, _mm512_loadu_ps(w + i)));
    }
    for (int64_t i = body; i < e; ++i) yr[i] = (xr[i] * inv) * w[i];
  }
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dhian_kernels, lib) {
  lib.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(dhian_kernels, CPU, lib) { lib.impl("rms_norm", &rms_norm); }
