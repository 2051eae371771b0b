// One decoding step's RoPE and KV-cache write, float32, in one call (eager decoding).
//
// The C++ side of dhian.nn.cpu_kernels.rope_cache_write: from the fused q|k|v projection of one
// new token per row, qkv (B, (H + 2·Hkv)·D), and that token's RoPE tables cos, sin (B or 1, D):
//   - returns q rotated, (B, H·D) (= (B, Hkv, G, D): query head i is (i / G, i % G));
//   - writes k rotated and v as they are to k_buf / v_buf (B, Hkv, Tmax, D) at slot s_b
//     (slot (1,): one for every row; (B,): each row's own).
// RoPE in the half-split layout, computed as eager PyTorch computes
// x·cos + cat(−x₂, x₁)·sin: two rounded products and a rounded sum per element (this file is
// built with -ffp-contract=off), so the results are bit-identical to the PyTorch ops it
// replaces (tested). Replaces ~25 small eager ops per layer (split, views, two rotations,
// index_put ×2) — per-op overhead is what an eager decoding step spends most of its
// non-matmul time on. Plain loops; the compiler vectorises them.

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>

namespace {

inline void rotate(const float* x, const float* cos, const float* sin, int64_t d, float* out) {
  const int64_t half = d / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i] * cos[i];
    const float b = -x[half + i] * sin[i];
    out[i] = a + b;
  }
  for (int64_t i = half; i < d; ++i) {
    const float a = x[i] * cos[i];
    const float b = x[i - half] * sin[i];
    out[i] = a + b;
  }
}

at::Tensor rope_cache_write(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin,
                            const at::Tensor& slot, at::Tensor& k_buf, at::Tensor& v_buf,
                            int64_t heads) {
  TORCH_CHECK(k_buf.dim() == 4 && v_buf.sizes() == k_buf.sizes() && k_buf.is_contiguous() &&
                  v_buf.is_contiguous() && k_buf.scalar_type() == at::kFloat &&
                  v_buf.scalar_type() == at::kFloat,
              "rope_cache_write: k_buf, v_buf must be contiguous float32 (B, Hkv, Tmax, D) of "
              "one shape, received ", k_buf.sizes(), " and ", v_buf.sizes());
  const int64_t b = k_buf.size(0), kv_heads = k_buf.size(1), slots = k_buf.size(2);
  const int64_t d = k_buf.size(3);
  TORCH_CHECK(d % 2 == 0 && heads >= kv_heads && heads % kv_heads == 0,
              "rope_cache_write: head dim must be even and heads a multiple of the key/value "
              "heads, received D = ", d, ", H = ", heads, ", Hkv = ", kv_heads);
  TORCH_CHECK(qkv.scalar_type() == at::kFloat && qkv.is_contiguous() && qkv.dim() == 2 &&
                  qkv.size(0) == b && qkv.size(1) == (heads + 2 * kv_heads) * d,
              "rope_cache_write: qkv must be contiguous float32 (B, (H + 2·Hkv)·D) = (", b, ", ",
              (heads + 2 * kv_heads) * d, "), received ", qkv.sizes(), " ", qkv.scalar_type());
  for (const at::Tensor* t : {&cos, &sin})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() &&
                    (t->numel() == b * d || t->numel() == d),
                "rope_cache_write: cos, sin must be contiguous float32 with (B or 1) × D = ", d,
                " values, received ", t->sizes(), " ", t->scalar_type());
  TORCH_CHECK(slot.scalar_type() == at::kLong && slot.dim() == 1 &&
                  (slot.size(0) == 1 || slot.size(0) == b),
              "rope_cache_write: slot must be long (1,) or (B,), received ", slot.sizes(), " ",
              slot.scalar_type());
  const at::Tensor slots_here = slot.contiguous();
  const int64_t* sp = slots_here.data_ptr<int64_t>();
  for (int64_t i = 0; i < slot.size(0); ++i)
    TORCH_CHECK(sp[i] >= 0 && sp[i] < slots, "rope_cache_write: slot ", sp[i],
                " outside the cache's ", slots, " slots");
  at::Tensor q = at::empty({b, heads * d}, qkv.options());
  const float* src = qkv.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* snp = sin.data_ptr<float>();
  float* qp = q.data_ptr<float>();
  float* kp = k_buf.data_ptr<float>();
  float* vp = v_buf.data_ptr<float>();
  const int64_t width = (heads + 2 * kv_heads) * d;
  for (int64_t row = 0; row < b; ++row) {
    const float* x = src + row * width;
    const float* c = cp + (cos.numel() == d ? 0 : row * d);
    const float* s = snp + (sin.numel() == d ? 0 : row * d);
    const int64_t at_slot = sp[slot.size(0) == 1 ? 0 : row];
    for (int64_t h = 0; h < heads; ++h) rotate(x + h * d, c, s, d, qp + (row * heads + h) * d);
    for (int64_t h = 0; h < kv_heads; ++h) {
      const int64_t dst = ((row * kv_heads + h) * slots + at_slot) * d;
      rotate(x + (heads + h) * d, c, s, d, kp + dst);
      const float* v = x + (heads + kv_heads + h) * d;
      for (int64_t i = 0; i < d; ++i) vp[dst + i] = v[i];
    }
  }
  return q;
}

}  // namespace

// block_quant.cpp defines the library; this file adds its op to it
TORCH_LIBRARY_FRAGMENT(dhian_kernels, lib) {
  lib.def(
      "rope_cache_write(Tensor qkv, Tensor cos, Tensor sin, Tensor slot, Tensor(a!) k_buf, "
      "Tensor(b!) v_buf, int heads) -> Tensor");
}

TORCH_LIBRARY_IMPL(dhian_kernels, CPU, lib) { lib.impl("rope_cache_write", &rope_cache_write); }
