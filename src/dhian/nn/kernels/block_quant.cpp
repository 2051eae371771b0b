// Few-row products with llama.cpp's block-quantised weights, float32 math (AVX-512).
//
// The C++ side of dhian.nn.cpu_kernels: y (M, N) = x (M, K) · Wᵀ for a few rows
// of float32 activations and a weight held in dhian.nn.block_quant's tiled layouts (S = 16
// output features per tile, one AVX-512 vector of float32; G = K / 32 blocks):
//   q4_mm: packed (N/S, G, 16, S) uint8 — byte j of block g holds the code of input 32g + j in
//          its low nibble and of 32g + 16 + j in its high nibble — and d, m (N/S, G, S) float32
//          or float16 (widened exactly in registers);
//          weight w = q·d + m, computed as a rounded product plus a rounded sum (exactly the
//          file's float32 dequantisation; this file is built with -ffp-contract=off).
//   q8_mm: codes (V/S, G, 32, S) int8 and scales (V/S, G, S) float32 or float16; w = q·s.
// Each thread takes a run of whole tiles; a tile's bytes are contiguous, so a thread reads its
// share of the weight once, in order (with software prefetch PREFETCH bytes ahead), and the
// vector lanes run over the tile's 16 outputs (no horizontal sums). Per 32 weights: one 16-byte
// load, a widen, the two nibbles, two conversions, the exact dequantisation, and one FMA per row
// and nibble; the two nibbles' (Q8: even and odd inputs') products go to separate accumulators,
// so each row has two independent FMA chains (one chain was latency-bound: 5.7 → 4.1 ms for
// SmolLM2's 120 projections at one row).
// Experiments build variants with -DDHIAN_PREFETCH=… and -DDHIAN_LIB=<another op namespace>
// (this file alone: two variants side by side in one process).
// Registered as torch ops dhian_kernels::q4_mm / q8_mm (the Python side adds their fake
// kernels so torch.compile can place them in a graph).

#include <immintrin.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

namespace {

constexpr int64_t BLOCK = 32;
constexpr int64_t TILE = 16;
// rows register-blocked together (more rows are taken in chunks of this many)
constexpr int64_t MAX_ROWS = 8;
// bytes ahead of the current block that a tile's stream asks the cache for
#ifndef DHIAN_PREFETCH
#define DHIAN_PREFETCH 1024
#endif
constexpr int64_t PREFETCH = DHIAN_PREFETCH;

// A tile's 16 block maps (d, m or scales) as float32: stored as float32, or as float16 (the
// file's own precision) and widened exactly.
inline __m512 load_map(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load_map(const at::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// One tile of Q4 work: 16 outputs, M rows. The low and the high nibbles' products go to
// separate accumulators (two independent FMA chains per row).
template <int M, typename Map>
inline void q4_tile(const float* x, int64_t k, const uint8_t* packed, const Map* d, const Map* m,
                    int64_t g_count, int64_t tile, float* y, int64_t n) {
  __m512 acc_lo[M], acc_hi[M];
  for (int r = 0; r < M; ++r) acc_lo[r] = acc_hi[r] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi32(15);
  for (int64_t g = 0; g < g_count; ++g) {
    const int64_t block = tile * g_count + g;
    const uint8_t* codes = packed + block * (BLOCK / 2) * TILE;  // (16, S) bytes
    _mm_prefetch(reinterpret_cast<const char*>(codes) + PREFETCH, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(codes) + PREFETCH + 64, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(codes) + PREFETCH + 128, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(codes) + PREFETCH + 192, _MM_HINT_T0);
    const __m512 dv = load_map(d + block * TILE);
    const __m512 mv = load_map(m + block * TILE);
    const float* xb = x + g * BLOCK;
#pragma GCC unroll 4
    for (int64_t j = 0; j < BLOCK / 2; ++j) {
      const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + j * TILE));
      const __m512i q = _mm512_cvtepu8_epi32(bytes);  // (S,) int32
      const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(q, low4));
      const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4));
      const __m512 w_lo = _mm512_add_ps(_mm512_mul_ps(lo, dv), mv);  // weights of input 32g + j
      const __m512 w_hi = _mm512_add_ps(_mm512_mul_ps(hi, dv), mv);  // … of 32g + 16 + j
      for (int r = 0; r < M; ++r) {
        acc_lo[r] = _mm512_fmadd_ps(_mm512_set1_ps(xb[r * k + j]), w_lo, acc_lo[r]);
        acc_hi[r] = _mm512_fmadd_ps(_mm512_set1_ps(xb[r * k + j + BLOCK / 2]), w_hi, acc_hi[r]);
      }
    }
  }
  for (int r = 0; r < M; ++r)
    _mm512_storeu_ps(y + r * n + tile * TILE, _mm512_add_ps(acc_lo[r], acc_hi[r]));
}

// One tile of Q8 work: 16 outputs, M rows; even and odd inputs go to separate accumulators.
template <int M, typename Map>
inline void q8_tile(const float* x, int64_t k, const int8_t* codes_all, const Map* scales,
                    int64_t g_count, int64_t tile, float* y, int64_t n) {
  __m512 acc_even[M], acc_odd[M];
  for (int r = 0; r < M; ++r) acc_even[r] = acc_odd[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < g_count; ++g) {
    const int64_t block = tile * g_count + g;
    const int8_t* codes = codes_all + block * BLOCK * TILE;  // (32, S) bytes
    for (int64_t line = 0; line < BLOCK * TILE; line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(codes) + PREFETCH + line, _MM_HINT_T0);
    const __m512 sv = load_map(scales + block * TILE);
    const float* xb = x + g * BLOCK;
#pragma GCC unroll 2
    for (int64_t j = 0; j < BLOCK; j += 2) {
      const __m128i* row = reinterpret_cast<const __m128i*>(codes + j * TILE);
      const __m512 w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(row))), sv);
      const __m512 w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(row + 1))), sv);
      for (int r = 0; r < M; ++r) {
        acc_even[r] = _mm512_fmadd_ps(_mm512_set1_ps(xb[r * k + j]), w0, acc_even[r]);
        acc_odd[r] = _mm512_fmadd_ps(_mm512_set1_ps(xb[r * k + j + 1]), w1, acc_odd[r]);
      }
    }
  }
  for (int r = 0; r < M; ++r)
    _mm512_storeu_ps(y + r * n + tile * TILE, _mm512_add_ps(acc_even[r], acc_odd[r]));
}

void check(const at::Tensor& x, int64_t k, const at::Tensor& w, at::ScalarType code_type,
           int64_t block_rows, const char* name) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), name,
              ": x must be a contiguous (M, K) float32 tensor, received ", x.sizes(), " ",
              x.scalar_type());
  TORCH_CHECK(x.size(0) >= 1, name, ": x needs at least one row, received ", x.sizes());
  TORCH_CHECK(w.dim() == 4 && w.scalar_type() == code_type && w.is_contiguous() &&
                  w.size(2) == block_rows && w.size(3) == TILE && w.size(1) * BLOCK == k,
              name, ": weight codes must be contiguous (N/16, K/32, ", block_rows,
              ", 16), received ", w.sizes(), " ", w.scalar_type(), " for K = ", k);
}

void check_maps(const at::Tensor& w, const at::Tensor& map, const at::Tensor& first,
                const char* name) {
  TORCH_CHECK((map.scalar_type() == at::kFloat || map.scalar_type() == at::kHalf) &&
                  map.scalar_type() == first.scalar_type() && map.is_contiguous() &&
                  map.dim() == 3 && map.size(0) == w.size(0) && map.size(1) == w.size(1) &&
                  map.size(2) == TILE,
              name, ": block maps must be contiguous float32 or float16 (N/16, K/32, 16), all of one "
              "dtype, received ", map.sizes(), " ", map.scalar_type());
}

// Rows are taken in chunks of at most MAX_ROWS, each chunk one register-blocked pass over the
// tile (its bytes stay in L1 between chunks, so the weight is read from memory once).
#define DHIAN_BY_ROWS(rows, fn, ...)   \
  switch (rows) {                      \
    case 1: fn<1, Map>(__VA_ARGS__); break; \
    case 2: fn<2, Map>(__VA_ARGS__); break; \
    case 3: fn<3, Map>(__VA_ARGS__); break; \
    case 4: fn<4, Map>(__VA_ARGS__); break; \
    case 5: fn<5, Map>(__VA_ARGS__); break; \
    case 6: fn<6, Map>(__VA_ARGS__); break; \
    case 7: fn<7, Map>(__VA_ARGS__); break; \
    default: fn<8, Map>(__VA_ARGS__); break; \
  }

template <typename Map>
void q4_rows(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& d,
             const at::Tensor& m, at::Tensor& y) {
  const int64_t rows = x.size(0), k = x.size(1), tiles = packed.size(0), g_count = packed.size(1);
  const int64_t n = tiles * TILE;
  const float* xp = x.data_ptr<float>();
  const uint8_t* pp = packed.data_ptr<uint8_t>();
  const Map* dp = d.data_ptr<Map>();
  const Map* mp = m.data_ptr<Map>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, tiles, 8, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile)
      for (int64_t r = 0; r < rows; r += MAX_ROWS)
        DHIAN_BY_ROWS(std::min(MAX_ROWS, rows - r), q4_tile, xp + r * k, k, pp, dp, mp, g_count,
                      tile, yp + r * n, n);
  });
}

template <typename Map>
void q8_rows(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales,
             at::Tensor& y) {
  const int64_t rows = x.size(0), k = x.size(1), tiles = codes.size(0), g_count = codes.size(1);
  const int64_t n = tiles * TILE;
  const float* xp = x.data_ptr<float>();
  const int8_t* cp = codes.data_ptr<int8_t>();
  const Map* sp = scales.data_ptr<Map>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, tiles, 8, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile)
      for (int64_t r = 0; r < rows; r += MAX_ROWS)
        DHIAN_BY_ROWS(std::min(MAX_ROWS, rows - r), q8_tile, xp + r * k, k, cp, sp, g_count, tile,
                      yp + r * n, n);
  });
}

at::Tensor q4_mm(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& d,
                 const at::Tensor& m) {
  check(x, x.size(-1), packed, at::kByte, BLOCK / 2, "q4_mm");
  check_maps(packed, d, d, "q4_mm");
  check_maps(packed, m, d, "q4_mm");
  at::Tensor y = at::empty({x.size(0), packed.size(0) * TILE}, x.options());
  if (d.scalar_type() == at::kHalf)
    q4_rows<at::Half>(x, packed, d, m, y);
  else
    q4_rows<float>(x, packed, d, m, y);
  return y;
}

at::Tensor q8_mm(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scales) {
  check(x, x.size(-1), codes, at::kChar, BLOCK, "q8_mm");
  check_maps(codes, scales, scales, "q8_mm");
  at::Tensor y = at::empty({x.size(0), codes.size(0) * TILE}, x.options());
  if (scales.scalar_type() == at::kHalf)
    q8_rows<at::Half>(x, codes, scales, y);
  else
    q8_rows<float>(x, codes, scales, y);
  return y;
}

}  // namespace

#ifndef DHIAN_LIB
#define DHIAN_LIB dhian_kernels
#endif
#define DHIAN_LIBRARY(ns, lib) TORCH_LIBRARY(ns, lib)
#define DHIAN_LIBRARY_IMPL(ns, lib) TORCH_LIBRARY_IMPL(ns, CPU, lib)

DHIAN_LIBRARY(DHIAN_LIB, lib) {
  lib.def("q4_mm(Tensor x, Tensor packed, Tensor d, Tensor m) -> Tensor");
  lib.def("q8_mm(Tensor x, Tensor codes, Tensor scales) -> Tensor");
}

DHIAN_LIBRARY_IMPL(DHIAN_LIB, lib) {
  lib.impl("q4_mm", &q4_mm);
  lib.impl("q8_mm", &q8_mm);
}
