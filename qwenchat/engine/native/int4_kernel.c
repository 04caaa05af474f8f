/* y = x W^T (+ b) for float32 rows x and a group-wise int4 matrix W (quantize_int4.py's layout).
 *
 * W: per row, every 32 columns (a chunk) in 16 bytes: byte j = column j (low nibble) | column
 * j + 16 (high nibble); per row and group of `group` columns (a multiple of 32) a bfloat16 scale
 * s and minimum l: w = s * q + l, q in 0..15. Rows are padded to whole groups (Kp columns).
 *
 * Decoding reads every weight once, so the speed is that of streaming the packed bytes (0.6x
 * int8's). Turning nibbles into floats for float FMAs costs ~20 instructions per 32 weights,
 * about what two AVX2 cores can do at the memory's speed; so x is rounded instead, per chunk of
 * 32 columns, to 16-bit integers (x ~= sx * xq, |xq| <= 32767: relative error 2^-16 of the
 * chunk's largest |x|, far below the weights' int4 rounding), and each chunk's 32 products are
 * exact integer sums (vpmaddwd), scaled once: sum_k w x = sum_chunks s sx (q . xq) + sum_groups
 * l (sum of x over the group). The second term uses the float x, computed once per x row.
 *
 * Paths: the AVX2 one (compiled for AVX2/FMA by target attributes, whatever the build's -march,
 * taken when the CPU reports AVX2 and FMA at run time) and a plain C one with the same integer
 * arithmetic (only the order of the float sums differs), taken elsewhere or when
 * qc_int4_use_generic(1) asks for it (tests run both). Built into the int8 kernel's library.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define QC4_X86 1
#include <immintrin.h>
#define QC4_AVX2 __attribute__((target("avx2,fma")))
#endif

#define CHUNK 32
#define PREFETCH_BYTES 8192 /* 2048: 2-4% slower on the 0.5B model's shapes (2-core AMD EPYC) */

static int use_generic = -1; /* -1: not decided yet; then 0 (AVX2) or 1 (plain C) */

static inline float bf16(uint16_t b) {
    union { uint32_t u; float f; } v = {(uint32_t)b << 16};
    return v.f;
}

/* -- x rows, prepared once per call ---------------------------------------------------------- */

typedef struct {
    int16_t *xq;  /* (M, Kp) */
    float *sx;    /* (M, Kp / 32): x ~= sx * xq per chunk */
    float *gsum;  /* (M, Kp / group): sum of x over each group */
} qc4_rows;

static int prepare(const float *x, int64_t M, int64_t K, int64_t Kp, int64_t group, qc4_rows *r, void **mem) {
    const int64_t chunks = Kp / CHUNK, groups = Kp / group;
    char *p = malloc((size_t)(M * Kp * 2 + M * chunks * 4 + M * groups * 4 + 64));
    if (!p) return 0;
    *mem = p;
    r->xq = (int16_t *)p;
    r->sx = (float *)(p + M * Kp * 2);
    r->gsum = r->sx + M * chunks;
    for (int64_t m = 0; m < M; m++) {
        const float *xm = x + m * K;
        int16_t *qm = r->xq + m * Kp;
        for (int64_t c = 0; c < chunks; c++) {
            const int64_t k0 = c * CHUNK, k1 = k0 + CHUNK < K ? k0 + CHUNK : K;
            float mx = 0.0f;
            for (int64_t k = k0; k < k1; k++) mx = fabsf(xm[k]) > mx ? fabsf(xm[k]) : mx;
            const float inv = mx > 0.0f ? 32767.0f / mx : 0.0f;
            r->sx[m * chunks + c] = mx / 32767.0f;
            for (int64_t k = k0; k < k0 + CHUNK; k++) qm[k] = k < k1 ? (int16_t)lrintf(xm[k] * inv) : 0;
        }
        for (int64_t g = 0; g < groups; g++) {
            const int64_t k0 = g * group, k1 = k0 + group < K ? k0 + group : K;
            float s = 0.0f;
            for (int64_t k = k0; k < k1; k++) s += xm[k];
            r->gsum[m * groups + g] = s;
        }
    }
    return 1;
}

/* sum over groups of l[g] * gsum[g] */
static float low_term(const uint16_t *low, const float *gsum, int64_t groups) {
    float acc = 0.0f;
    for (int64_t g = 0; g < groups; g++) acc += bf16(low[g]) * gsum[g];
    return acc;
}

/* -- plain C -------------------------------------------------------------------------------- */

static void rows_generic(const qc4_rows *r, int64_t M, int64_t Kp, const uint8_t *q, const uint16_t *s,
                         const uint16_t *l, int64_t group, int64_t N, int64_t n0, int64_t n1, float *y) {
    const int64_t chunks = Kp / CHUNK, groups = Kp / group, per = group / CHUNK;
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *qn = q + n * (Kp / 2);
        for (int64_t m = 0; m < M; m++) {
            const int16_t *xq = r->xq + m * Kp;
            const float *sx = r->sx + m * chunks;
            float acc = 0.0f;
            for (int64_t c = 0; c < chunks; c++) {
                const uint8_t *b = qn + c * 16;
                const int16_t *xc = xq + c * CHUNK;
                int32_t d = 0;
                for (int j = 0; j < 16; j++) d += (b[j] & 15) * xc[j] + (b[j] >> 4) * xc[j + 16];
                acc += (float)d * (sx[c] * bf16(s[n * groups + c / per]));
            }
            y[m * N + n] = acc + low_term(l + n * groups, r->gsum + m * groups, groups);
        }
    }
}

static void dequantize_generic(const uint8_t *q, const uint16_t *s, const uint16_t *l, int64_t group, int64_t n,
                               int64_t K, int64_t Kp, float *out) {
    const uint8_t *qn = q + n * (Kp / 2);
    const int64_t groups = Kp / group;
    for (int64_t k = 0; k < K; k++) {
        const uint8_t b = qn[(k / CHUNK) * 16 + (k % CHUNK) % 16];
        const int v = (k % CHUNK) < 16 ? (b & 15) : (b >> 4);
        const int64_t g = n * groups + k / group;
        out[n * K + k] = (float)v * bf16(s[g]) + bf16(l[g]); /* v * s is exact: one rounding */
    }
}

/* -- AVX2 ----------------------------------------------------------------------------------- */

#ifdef QC4_X86
QC4_AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 int32 partial sums of a chunk's 32 products q . xq */
QC4_AVX2 static inline __m256i chunk_dot(const uint8_t *b, __m256i xlo, __m256i xhi) {
    const __m128i m4 = _mm_set1_epi8(15);
    const __m128i v = _mm_loadu_si128((const __m128i *)b);
    const __m256i lo = _mm256_cvtepu8_epi16(_mm_and_si128(v, m4));
    const __m256i hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), m4));
    return _mm256_add_epi32(_mm256_madd_epi16(lo, xlo), _mm256_madd_epi16(hi, xhi));
}

QC4_AVX2 static float low_term_avx2(const uint16_t *low, const float *gsum, int64_t groups) {
    int64_t g = 0;
    __m256 acc = _mm256_setzero_ps();
    for (; g + 8 <= groups; g += 8) {
        const __m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(low + g)));
        acc = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(b, 16)), _mm256_loadu_ps(gsum + g), acc);
    }
    float r = hsum8(acc);
    for (; g < groups; g++) r += bf16(low[g]) * gsum[g];
    return r;
}

/* Eight chunks' coefficients s[c] * sx[c] of one W row as a vector (group == 32: one scale per
 * chunk), or built one by one for other group sizes and for a row's last, partial eight. */
QC4_AVX2 static inline __m256 coefs8(const uint16_t *s_row, const float *sx, int64_t c0, int64_t n, int64_t per) {
    if (per == 1 && n == 8) {
        const __m256i b = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s_row + c0)));
        return _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(b, 16)), _mm256_loadu_ps(sx + c0));
    }
    float t[8] = {0};
    for (int64_t j = 0; j < n; j++) t[j] = bf16(s_row[(c0 + j) / per]) * sx[c0 + j];
    return _mm256_loadu_ps(t);
}

/* 8 int32 partial sums of a chunk's 32 products q . xq, the 16 bytes zero-extended to 16-bit
 * lanes by the load itself: each lane's low nibble is column j, its high one column j + 16. */
QC4_AVX2 static inline __m256i chunk_dot16(const uint8_t *b, __m256i xlo, __m256i xhi) {
    const __m256i v = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)b));
    const __m256i lo = _mm256_and_si256(v, _mm256_set1_epi16(15)), hi = _mm256_srli_epi16(v, 4);
    return _mm256_add_epi32(_mm256_madd_epi16(lo, xlo), _mm256_madd_epi16(hi, xhi));
}

/* One x row (decoding): four W rows at a time share each chunk of xq; each chunk costs ~9
 * instructions a row (the scales of eight chunks are converted and multiplied at once, then
 * picked per chunk by a permute); the rows ahead are prefetched (four rows are one stream). */
QC4_AVX2 static int64_t one_row_avx2(const qc4_rows *r, int64_t Kp, const uint8_t *q, const uint16_t *s,
                                     const uint16_t *l, int64_t group, int64_t n, int64_t n1, float *y) {
    const int64_t chunks = Kp / CHUNK, groups = Kp / group, per = group / CHUNK, rb = Kp / 2;
    for (; n + 4 <= n1; n += 4) {
        const uint8_t *q0 = q + n * rb;
        const uint16_t *s0 = s + n * groups;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t c0 = 0; c0 < chunks; c0 += 8) {
            const int64_t nc = chunks - c0 < 8 ? chunks - c0 : 8;
            const __m256 k0 = coefs8(s0, r->sx, c0, nc, per), k1 = coefs8(s0 + groups, r->sx, c0, nc, per);
            const __m256 k2 = coefs8(s0 + 2 * groups, r->sx, c0, nc, per), k3 = coefs8(s0 + 3 * groups, r->sx, c0, nc, per);
            for (int64_t c = c0; c < c0 + nc; c++) {
                _mm_prefetch((const char *)(q0 + 4 * 16 * c + PREFETCH_BYTES), _MM_HINT_T0);
                const __m256i xlo = _mm256_loadu_si256((const __m256i *)(r->xq + c * CHUNK));
                const __m256i xhi = _mm256_loadu_si256((const __m256i *)(r->xq + c * CHUNK + 16));
                const __m256i pick = _mm256_set1_epi32((int)(c - c0));
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunk_dot16(q0 + c * 16, xlo, xhi)), _mm256_permutevar8x32_ps(k0, pick), a0);
                a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunk_dot16(q0 + rb + c * 16, xlo, xhi)), _mm256_permutevar8x32_ps(k1, pick), a1);
                a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunk_dot16(q0 + 2 * rb + c * 16, xlo, xhi)), _mm256_permutevar8x32_ps(k2, pick), a2);
                a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(chunk_dot16(q0 + 3 * rb + c * 16, xlo, xhi)), _mm256_permutevar8x32_ps(k3, pick), a3);
            }
        }
        const __m256 acc[4] = {a0, a1, a2, a3};
        for (int j = 0; j < 4; j++) y[n + j] = hsum8(acc[j]) + low_term_avx2(l + (n + j) * groups, r->gsum, groups);
    }
    return n;
}

/* Several x rows (a short prompt): each W row's chunk is unpacked once for four x rows. */
QC4_AVX2 static void many_rows_avx2(const qc4_rows *r, int64_t M, int64_t Kp, const uint8_t *q, const uint16_t *s,
                                    const uint16_t *l, int64_t group, int64_t N, int64_t n0, int64_t n1, float *y) {
    const int64_t chunks = Kp / CHUNK, groups = Kp / group, per = group / CHUNK;
    const __m128i m4 = _mm_set1_epi8(15);
    for (int64_t n = n0; n < n1; n++) {
        const uint8_t *qn = q + n * (Kp / 2);
        const uint16_t *sn = s + n * groups;
        for (int64_t m = 0; m < M; m += 4) {
            const int64_t rows = M - m < 4 ? M - m : 4;
            __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int64_t c = 0; c < chunks; c++) {
                const __m128i v = _mm_loadu_si128((const __m128i *)(qn + c * 16));
                const __m256i lo = _mm256_cvtepu8_epi16(_mm_and_si128(v, m4));
                const __m256i hi = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(v, 4), m4));
                const float sw = bf16(sn[c / per]);
                for (int64_t j = 0; j < rows; j++) {
                    const int16_t *xc = r->xq + (m + j) * Kp + c * CHUNK;
                    const __m256i d = _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_loadu_si256((const __m256i *)xc)),
                                                       _mm256_madd_epi16(hi, _mm256_loadu_si256((const __m256i *)(xc + 16))));
                    acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(sw * r->sx[(m + j) * chunks + c]), acc[j]);
                }
            }
            for (int64_t j = 0; j < rows; j++)
                y[(m + j) * N + n] = hsum8(acc[j]) + low_term_avx2(l + n * groups, r->gsum + (m + j) * groups, groups);
        }
    }
}

QC4_AVX2 static void rows_avx2(const qc4_rows *r, int64_t M, int64_t Kp, const uint8_t *q, const uint16_t *s,
                               const uint16_t *l, int64_t group, int64_t N, int64_t n0, int64_t n1, float *y) {
    if (M == 1) {
        const int64_t n = one_row_avx2(r, Kp, q, s, l, group, n0, n1, y);
        if (n < n1) many_rows_avx2(r, 1, Kp, q, s, l, group, N, n, n1, y);
    } else {
        many_rows_avx2(r, M, Kp, q, s, l, group, N, n0, n1, y);
    }
}

QC4_AVX2 static void dequantize_avx2(const uint8_t *q, const uint16_t *s, const uint16_t *l, int64_t group, int64_t n,
                                     int64_t K, int64_t Kp, float *out) {
    const uint8_t *qn = q + n * (Kp / 2);
    const int64_t groups = Kp / group, per = group / CHUNK, whole = K / CHUNK;
    const __m128i m4 = _mm_set1_epi8(15);
    float *on = out + n * K;
    for (int64_t c = 0; c < whole; c++) {
        const __m128i v = _mm_loadu_si128((const __m128i *)(qn + c * 16));
        const __m128i lo = _mm_and_si128(v, m4), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
        const __m256 sv = _mm256_set1_ps(bf16(s[n * groups + c / per])), lv = _mm256_set1_ps(bf16(l[n * groups + c / per]));
        const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int j = 0; j < 4; j++)
            _mm256_storeu_ps(on + c * CHUNK + 8 * j, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[j])), sv, lv));
    }
    if (whole * CHUNK < K) { /* the last, partial chunk */
        float tmp[CHUNK];
        const int64_t c = whole;
        for (int j = 0; j < CHUNK; j++) {
            const uint8_t b = qn[c * 16 + j % 16];
            tmp[j] = (float)(j < 16 ? (b & 15) : (b >> 4)) * bf16(s[n * groups + c / per]) + bf16(l[n * groups + c / per]);
        }
        memcpy(on + c * CHUNK, tmp, (size_t)(K - c * CHUNK) * sizeof(float));
    }
}
#endif

/* -- entry points ----------------------------------------------------------------------------- */

static int generic(void) {
    if (use_generic < 0) {
#ifdef QC4_X86
        __builtin_cpu_init();
        use_generic = !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
#else
        use_generic = 1;
#endif
    }
    return use_generic;
}

/* flag 1: the plain C path from now on; 0: the best the CPU has. Returns the path in use. */
int qc_int4_use_generic(int flag) {
    use_generic = -1;
    if (!flag) return generic() ? 1 : 2;
    use_generic = 1;
    return 1;
}

/* 2 when the AVX2 path runs, 1 for the plain C one. */
int qc_int4_path(void) { return generic() ? 1 : 2; }

/* y (M, N) = x (M, K) @ dequantized(W)^T + bias (N,) or no bias when NULL; W as described above,
 * rows of Kp / 2 bytes, scales and minimums (N, Kp / group). Returns 0 when out of memory. */
int qc_int4_matmul(const float *x, int64_t M, int64_t K, const uint8_t *q, const uint16_t *s, const uint16_t *l,
                   int64_t group, const float *bias, int64_t N, float *y) {
    const int64_t Kp = (K + group - 1) / group * group;
    qc4_rows r;
    void *mem = NULL;
    if (!prepare(x, M, K, Kp, group, &r, &mem)) return 0;
    const int plain = generic();
    const int64_t block = 64; /* rows per task */
    const int64_t nblocks = (N + block - 1) / block;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t n0 = b * block, n1 = n0 + block < N ? n0 + block : N;
#ifdef QC4_X86
        if (!plain)
            rows_avx2(&r, M, Kp, q, s, l, group, N, n0, n1, y);
        else
#endif
            rows_generic(&r, M, Kp, q, s, l, group, N, n0, n1, y);
        if (bias)
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = n0; n < n1; n++) y[m * N + n] += bias[n];
    }
    free(mem);
    return 1;
}

/* out (N, K) float32 = the dequantized W (a long prompt's float products take it from here). */
void qc_int4_dequantize(const uint8_t *q, const uint16_t *s, const uint16_t *l, int64_t group, int64_t N, int64_t K,
                        float *out) {
    const int64_t Kp = (K + group - 1) / group * group;
    const int plain = generic();
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
#ifdef QC4_X86
        if (!plain)
            dequantize_avx2(q, s, l, group, n, K, Kp, out);
        else
#endif
            dequantize_generic(q, s, l, group, n, K, Kp, out);
    }
}
