// Few-row products with bfloat16 weights, float32 math (AVX-512F).
//
// The C++ side of dhian.nn.cpu_kernels.bf16_mm: y (M, N) = x (M, K) · Wᵀ for a few rows of
// float32 activations and a bf16 weight held in dhian.nn.bf16_linear's tiled layout
//   tiles (N/S, K/2, S, 2) bfloat16, S = 16 output features per tile:
//   element [t, p, o, i] = W[S·t + o, 2p + i]
// so one 64-byte line holds the 16 outputs' weights for two consecutive inputs. A bf16 value
// is the top half of a float32, so the line's 32-bit lanes widen exactly with two integer ops:
// shifted left 16 bits (input 2p) and masked to the top 16 bits (input 2p + 1). Each lane then
// feeds one FMA per row, the two inputs' products into separate accumulators (two independent
// FMA chains per row); the products are exact, the sums float32: float32 matmul with the
// bf16 weights widened, up to summation order. No bf16 instructions are needed (AVX512_BF16's
// dot product would round the activations to bf16 first).
// Each thread takes a run of whole tiles; a tile's bytes are contiguous, so a thread reads its
// share of the weight once, in order, with the vector lanes over the tile's 16 outputs (no
// horizontal sums), asking the cache for the line PREFETCH bytes ahead (2048: 24 GB/s over
// SmolLM2's 121 products at one row, 20 with none). Rows are register-blocked 8 at a time
// (more rows: chunks of 8, the tile re-read from cache).
// Registered as the torch op dhian_kernels::bf16_mm (the Python side adds its fake kernel).

#include <immintrin.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr int64_t TILE = 16;
constexpr int64_t MAX_ROWS = 8;
// bytes ahead of the current line that a tile's stream asks the cache for
#ifndef DHIAN_PREFETCH
#define DHIAN_PREFETCH 2048
#endif
constexpr int64_t PREFETCH = DHIAN_PREFETCH;

// One tile: 16 outputs, M rows, over K/2 input pairs.
template <int M>
inline void bf16_tile(const float* x, int64_t k, const uint16_t* tiles, int64_t tile, float* y,
                      int64_t n) {
  __m512 acc_even[M], acc_odd[M];
  for (int r = 0; r < M; ++r) acc_even[r] = acc_odd[r] = _mm512_setzero_ps();
  const __m512i top = _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
  const int64_t pairs = k / 2;
  const uint16_t* base = tiles + tile * pairs * TILE * 2;  // (K/2, 16, 2) of this tile
#pragma GCC unroll 2
  for (int64_t p = 0; p < pairs; ++p) {
    const char* line = reinterpret_cast<const char*>(base + p * TILE * 2);
    _mm_prefetch(line + PREFETCH, _MM_HINT_T0);
    const __m512i v = _mm512_loadu_si512(line);
    const __m512 w_even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    const __m512 w_odd = _mm512_castsi512_ps(_mm512_and_si512(v, top));
    for (int r = 0; r < M; ++r) {
      acc_even[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * k + 2 * p]), w_even, acc_even[r]);
      acc_odd[r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * k + 2 * p + 1]), w_odd, acc_odd[r]);
    }
  }
  for (int r = 0; r < M; ++r)
    _mm512_storeu_ps(y + r * n + tile * TILE, _mm512_add_ps(acc_even[r], acc_odd[r]));
}

at::Tensor bf16_mm(const at::Tensor& x, const at::Tensor& tiles) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous() && x.size(0) >= 1,
              "bf16_mm: x must be a contiguous (M, K) float32 tensor with M >= 1, received ",
              x.sizes(), " ", x.scalar_type());
  const int64_t k = x.size(1);
  TORCH_CHECK(tiles.dim() == 4 && tiles.scalar_type() == at::kBFloat16 && tiles.is_contiguous() &&
                  tiles.size(1) * 2 == k && tiles.size(2) == TILE && tiles.size(3) == 2,
              "bf16_mm: weight tiles must be contiguous bfloat16 (N/16, K/2, 16, 2), received ",
              tiles.sizes(), " ", tiles.scalar_type(), " for K = ", k);
  const int64_t rows = x.size(0), count = tiles.size(0), n = count * TILE;
  at::Tensor y = at::empty({rows, n}, x.options());
  const float* xp = x.data_ptr<float>();
  const uint16_t* wp = reinterpret_cast<const uint16_t*>(tiles.data_ptr<at::BFloat16>());
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, count, 8, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile)
      for (int64_t r = 0; r < rows; r += MAX_ROWS) {
        const float* xr = xp + r * k;
        float* yr = yp + r * n;
        switch (std::min(MAX_ROWS, rows - r)) {
          case 1: bf16_tile<1>(xr, k, wp, tile, yr, n); break;
          case 2: bf16_tile<2>(xr, k, wp, tile, yr, n); break;
          case 3: bf16_tile<3>(xr, k, wp, tile, yr, n); break;
          case 4: bf16_tile<4>(xr, k, wp, tile, yr, n); break;
          case 5: bf16_tile<5>(xr, k, wp, tile, yr, n); break;
          case 6: bf16_tile<6>(xr, k, wp, tile, yr, n); break;
          case 7: bf16_tile<7>(xr, k, wp, tile, yr, n); break;
          default: bf16_tile<8>(xr, k, wp, tile, yr, n); break;
        }
      }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dhian_kernels, lib) {
  lib.def("bf16_mm(Tensor x, Tensor tiles) -> Tensor");
}

TORCH_LIBRARY_IMPL(dhian_kernels, CPU, lib) { lib.impl("bf16_mm", &bf16_mm); }
