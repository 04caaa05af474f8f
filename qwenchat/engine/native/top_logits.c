/* The largest logits of a decode step recomputed from int8 rows (int4_head.py's second stage).
 *
 * y (M, N) holds approximate logits (the int4 output projection's). For each row m, the `top`
 * largest are found and replaced by the int8 rows' products: y[m, i] = scale[i] * (q[i] . x[m])
 * (+ bias[i]). Why in C: torch's topk over a 150K vocabulary takes ~0.5 ms and the gather,
 * conversion and product of the chosen rows another ~0.15 ms (2-core AMD EPYC), a fifth of
 * what the int4 copy saves; here each thread keeps a min-heap of its slice's largest values
 * (most values fail one comparison with the heap's smallest), the slices' heaps are merged,
 * and the rows are recomputed in parallel: tens of microseconds.
 */
#include <stdint.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define MAX_TOP 256

typedef struct {
    float v;
    int64_t i;
} entry;

/* a min-heap by value; ties broken by index, so the choice does not depend on the slicing */
static inline int less(entry a, entry b) { return a.v < b.v || (a.v == b.v && a.i > b.i); }

static void sift_down(entry *h, int64_t n, int64_t p) {
    for (;;) {
        int64_t c = 2 * p + 1;
        if (c >= n) return;
        if (c + 1 < n && less(h[c + 1], h[c])) c++;
        if (!less(h[c], h[p])) return;
        const entry t = h[c];
        h[c] = h[p], h[p] = t, p = c;
    }
}

static void sift_up(entry *h, int64_t c) {
    while (c > 0) {
        const int64_t p = (c - 1) / 2;
        if (!less(h[c], h[p])) return;
        const entry t = h[c];
        h[c] = h[p], h[p] = t, c = p;
    }
}

/* offer (v, i) to a heap of at most k entries holding n */
static inline void offer(entry *h, int64_t *n, int64_t k, float v, int64_t i) {
    const entry e = {v, i};
    if (*n < k) {
        h[*n] = e;
        sift_up(h, (*n)++);
    } else if (less(h[0], e)) {
        h[0] = e;
        sift_down(h, k, 0);
    }
}

static float dot_i8(const int8_t *q, const float *x, int64_t K) {
    float acc[8] = {0};
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
        for (int j = 0; j < 8; j++) acc[j] += (float)q[k + j] * x[k + j];
    float s = 0.0f;
    for (; k < K; k++) s += (float)q[k] * x[k];
    for (int j = 0; j < 8; j++) s += acc[j];
    return s;
}

/* Returns 0 when top is out of range (1..MAX_TOP, at most N) or memory ran out, else 1. */
int qc_top_logits(float *y, int64_t M, int64_t N, const float *x, int64_t K, const int8_t *q, const float *scale,
                  const float *bias, int64_t top) {
    if (top < 1 || top > MAX_TOP || top > N) return 0;
    int most = 1;
#ifdef _OPENMP
    most = omp_get_max_threads();
#endif
    entry *heaps = malloc(sizeof(entry) * (size_t)(most * top + top));
    int64_t *counts = malloc(sizeof(int64_t) * (size_t)most);
    if (!heaps || !counts) {
        free(heaps), free(counts);
        return 0;
    }
    entry *merged = heaps + most * top;
    for (int64_t m = 0; m < M; m++) {
        float *ym = y + m * N;
        int threads = 1;
#pragma omp parallel num_threads(most)
        {
            int t = 0;
#ifdef _OPENMP
            t = omp_get_thread_num();
#pragma omp single
            threads = omp_get_num_threads();
#endif
            entry *h = heaps + t * top;
            const int64_t a = N * t / threads, b = N * (t + 1) / threads;
            int64_t n = 0;
            for (int64_t i = a; i < b; i++) /* a NaN (a broken model) is not among the largest, nor kept */
                if (ym[i] == ym[i] && (n < top || ym[i] > h[0].v)) offer(h, &n, top, ym[i], i);
            counts[t] = n;
        }
        int64_t n = 0;
        for (int t = 0; t < threads; t++)
            for (int64_t j = 0; j < counts[t]; j++) offer(merged, &n, top, heaps[t * top + j].v, heaps[t * top + j].i);
        const float *xm = x + m * K;
#pragma omp parallel for schedule(static)
        for (int64_t j = 0; j < n; j++) {
            const int64_t i = merged[j].i;
            ym[i] = scale[i] * dot_i8(q + i * K, xm, K) + (bias ? bias[i] : 0.0f);
        }
    }
    free(heaps), free(counts);
    return 1;
}
