/* y = x W^T (+ b) for a few rows x (float32) and an int8 matrix W with one float32 scale per row.
 *
 * Decoding one token reads every weight once and does little arithmetic with it, so the speed is
 * set by how fast the weights stream from memory. This kernel keeps the activations in float32
 * (no extra rounding: the same numbers as dequantizing W and multiplying in float32, up to the
 * order of the sums), converts 8 int8 weights at a time to float32 in registers, and prefetches
 * the rows ahead so both cores stream at close to the memory bandwidth. torch's
 * _weight_int8pack_mm, the fallback, is compute-bound on AVX2 (bfloat16 activations) and reaches
 * about half of it.
 *
 * Built on the user's machine by int8_kernel.py (-O3 -march=native -fopenmp). The AVX2/FMA path is
 * the one we use; without it the plain loop below still computes the right numbers, and
 * qc_int8_isa() tells the loader not to bother. OpenMP shares torch's runtime (the same
 * libgomp.so.1 already loaded by torch), so the two never fight over the cores.
 */
#include <stddef.h>
#include <stdint.h>

#if defined(__AVX2__) && defined(__FMA__)
#define QC_AVX2 1
#include <immintrin.h>

#define PREFETCH_BYTES 4096 /* measured best on a 2-core EPYC: 1-16 KB all beat none by ~1.7x */

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 load8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* One row of x (decoding): four rows of W at a time share each load of x, two accumulators per
 * row hide the FMA latency, and the rows ahead are prefetched (the weights stream from memory). */
static int64_t one_x_row(const float *x, int64_t K, const int8_t *w, int64_t n, int64_t n1, float *y) {
    const int64_t k16 = K & ~(int64_t)15;
    for (; n + 4 <= n1; n += 4) {
        const int8_t *w0 = w + n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int64_t k = 0; k < k16; k += 16) {
            _mm_prefetch((const char *)(w0 + 4 * k + PREFETCH_BYTES), _MM_HINT_T0);
            __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
            a0 = _mm256_fmadd_ps(load8(w0 + k), x0, a0);
            b0 = _mm256_fmadd_ps(load8(w0 + k + 8), x1, b0);
            a1 = _mm256_fmadd_ps(load8(w1 + k), x0, a1);
            b1 = _mm256_fmadd_ps(load8(w1 + k + 8), x1, b1);
            a2 = _mm256_fmadd_ps(load8(w2 + k), x0, a2);
            b2 = _mm256_fmadd_ps(load8(w2 + k + 8), x1, b2);
            a3 = _mm256_fmadd_ps(load8(w3 + k), x0, a3);
            b3 = _mm256_fmadd_ps(load8(w3 + k + 8), x1, b3);
        }
        float r[4] = {hsum(_mm256_add_ps(a0, b0)), hsum(_mm256_add_ps(a1, b1)),
                      hsum(_mm256_add_ps(a2, b2)), hsum(_mm256_add_ps(a3, b3))};
        for (int64_t k = k16; k < K; k++) {
            r[0] += w0[k] * x[k];
            r[1] += w1[k] * x[k];
            r[2] += w2[k] * x[k];
            r[3] += w3[k] * x[k];
        }
        for (int j = 0; j < 4; j++) y[n + j] = r[j];
    }
    return n;
}

/* Several rows of x (a short prompt): two rows of W against four rows of x at a time, so each
 * weight is converted once per four products and the arithmetic, not the conversion, sets the
 * pace. The two W rows stay in L1 while every row of x passes by. */
static int64_t many_x_rows(const float *x, int64_t M, int64_t K, const int8_t *w, int64_t N,
                           int64_t n, int64_t n1, float *y) {
    const int64_t k8 = K & ~(int64_t)7;
    for (; n + 2 <= n1; n += 2) {
        const int8_t *w0 = w + n * K, *w1 = w0 + K;
        int64_t m = 0;
        for (; m + 4 <= M; m += 4) {
            const float *x0 = x + m * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            for (int64_t k = 0; k < k8; k += 8) {
                if (m == 0 && (k & 31) == 0) _mm_prefetch((const char *)(w0 + 2 * k + PREFETCH_BYTES), _MM_HINT_T0);
                __m256 v = load8(w0 + k), u = load8(w1 + k);
                __m256 t0 = _mm256_loadu_ps(x0 + k), t1 = _mm256_loadu_ps(x1 + k);
                __m256 t2 = _mm256_loadu_ps(x2 + k), t3 = _mm256_loadu_ps(x3 + k);
                a0 = _mm256_fmadd_ps(v, t0, a0);
                b0 = _mm256_fmadd_ps(u, t0, b0);
                a1 = _mm256_fmadd_ps(v, t1, a1);
                b1 = _mm256_fmadd_ps(u, t1, b1);
                a2 = _mm256_fmadd_ps(v, t2, a2);
                b2 = _mm256_fmadd_ps(u, t2, b2);
                a3 = _mm256_fmadd_ps(v, t3, a3);
                b3 = _mm256_fmadd_ps(u, t3, b3);
            }
            float r[8] = {hsum(a0), hsum(b0), hsum(a1), hsum(b1), hsum(a2), hsum(b2), hsum(a3), hsum(b3)};
            for (int64_t k = k8; k < K; k++) {
                r[0] += w0[k] * x0[k];
                r[1] += w1[k] * x0[k];
                r[2] += w0[k] * x1[k];
                r[3] += w1[k] * x1[k];
                r[4] += w0[k] * x2[k];
                r[5] += w1[k] * x2[k];
                r[6] += w0[k] * x3[k];
                r[7] += w1[k] * x3[k];
            }
            for (int j = 0; j < 4; j++) {
                y[(m + j) * N + n] = r[2 * j];
                y[(m + j) * N + n + 1] = r[2 * j + 1];
            }
        }
        for (; m < M; m++) { /* the last rows of x, fewer than four */
            const float *xm = x + m * K;
            __m256 a = _mm256_setzero_ps(), b = a;
            for (int64_t k = 0; k < k8; k += 8) {
                __m256 t = _mm256_loadu_ps(xm + k);
                a = _mm256_fmadd_ps(load8(w0 + k), t, a);
                b = _mm256_fmadd_ps(load8(w1 + k), t, b);
            }
            float r0 = hsum(a), r1 = hsum(b);
            for (int64_t k = k8; k < K; k++) {
                r0 += w0[k] * xm[k];
                r1 += w1[k] * xm[k];
            }
            y[m * N + n] = r0;
            y[m * N + n + 1] = r1;
        }
    }
    return n;
}
#endif

static void row_block(const float *x, int64_t M, int64_t K, const int8_t *w, const float *s,
                      const float *bias, int64_t N, int64_t n0, int64_t n1, float *y) {
    int64_t n = n0;
#ifdef QC_AVX2
    n = M == 1 ? one_x_row(x, K, w, n, n1, y) : many_x_rows(x, M, K, w, N, n, n1, y);
#endif
    for (; n < n1; n++) {
        const int8_t *wn = w + n * K;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * K;
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += wn[k] * xm[k];
            y[m * N + n] = acc;
        }
    }
    for (int64_t m = 0; m < M; m++) {
        float *ym = y + m * N;
        for (int64_t j = n0; j < n1; j++) ym[j] = ym[j] * s[j] + (bias ? bias[j] : 0.0f);
    }
}

/* y (M, N) = x (M, K) @ (w (N, K) * s[:, None])^T + bias (N,) or no bias when NULL.
 * Every array is contiguous, row-major; M is small (up to a few dozen rows). */
void qc_int8_matmul(const float *x, int64_t M, int64_t K, const int8_t *w, const float *s,
                    const float *bias, int64_t N, float *y) {
    const int64_t block = 64; /* rows per task: 64 x K int8 stay in L2 while M rows use them */
    const int64_t nblocks = (N + block - 1) / block;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t n0 = b * block, n1 = n0 + block < N ? n0 + block : N;
        row_block(x, M, K, w, s, bias, N, n0, n1, y);
    }
}

/* out (N, K) float32 = q (N, K) int8 * s[:, None], in one pass (a long prompt's float matrix
 * products take their weights from here: torch's convert-then-scale makes two passes). */
void qc_int8_dequantize(const int8_t *q, const float *s, int64_t N, int64_t K, float *out) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const int8_t *qn = q + n * K;
        float *on = out + n * K;
        int64_t k = 0;
#ifdef QC_AVX2
        const __m256 sn = _mm256_set1_ps(s[n]);
        for (; k + 8 <= K; k += 8) _mm256_storeu_ps(on + k, _mm256_mul_ps(load8(qn + k), sn));
#endif
        for (; k < K; k++) on[k] = qn[k] * s[n];
    }
}

/* 1 when built with OpenMP (both cores), 0 for one thread. */
int qc_int8_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* 1 when built with the AVX2/FMA path, 0 for the plain loop. */
int qc_int8_isa(void) {
#ifdef QC_AVX2
    return 1;
#else
    return 0;
#endif
}
