// Multi-threaded CSR x dense product for LightGCN propagation on CPU, as an XLA FFI custom call.
//
// Why: XLA's own CPU sparse kernel (BCSR @ dense) is single-threaded and, with the embedding width D = 64,
// a LightGCN batch spends ~95% of its time in six such products. This kernel splits the rows over
// threads by equal non-zero counts and keeps each output row in registers (AVX-512 / AVX2 for D % 16 / 8).
//
//   y[r, :] = sum_{k in [indptr[r], indptr[r+1])} data[k] * x[indices[k], :]
//   data f32[nnz], indices s32[nnz], indptr s32[rows + 1], x f32[cols, D]  ->  y f32[rows, D]
//
// Built at first use by rallrec_jax/retrieval/native.py (g++ -O3 -march=native); see that file.
#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

void RowsGeneric(const float* data, const int32_t* indices, const int32_t* indptr, const float* x, float* y,
                 int64_t r0, int64_t r1, int64_t d) {
  for (int64_t r = r0; r < r1; ++r) {
    float* yr = y + r * d;
    std::fill(yr, yr + d, 0.0f);
    for (int32_t k = indptr[r]; k < indptr[r + 1]; ++k) {
      const float w = data[k];
      const float* xr = x + static_cast<int64_t>(indices[k]) * d;
      for (int64_t j = 0; j < d; ++j) yr[j] += w * xr[j];
    }
  }
}

#if defined(__AVX512F__)
// D a multiple of 16: 16 floats per register, up to 4 registers (D = 64) held across the row's non-zeros.
void RowsSimd(const float* data, const int32_t* indices, const int32_t* indptr, const float* x, float* y,
              int64_t r0, int64_t r1, int64_t d) {
  for (int64_t c = 0; c < d; c += 64) {
    const int64_t width = std::min<int64_t>(64, d - c);  // 16, 32, 48 or 64
    for (int64_t r = r0; r < r1; ++r) {
      __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
             a3 = _mm512_setzero_ps();
      for (int32_t k = indptr[r]; k < indptr[r + 1]; ++k) {
        const __m512 w = _mm512_set1_ps(data[k]);
        const float* xr = x + static_cast<int64_t>(indices[k]) * d + c;
        a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr), a0);
        if (width > 16) a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 16), a1);
        if (width > 32) a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 32), a2);
        if (width > 48) a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(xr + 48), a3);
      }
      float* yr = y + r * d + c;
      _mm512_storeu_ps(yr, a0);
      if (width > 16) _mm512_storeu_ps(yr + 16, a1);
      if (width > 32) _mm512_storeu_ps(yr + 32, a2);
      if (width > 48) _mm512_storeu_ps(yr + 48, a3);
    }
  }
}
constexpr int64_t kSimdWidth = 16;
#elif defined(__AVX2__)
// D a multiple of 8: 8 floats per register, up to 8 registers (D = 64).
void RowsSimd(const float* data, const int32_t* indices, const int32_t* indptr, const float* x, float* y,
              int64_t r0, int64_t r1, int64_t d) {
  for (int64_t c = 0; c < d; c += 64) {
    const int64_t regs = std::min<int64_t>(64, d - c) / 8;
    for (int64_t r = r0; r < r1; ++r) {
      __m256 acc[8];
      for (int64_t j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
      for (int32_t k = indptr[r]; k < indptr[r + 1]; ++k) {
        const __m256 w = _mm256_set1_ps(data[k]);
        const float* xr = x + static_cast<int64_t>(indices[k]) * d + c;
        for (int64_t j = 0; j < regs; ++j) acc[j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(xr + 8 * j), acc[j]);
      }
      float* yr = y + r * d + c;
      for (int64_t j = 0; j < regs; ++j) _mm256_storeu_ps(yr + 8 * j, acc[j]);
    }
  }
}
constexpr int64_t kSimdWidth = 8;
#else
constexpr int64_t kSimdWidth = 0;
#endif

void Rows(const float* data, const int32_t* indices, const int32_t* indptr, const float* x, float* y,
          int64_t r0, int64_t r1, int64_t d) {
#if defined(__AVX512F__) || defined(__AVX2__)
  if (d % kSimdWidth == 0) return RowsSimd(data, indices, indptr, x, y, r0, r1, d);
#endif
  RowsGeneric(data, indices, indptr, x, y, r0, r1, d);
}

ffi::Error CsrSpmmImpl(ffi::Buffer<ffi::F32> data, ffi::Buffer<ffi::S32> indices, ffi::Buffer<ffi::S32> indptr,
                       ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y, int64_t threads) {
  const auto x_dims = x.dimensions();
  const auto y_dims = y->dimensions();
  if (x_dims.size() != 2 || y_dims.size() != 2 || x_dims[1] != y_dims[1]) {
    return ffi::Error::InvalidArgument("csr_spmm: x must be [cols, D] and y [rows, D]");
  }
  const int64_t rows = y_dims[0], d = x_dims[1], cols = x_dims[0];
  if (static_cast<int64_t>(indptr.element_count()) != rows + 1) {
    return ffi::Error::InvalidArgument("csr_spmm: indptr must hold rows + 1 entries");
  }
  const int32_t* ptr = indptr.typed_data();
  const int32_t* idx = indices.typed_data();
  const int64_t nnz = ptr[rows];
  if (nnz > static_cast<int64_t>(indices.element_count()) || nnz > static_cast<int64_t>(data.element_count())) {
    return ffi::Error::InvalidArgument("csr_spmm: indptr points past the end of data/indices");
  }
  // Column indices are checked once on the host (native.py) when the operator is built, not per product.
  (void)cols;
  const float* val = data.typed_data();
  const float* xs = x.typed_data();
  float* ys = y->typed_data();
  int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, rows));
  if (nnz < 65536) workers = 1;  // a thread start costs more than a small product
  if (workers == 1) {
    Rows(val, idx, ptr, xs, ys, 0, rows, d);
    return ffi::Error::Success();
  }
  // Row ranges with about equal non-zeros each.
  std::vector<int64_t> cut(workers + 1, rows);
  cut[0] = 0;
  for (int64_t t = 1; t < workers; ++t) {
    const int64_t target = nnz * t / workers;
    cut[t] = std::lower_bound(ptr, ptr + rows + 1, target) - ptr;
    cut[t] = std::max(cut[t], cut[t - 1]);
  }
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (int64_t t = 1; t < workers; ++t) pool.emplace_back(Rows, val, idx, ptr, xs, ys, cut[t], cut[t + 1], d);
  Rows(val, idx, ptr, xs, ys, cut[0], cut[1], d);
  for (auto& th : pool) th.join();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RallrecCsrSpmm, CsrSpmmImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("threads"));
