/* A prompt's products with int8 weights on int8 matrix units (AMX): y = x W^T (+ b) for float32
 * rows x and an int8 matrix W (N, K) with one float32 scale per row.
 *
 * Why: a prompt multiplies many rows by every weight, so its products are arithmetic, not memory
 * traffic. Xeons since Sapphire Rapids multiply int8 tiles (TDPBSSD: 16x64 by 64x16 bytes into
 * 16x16 int32 sums) at ~30x the rate of float32 FMAs, and our weights are int8 already: no weight
 * is converted or copied, each is read from memory once per 96 rows of the prompt.
 *
 * The activations become int8 too, per row: q1 = round(x / s1), s1 = max|x| / 127. That step is
 * coarse where one value of a row dwarfs the rest (the MLP's down projection feeds on rows whose
 * largest value is 16-100x their root mean square), so such rows (max > ratio * rms) get a second
 * int8 row for what the first left over: q2 = round((x - q1 s1) / s2), s2 = s1 / 254, ~16 bits in
 * all. On the real model this keeps perplexity and greedy replies where bfloat16 products had them
 * (BENCHMARKS.md, twelfth session); every sum of int8 products is exact in int32 (K < 133,000).
 *
 * Two ways to the same numbers: AMX tiles where the CPU and the OS allow them (qc_amx_ready), and
 * plain C loops (tests on any CPU, and CPUs without AMX when forced). Their int32 sums are exact,
 * so both give the same bits.
 */
#define _GNU_SOURCE /* syscall() */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512F__) && defined(__linux__)
#define QC_AMX 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#endif

#define TILE_K 64 /* bytes of K per tile row */
#define TILE_N 16 /* weight rows per tile */

/* The activations' int8 rows, described: `rows` of them, each with its scale and the row of x
 * (and of y) it stands for; rows < M are x's own (and write their row of y), the second rows of
 * coarse rows come after (and add to it). Their values are computed where they are consumed. */
typedef struct {
    const float *x;
    int64_t ldx; /* floats from one row of x to the next */
    float *scale;
    int64_t *target;
    int64_t rows;
} Quantized;

/* Row r's int8 values at columns k0 .. k0 + n - 1. */
static void row_values(const Quantized *a, int64_t r, int64_t k0, int64_t n, int8_t *out) {
    const int64_t m = a->target[r];
    const float *x = a->x + m * a->ldx + k0;
    const float s1 = a->scale[m];
    if (isnan(s1)) { /* a row that is not finite: its products are NaN by its scale */
        memset(out, 0, (size_t)n);
        return;
    }
    if (r == m) {
#pragma omp simd
        for (int64_t k = 0; k < n; k++) out[k] = (int8_t)nearbyintf(x[k] / s1);
        return;
    }
    const float s2 = a->scale[r];
#pragma omp simd
    for (int64_t k = 0; k < n; k++) {
        float q1 = nearbyintf(x[k] / s1);
        float v = nearbyintf((x[k] - q1 * s1) / s2);
        out[k] = (int8_t)(v > 127.f ? 127.f : v < -127.f ? -127.f : v);
    }
}

/* Scales and targets of x's int8 rows. Returns 0 when out of memory. */
static int plan(const float *x, int64_t ldx, int64_t M, int64_t K, float ratio, Quantized *out) {
    float *s1 = malloc(sizeof(float) * (size_t)M);
    unsigned char *coarse = malloc((size_t)M);
    if (!s1 || !coarse) { free(s1); free(coarse); return 0; }
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *r = x + m * ldx;
        float top = 0.f, sq = 0.f;
#pragma omp simd reduction(max : top) reduction(+ : sq)
        for (int64_t k = 0; k < K; k++) {
            float v = fabsf(r[k]);
            top = v > top ? v : top;
            sq += r[k] * r[k]; /* a NaN anywhere in the row makes the sum NaN: plan() sees it */
        }
        s1[m] = top > 0.f ? top / 127.f : 1e-30f;
        coarse[m] = top > ratio * sqrtf(sq / (float)K);
        if (!isfinite(top) || isnan(sq)) { /* NaN or inf in the row: NaN out, as a float product gives */
            s1[m] = NAN;
            coarse[m] = 0;
        }
    }
    int64_t extra = 0;
    for (int64_t m = 0; m < M; m++) extra += coarse[m];
    out->x = x;
    out->ldx = ldx;
    out->rows = M + extra;
    out->scale = malloc(sizeof(float) * (size_t)out->rows);
    out->target = malloc(sizeof(int64_t) * (size_t)out->rows);
    if (!out->scale || !out->target) {
        free(out->scale); free(out->target); free(s1); free(coarse);
        return 0;
    }
    for (int64_t m = 0, e = M; m < M; m++) {
        out->scale[m] = s1[m];
        out->target[m] = m;
        if (coarse[m]) {
            out->scale[e] = s1[m] / 254.f;
            out->target[e++] = m;
        }
    }
    free(s1);
    free(coarse);
    return 1;
}

/* y[target[r], n] = or += scale[r] * sw[n] * sum (+ b[n] for a row's own first row). */
static inline void emit(const Quantized *a, int64_t r, int64_t n, int32_t sum, const float *sw,
                        const float *b, int64_t N, float *y) {
    float v = (float)sum * a->scale[r] * sw[n];
    float *dst = y + a->target[r] * N + n;
    if (a->target[r] == r) *dst = b ? v + b[n] : v;
    else *dst += v;
}

/* Returns 0 when out of memory. */
static int plain(const Quantized *a, int64_t K, const int8_t *w, const float *sw, const float *b,
                 int64_t N, float *y) {
    int8_t *q = malloc((size_t)(a->rows * K));
    if (!q) return 0;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < a->rows; r++) row_values(a, r, 0, K, q + r * K);
    /* first rows before second rows: a second row adds to what its first row wrote */
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const int8_t *wn = w + n * K;
        for (int64_t r = 0; r < a->rows; r++) {
            const int8_t *xr = q + r * K;
            int32_t sum = 0;
            for (int64_t k = 0; k < K; k++) sum += (int32_t)xr[k] * wn[k];
            emit(a, r, n, sum, sw, b, N, y);
        }
    }
    free(q);
    return 1;
}

#ifdef QC_AMX
/* Rows of x per pass over the weights, in blocks of 16: the packed rows (up to 256 x K bytes, 1.2
 * MB at K = 4,864) stay in the core's L2 while every band of weights meets them; a 2,048-row
 * prompt block in one pass read them from memory once per band, 1.5x slower. */
#define PASS_BLOCKS 16

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

static int amx_allowed = -1;

/* Every tile 16 lines of 64 bytes. tmm0-3: sums (16 channels x 16 rows of x, int32) for two
 * blocks of channels by two of rows; tmm4-5: weights (16 channels x 64 k); tmm6-7: x. */
static void configure(void) {
    TileConfig c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.rows[t] = 16;
        c.colsb[t] = 64;
    }
    _tile_loadconfig(&c);
}

/* A 16 x 16 matrix of 4-byte elements, one row per register, transposed in three rounds of
 * shuffles (the sums tile holds [channel][row of x], y wants rows; the packed x wants columns). */
static inline void transpose16(__m512i r[16]) {
    __m512i a[16], b[16];
    for (int p = 0; p < 16; p += 2) {
        a[p] = _mm512_unpacklo_epi32(r[p], r[p + 1]);
        a[p + 1] = _mm512_unpackhi_epi32(r[p], r[p + 1]);
    }
    for (int q = 0; q < 16; q += 4) {
        b[q] = _mm512_unpacklo_epi64(a[q], a[q + 2]);
        b[q + 1] = _mm512_unpackhi_epi64(a[q], a[q + 2]);
        b[q + 2] = _mm512_unpacklo_epi64(a[q + 1], a[q + 3]);
        b[q + 3] = _mm512_unpackhi_epi64(a[q + 1], a[q + 3]);
    }
    for (int c = 0; c < 4; c++) { /* b[4q + c], lane L: column 4L + c of rows 4q..4q+3 */
        __m512i t0 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x44), t1 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xEE);
        __m512i t2 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x44), t3 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xEE);
        r[c] = _mm512_shuffle_i32x4(t0, t2, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(t0, t2, 0xDD);
        r[8 + c] = _mm512_shuffle_i32x4(t1, t3, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(t1, t3, 0xDD);
    }
}

/* x's int8 rows in the layout TDPBSSD wants for its second operand: for each block of 16 rows
 * and each 64 columns of K, 16 lines of 64 bytes, line g holding columns 4g..4g+3 of each row:
 * the 16 rows' values, transposed as 4-byte elements. */
static int8_t *pack(const Quantized *a, int64_t K, int64_t blocks) {
    int8_t *p = aligned_alloc(64, (size_t)(blocks * 16 * K));
    if (!p) return NULL;
    const int64_t chunks = K / TILE_K;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t blk = 0; blk < blocks; blk++) {
        for (int64_t c = 0; c < chunks; c++) {
            int8_t rows16[16][64] __attribute__((aligned(64)));
            for (int64_t j = 0; j < 16; j++) {
                if (blk * 16 + j < a->rows) row_values(a, blk * 16 + j, c * TILE_K, TILE_K, rows16[j]);
                else memset(rows16[j], 0, 64);
            }
            __m512i v[16];
            for (int j = 0; j < 16; j++) v[j] = _mm512_load_si512(rows16[j]);
            transpose16(v);
            int8_t *tile = p + (blk * chunks + c) * 1024;
            for (int g = 0; g < 16; g++) _mm512_store_si512(tile + g * 64, v[g]);
        }
    }
    return p;
}

/* A row's first write goes around the caches (a streaming store): a long prompt's y is tens of
 * MB written 64 bytes per row at a time, and reading each line in before writing it (what a plain
 * store does) doubled the product's time (1,709 x 9,728 x 896: 19.9 -> 10.7 ms on the Xeon).
 * Needs y 64-byte aligned (torch's buffers are) and N % 16 == 0; an sfence ends each pass. */
static void store(const Quantized *a, int64_t blk, int64_t n0, const int32_t sums[16][16],
                  const float *sw, const float *b, int64_t N, float *y) {
    __m512i rows[16];
    for (int i = 0; i < 16; i++) rows[i] = _mm512_load_si512(sums[i]);
    transpose16(rows);
    const __m512 scale = _mm512_loadu_ps(sw + n0);
    const __m512 bias = b ? _mm512_loadu_ps(b + n0) : _mm512_setzero_ps();
    for (int64_t j = 0; j < 16; j++) {
        int64_t r = blk * 16 + j;
        if (r >= a->rows) break;
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(rows[j]), _mm512_set1_ps(a->scale[r])), scale);
        float *dst = y + a->target[r] * N + n0;
        if (a->target[r] == r) _mm512_stream_ps(dst, _mm512_add_ps(v, bias));
        else _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), v));
    }
}

/* One pass: this thread's share of the bands of 32 weight rows against x's blocks first..last-1,
 * two weight tiles by two x tiles into four sums at a time. */
static void amx_pass(const Quantized *a, int64_t K, const int8_t *w, const int8_t *packed, const float *sw,
                     const float *b, int64_t N, float *y, int64_t first, int64_t last) {
    const int64_t chunks = K / TILE_K;
    int32_t sums[4][16][16] __attribute__((aligned(64)));
#pragma omp for schedule(static) nowait
    for (int64_t n0 = 0; n0 < N; n0 += 2 * TILE_N) {
        const int two_n = n0 + TILE_N < N;
        const int8_t *w0 = w + n0 * K, *w1 = w0 + TILE_N * K;
        for (int64_t b0 = first; b0 < last; b0 += 2) {
            const int two_b = b0 + 1 < last;
            const int8_t *p0 = packed + b0 * chunks * 1024, *p1 = p0 + chunks * 1024;
            _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
            for (int64_t c = 0; c < chunks; c++) {
                _tile_loadd(4, w0 + c * TILE_K, K);
                _tile_loadd(6, p0 + c * 1024, 64);
                _tile_dpbssd(0, 4, 6);
                if (two_b) { _tile_loadd(7, p1 + c * 1024, 64); _tile_dpbssd(1, 4, 7); }
                if (two_n) {
                    _tile_loadd(5, w1 + c * TILE_K, K);
                    _tile_dpbssd(2, 5, 6);
                    if (two_b) _tile_dpbssd(3, 5, 7);
                }
            }
            _tile_stored(0, sums[0], 64);
            store(a, b0, n0, (const int32_t(*)[16])sums[0], sw, b, N, y);
            if (two_b) { _tile_stored(1, sums[1], 64); store(a, b0 + 1, n0, (const int32_t(*)[16])sums[1], sw, b, N, y); }
            if (two_n) { _tile_stored(2, sums[2], 64); store(a, b0, n0 + TILE_N, (const int32_t(*)[16])sums[2], sw, b, N, y); }
            if (two_n && two_b) { _tile_stored(3, sums[3], 64); store(a, b0 + 1, n0 + TILE_N, (const int32_t(*)[16])sums[3], sw, b, N, y); }
        }
    }
}

static void amx(const Quantized *a, int64_t K, const int8_t *w, const int8_t *packed, const float *sw,
                const float *b, int64_t N, float *y) {
    const int64_t blocks = (a->rows + 15) / 16;
#pragma omp parallel
    {
        configure();
        for (int64_t first = 0; first < blocks; first += PASS_BLOCKS) {
            amx_pass(a, K, w, packed, sw, b, N, y, first, first + PASS_BLOCKS < blocks ? first + PASS_BLOCKS : blocks);
            _mm_sfence(); /* this thread's streaming stores land before the barrier: a later pass's */
#pragma omp barrier /* second rows may add to them from another thread */
        }
        _tile_release();
    }
}
#endif

/* 1 when TDPBSSD may run here: the build has it and Linux granted this process the tile state. */
int qc_amx_ready(void) {
#ifdef QC_AMX
    if (amx_allowed < 0) amx_allowed = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return amx_allowed;
#else
    return 0;
#endif
}

/* 1 when the tiles take a product of K columns and N weight rows (whole tiles only). */
int qc_int8_prompt_fits(int64_t K, int64_t N) {
    return K % TILE_K == 0 && N % TILE_N == 0;
}

/* x (M, K) float32 (rows ldx floats apart), w (N, K) int8 with scales sw (N,), b (N,) or NULL -> y (M, N) float32.
 * use_amx: 1 the tiles (needs qc_amx_ready and qc_int8_prompt_fits), 0 the plain loops.
 * Returns 1, or 0 when it could not run (then y is untouched: out of memory, or tiles refused). */
int qc_int8_prompt_matmul(const float *x, int64_t ldx, int64_t M, int64_t K, const int8_t *w, const float *sw,
                          const float *b, int64_t N, float *y, float ratio, int use_amx) {
    if (use_amx && (!qc_amx_ready() || !qc_int8_prompt_fits(K, N) || (uintptr_t)y % 64 != 0)) return 0;
    if (M == 0 || N == 0) return 1;
    Quantized a;
    if (!plan(x, ldx, M, K, ratio, &a)) return 0;
    int ok = 0;
    if (!use_amx) ok = plain(&a, K, w, sw, b, N, y);
#ifdef QC_AMX
    else {
        int8_t *packed = pack(&a, K, (a.rows + 15) / 16);
        if (packed) amx(&a, K, w, packed, sw, b, N, y);
        ok = packed != NULL;
        free(packed);
    }
#endif
    free(a.scale);
    free(a.target);
    return ok;
}
