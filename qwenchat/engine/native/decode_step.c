/* One decode step of a Qwen2 model (int8 or int4 matrices, float32 everything else) in one call.
 *
 * Why: a token's arithmetic is ~0.5 GB of int8 weights streamed through qc_int8_matmul (about
 * 23 ms on two cores), but the same step written as torch ops also pays for ~500 small ops
 * (norms, RoPE, attention, SwiGLU, residuals, views), each a few microseconds of dispatch and
 * threading overhead on a vector of 896 floats: about 8 ms a token. Here those small steps are
 * plain loops between the matrix products, and the whole layer stack is one foreign call.
 *
 * The numbers are those of model.py's torch path (transformers' Qwen2) up to the order of float
 * sums: RMSNorm x * rsqrt(mean(x^2) + eps) * w; RoPE with the model's cos/sin tables (sin's first
 * half negated: out = x * cos + roll(x, D/2) * sin); softmax attention over the cached positions
 * with scale D^-1/2, query head h reading key/value head h / (Hq / Hkv); SwiGLU silu(gate) * up.
 *
 * Compiled into the same library as int8_kernel.c (int8_kernel.py builds both).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__AVX2__) && defined(__FMA__)
#define QC_AVX2 1
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

void qc_int8_matmul(const float *x, int64_t M, int64_t K, const int8_t *w, const float *s,
                    const float *bias, int64_t N, float *y);

int qc_int4_matmul(const float *x, int64_t M, int64_t K, const uint8_t *q, const uint16_t *s, const uint16_t *l,
                   int64_t group, const float *bias, int64_t N, float *y);

typedef struct {
    const void *w;      /* int8: (rows, cols); int4: packed (rows, padded cols / 2), native/int4_kernel.c */
    const void *scale;  /* int8: (rows,) float32; int4: (rows, groups) bfloat16 */
    const float *bias;  /* (rows,) or NULL */
    int64_t rows, cols;
    const void *low;    /* int4: (rows, groups) bfloat16 minimums; int8: unused */
    int64_t group, bits; /* bits: 8 or 4 */
} qc_matrix;

typedef struct {
    const float *input_norm, *post_attention_norm; /* (hidden,) */
    qc_matrix qkv;                                 /* rows: q (Hq*D), k (Hkv*D), v (Hkv*D) */
    qc_matrix o, gate_up, down;                    /* gate_up rows: gate (I), up (I) */
} qc_layer;

typedef struct {
    int64_t n_layers, hidden, n_heads, n_kv_heads, head_dim, intermediate;
    float eps;
    const qc_layer *layers;
} qc_model;

/* -- small vector helpers ------------------------------------------------------------------- */

#ifdef QC_AVX2
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* e^x for 8 floats (Cephes' expf: range reduction by ln 2, degree-5 polynomial; ~1 ulp). */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

static float dot(const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    float acc = 0.0f;
#ifdef QC_AVX2
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    acc = hsum(_mm256_add_ps(s0, s1));
#endif
    for (; i < n; i++) acc += a[i] * b[i];
    return acc;
}

/* y += a * x */
static void axpy(float a, const float *x, float *y, int64_t n) {
    int64_t i = 0;
#ifdef QC_AVX2
    const __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] += a * x[i];
}

static void add_into(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

static void rms_norm(const float *x, const float *w, float eps, int64_t n, float *out) {
    const float r = 1.0f / sqrtf(dot(x, x, n) / (float)n + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

/* exp(v[i] - max) in place over n values; returns their sum. */
static float exp_shifted(float *v, int64_t n, float max) {
    int64_t i = 0;
    float sum = 0.0f;
#ifdef QC_AVX2
    const __m256 m = _mm256_set1_ps(max);
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(v + i), m));
        _mm256_storeu_ps(v + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    sum = hsum(acc);
#endif
    for (; i < n; i++) sum += v[i] = expf(v[i] - max);
    return sum;
}

/* silu(gate) * up, written over gate (n values each). */
static void swiglu(float *gate, const float *up, int64_t n) {
    int64_t i = 0;
#ifdef QC_AVX2
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, g))));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
    }
#endif
    for (; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/* -- the pieces of a layer ------------------------------------------------------------------ */

static void matvec(const qc_matrix *m, const float *x, float *y) {
    if (m->bits == 4)
        qc_int4_matmul(x, 1, m->cols, m->w, m->scale, m->low, m->group, m->bias, m->rows, y);
    else
        qc_int8_matmul(x, 1, m->cols, m->w, m->scale, m->bias, m->rows, y);
}

/* Rotate `heads` consecutive vectors of length D at `v` in place, for one position. */
static void rope(float *v, int64_t heads, int64_t D, const float *cos, const float *sin_signed) {
    const int64_t half = D / 2;
    for (int64_t h = 0; h < heads; h++, v += D) {
        for (int64_t i = 0; i < half; i++) {
            const float a = v[i], b = v[i + half];
            v[i] = a * cos[i] + b * sin_signed[i];
            v[i + half] = b * cos[i + half] + a * sin_signed[i + half];
        }
    }
}

/* s[t] = dot(q, k[t]) * scale for t < n (k rows of length D). */
static void scores_of(const float *q, const float *k, int64_t n, int64_t D, float scale, float *s) {
    int64_t t = 0;
#ifdef QC_AVX2
    if (D % 8 == 0) { /* four keys at a time: one horizontal reduction serves all four */
        for (; t + 4 <= n; t += 4) {
            const float *k0 = k + t * D, *k1 = k0 + D, *k2 = k1 + D, *k3 = k2 + D;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t d = 0; d < D; d += 8) {
                const __m256 qd = _mm256_loadu_ps(q + d);
                a0 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(k0 + d), a0);
                a1 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(k1 + d), a1);
                a2 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(k2 + d), a2);
                a3 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(k3 + d), a3);
            }
            const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
            const __m128 sum4 = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            _mm_storeu_ps(s + t, _mm_mul_ps(sum4, _mm_set1_ps(scale)));
        }
    }
#endif
    for (; t < n; t++) s[t] = dot(q, k + t * D, D) * scale;
}

/* out (D) += sum over t < n of p[t] * v[t] (v rows of length D). */
static void add_weighted_sum(const float *p, const float *v, int64_t n, int64_t D, float *out) {
    int64_t d0 = 0;
#ifdef QC_AVX2
    for (; d0 + 64 <= D; d0 += 64) { /* 64 outputs stay in eight registers across all t */
        __m256 acc[8];
        for (int j = 0; j < 8; j++) acc[j] = _mm256_loadu_ps(out + d0 + 8 * j);
        for (int64_t t = 0; t < n; t++) {
            const __m256 pt = _mm256_set1_ps(p[t]);
            const float *vt = v + t * D + d0;
            for (int j = 0; j < 8; j++) acc[j] = _mm256_fmadd_ps(pt, _mm256_loadu_ps(vt + 8 * j), acc[j]);
        }
        for (int j = 0; j < 8; j++) _mm256_storeu_ps(out + d0 + 8 * j, acc[j]);
    }
#endif
    if (d0 < D)
        for (int64_t t = 0; t < n; t++) axpy(p[t], v + t * D + d0, out + d0, D - d0);
}

#define KV_TILE 64 /* cached positions per tile: 64 keys of 64 floats fill half of a 32 KB L1 */

/* Query heads h0..h1-1, which share one key/value head (k, v: its (max_len, D) rows): each tile of
 * cached positions is read from memory once and used by every head of the group while in L1 (at
 * a long context the cache, not the arithmetic, is what costs). */
static void attend_heads(const qc_model *m, int64_t h0, int64_t h1, const float *q, const float *k, const float *v,
                         int64_t max_len, int64_t n, float *scores, float *out) {
    const int64_t D = m->head_dim;
    const float scale = 1.0f / sqrtf((float)D);
    for (int64_t t0 = 0; t0 < n; t0 += KV_TILE) {
        const int64_t tn = n - t0 < KV_TILE ? n - t0 : KV_TILE;
        for (int64_t h = h0; h < h1; h++) scores_of(q + h * D, k + t0 * D, tn, D, scale, scores + h * max_len + t0);
    }
    for (int64_t h = h0; h < h1; h++) {
        float *s = scores + h * max_len, max = -INFINITY;
        for (int64_t t = 0; t < n; t++) max = s[t] > max ? s[t] : max;
        const float inv = 1.0f / exp_shifted(s, n, max);
        for (int64_t t = 0; t < n; t++) s[t] *= inv;
        for (int64_t d = 0; d < D; d++) out[h * D + d] = 0.0f;
    }
    for (int64_t t0 = 0; t0 < n; t0 += KV_TILE) {
        const int64_t tn = n - t0 < KV_TILE ? n - t0 : KV_TILE;
        for (int64_t h = h0; h < h1; h++) add_weighted_sum(scores + h * max_len + t0, v + t0 * D, tn, D, out + h * D);
    }
}

/* out (Hq*D) = softmax(q K^T / sqrt(D)) V for one query position against n cached ones;
 * k, v: this layer's cache, (Hkv, max_len, D); scores: Hq * max_len floats of scratch.
 * Work is split into tasks of whole key/value groups where there are enough of them for the
 * threads, else into slices of a group's query heads. */
static void attend(const qc_model *m, const float *q, const float *k, const float *v, int64_t max_len,
                   int64_t n, float *scores, float *out) {
    const int64_t group = m->n_heads / m->n_kv_heads, stride = max_len * m->head_dim;
    int64_t slices = 1;
#ifdef _OPENMP
    const int64_t threads = omp_get_max_threads();
    slices = threads <= m->n_kv_heads ? 1 : (threads + m->n_kv_heads - 1) / m->n_kv_heads;
    slices = slices < group ? slices : group;
#endif
    const int64_t per = (group + slices - 1) / slices;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < m->n_kv_heads * slices; task++) {
        const int64_t g = task / slices, h0 = g * group + (task % slices) * per;
        const int64_t h1 = h0 + per < (g + 1) * group ? h0 + per : (g + 1) * group;
        if (h0 < h1) attend_heads(m, h0, h1, q, k + g * stride, v + g * stride, max_len, n, scores, out);
    }
}

/* Scratch floats qc_decode_step needs for a cache of max_len positions. */
int64_t qc_decode_work_floats(const qc_model *m, int64_t max_len) {
    const int64_t qkv = (m->n_heads + 2 * m->n_kv_heads) * m->head_dim;
    return m->hidden + qkv + m->n_heads * m->head_dim + 2 * m->intermediate + m->n_heads * max_len;
}

/* x (hidden,): the token's embedding in, the last layer's output (before the final norm) out.
 * k_cache, v_cache: (n_layers, Hkv, max_len, D); this position's keys/values are written at `pos`
 * and positions 0..pos are attended. cos, sin_signed: the RoPE table rows for `pos` (D each). */
void qc_decode_step(const qc_model *m, float *x, float *k_cache, float *v_cache, int64_t max_len, int64_t pos,
                    const float *cos, const float *sin_signed, float *work) {
    const int64_t H = m->hidden, D = m->head_dim, hq = m->n_heads * D, hkv = m->n_kv_heads * D;
    const int64_t I = m->intermediate, layer_stride = m->n_kv_heads * max_len * D;
    /* xn: a normed input, then (once consumed) a projection's output before it joins x */
    float *xn = work, *qkv = xn + H, *att = qkv + hq + 2 * hkv, *gate_up = att + hq, *scores = gate_up + 2 * I;
    for (int64_t l = 0; l < m->n_layers; l++) {
        const qc_layer *L = &m->layers[l];
        float *kc = k_cache + l * layer_stride, *vc = v_cache + l * layer_stride;
        rms_norm(x, L->input_norm, m->eps, H, xn);
        matvec(&L->qkv, xn, qkv);
        rope(qkv, m->n_heads + m->n_kv_heads, D, cos, sin_signed); /* q and k heads are adjacent */
        for (int64_t g = 0; g < m->n_kv_heads; g++) {
            const float *kn = qkv + hq + g * D, *vn = qkv + hq + hkv + g * D;
            float *kd = kc + (g * max_len + pos) * D, *vd = vc + (g * max_len + pos) * D;
            for (int64_t d = 0; d < D; d++) kd[d] = kn[d], vd[d] = vn[d];
        }
        attend(m, qkv, kc, vc, max_len, pos + 1, scores, att);
        matvec(&L->o, att, xn);
        add_into(x, xn, H);
        rms_norm(x, L->post_attention_norm, m->eps, H, xn);
        matvec(&L->gate_up, xn, gate_up);
        swiglu(gate_up, gate_up + I, I);
        matvec(&L->down, gate_up, xn);
        add_into(x, xn, H);
    }
}
