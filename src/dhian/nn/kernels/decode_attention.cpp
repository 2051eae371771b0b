// Attention of one decoding step over a static KV cache, float32 (AVX-512).
//
// The C++ side of dhian.nn.cpu_kernels.decode_attention: for each row b and key/value head h,
// the G query rows of that head (GQA: the G = H / Hkv query heads sharing it) attend over the
// cache slots the row's mask allows:
//   q (B, Hkv, G, D), k_buf / v_buf (B, Hkv, Tmax, D), mask (B, Tmax) bool (true = attend)
//   → out (B, Hkv, G, D) = softmax(q kᵀ / √D over allowed slots) v
// What SDPA computes with that boolean mask, with one difference in the work: only slots up to
// the row's last allowed one are read. A static cache of Tmax slots (a power of two ≥ 256,
// dhian.decoding.compiled_step) is mostly empty early in a generation; SDPA's flash kernel reads
// and masks all of it (and masks inside its blocks), this loop stops at the last slot in use.
// Rows × heads are split over the threads. Per (b, h): scores q·k for each allowed slot
// (4 FMAs and one horizontal sum per query row and slot at D = 64), a max, exp(s − max) with a
// vectorised exp (range reduction to 2^n · e^r, |r| ≤ ln2/2, a degree-7 polynomial; within
// ~2 ulp of expf), the sum, and the weighted sum of v. D must be a multiple of 16.

#include <immintrin.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

constexpr int64_t LANES = 16;

// e^x for x ≤ 0 (scores minus their max), 16 at a time; -inf gives 0.
inline __m512 exp_nonpositive(__m512 x) {
  const __m512 lowest = _mm512_set1_ps(-103.0f);  // below it e^x is 0 in float32
  const __mmask16 zero = _mm512_cmp_ps_mask(x, lowest, _CMP_LT_OQ);
  x = _mm512_max_ps(x, lowest);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // x − n·ln2 (hi)
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-6f), r);    // … (lo)
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(static_cast<__mmask16>(~zero), p, n);  // p · 2^n
}

void attend_one(const float* q, const float* k, const float* v, const bool* mask, int64_t g_count,
                int64_t d, int64_t length, float scale, float* scores, float* out) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const int64_t chunks = d / LANES;
  const int64_t padded = (length + LANES - 1) / LANES * LANES;
  // scores (G, padded): q·k / √D for allowed slots, −inf elsewhere
  for (int64_t g = 0; g < g_count; ++g) {
    float* row = scores + g * padded;
    for (int64_t t = length; t < padded; ++t) row[t] = neg_inf;
  }
  for (int64_t t = 0; t < length; ++t) {
    if (!mask[t]) {
      for (int64_t g = 0; g < g_count; ++g) scores[g * padded + t] = neg_inf;
      continue;
    }
    const float* kt = k + t * d;
    for (int64_t g = 0; g < g_count; ++g) {
      const float* qg = q + g * d;
      __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(qg), _mm512_loadu_ps(kt));
      for (int64_t c = 1; c < chunks; ++c)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(qg + c * LANES), _mm512_loadu_ps(kt + c * LANES), acc);
      scores[g * padded + t] = _mm512_reduce_add_ps(acc) * scale;
    }
  }
  for (int64_t g = 0; g < g_count; ++g) {
    float* row = scores + g * padded;
    __m512 best = _mm512_set1_ps(neg_inf);
    for (int64_t t = 0; t < padded; t += LANES) best = _mm512_max_ps(best, _mm512_loadu_ps(row + t));
    const float top = _mm512_reduce_max_ps(best);
    const __m512 shift = _mm512_set1_ps(top);
    __m512 total = _mm512_setzero_ps();
    for (int64_t t = 0; t < padded; t += LANES) {
      const __m512 p = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + t), shift));
      _mm512_storeu_ps(row + t, p);
      total = _mm512_add_ps(total, p);
    }
    const float inv = 1.0f / _mm512_reduce_add_ps(total);
    float* og = out + g * d;
    for (int64_t c = 0; c < chunks; ++c) {
      __m512 acc = _mm512_setzero_ps();
      for (int64_t t = 0; t < length; ++t)
        acc = _mm512_fmadd_ps(_mm512_set1_ps(row[t]), _mm512_loadu_ps(v + t * d + c * LANES), acc);
      _mm512_storeu_ps(og + c * LANES, _mm512_mul_ps(acc, _mm512_set1_ps(inv)));
    }
  }
}

at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k_buf, const at::Tensor& v_buf,
                            const at::Tensor& mask) {
  TORCH_CHECK(q.dim() == 4 && k_buf.dim() == 4 && v_buf.sizes() == k_buf.sizes(),
              "decode_attention: expected q (B, Hkv, G, D) and k_buf, v_buf (B, Hkv, Tmax, D), "
              "received ", q.sizes(), ", ", k_buf.sizes(), ", ", v_buf.sizes());
  const int64_t b = q.size(0), heads = q.size(1), g_count = q.size(2), d = q.size(3);
  const int64_t slots = k_buf.size(2);
  TORCH_CHECK(k_buf.size(0) == b && k_buf.size(1) == heads && k_buf.size(3) == d,
              "decode_attention: q ", q.sizes(), " does not match the cache ", k_buf.sizes());
  TORCH_CHECK(d % LANES == 0, "decode_attention: head dim must be a multiple of 16, received ", d);
  for (const at::Tensor* t : {&q, &k_buf, &v_buf})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous(),
                "decode_attention: q, k_buf, v_buf must be contiguous float32, received ",
                t->scalar_type());
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.is_contiguous() && mask.dim() == 2 &&
                  mask.size(0) == b && mask.size(1) == slots,
              "decode_attention: mask must be contiguous bool (B, Tmax) = (", b, ", ", slots,
              "), received ", mask.sizes(), " ", mask.scalar_type());
  at::Tensor out = at::zeros_like(q);
  const float* qp = q.data_ptr<float>();
  const float* kp = k_buf.data_ptr<float>();
  const float* vp = v_buf.data_ptr<float>();
  const bool* mp = mask.data_ptr<bool>();
  float* op = out.data_ptr<float>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  at::parallel_for(0, b * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t row = i / heads;
      const bool* allowed = mp + row * slots;
      int64_t length = slots;
      while (length > 0 && !allowed[length - 1]) --length;  // slots after the last allowed one
      if (length == 0) continue;  // nothing to attend: zeros
      scores.resize(g_count * ((length + LANES - 1) / LANES * LANES));
      attend_one(qp + i * g_count * d, kp + i * slots * d, vp + i * slots * d, allowed, g_count, d,
                 length, scale, scores.data(), op + i * g_count * d);
    }
  });
  return out;
}

}  // namespace

// block_quant.cpp defines the library; this file adds its op to it
TORCH_LIBRARY_FRAGMENT(dhian_kernels, lib) {
  lib.def("decode_attention(Tensor q, Tensor k_buf, Tensor v_buf, Tensor mask) -> Tensor");
}

TORCH_LIBRARY_IMPL(dhian_kernels, CPU, lib) { lib.impl("decode_attention", &decode_attention); }
