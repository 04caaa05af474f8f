/* Group-wise int4 quantization (quantize_int4.py's `_fit`, the same arithmetic in C).
 *
 * Why: the range search tries a few grids per group of 32 weights; as torch ops on (rows, groups,
 * 32) views that is a dozen passes over the matrix per grid, minutes for a 0.5B model on two
 * cores. Here each group stays in registers: a few seconds. The float operations are those of
 * the torch version in the same order, except the sums (another order: the squared errors in
 * float, the least-squares moments in double), so a near-tie between two grids may rarely go the
 * other way; either choice is a valid fit.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float from_bf16(uint16_t b) {
    union { uint32_t u; float f; } v = {(uint32_t)b << 16};
    return v.f;
}

/* float -> bfloat16, round to nearest even (torch's conversion; no NaNs here) */
static inline uint16_t to_bf16(float x) {
    union { float f; uint32_t u; } v = {x};
    return (uint16_t)((v.u + 0x7FFFu + ((v.u >> 16) & 1u)) >> 16);
}

/* one bfloat16 step towards -inf / +inf from b (as int16 bit patterns, like the torch version) */
static inline uint16_t step_down(uint16_t b) {
    const int16_t i = (int16_t)b;
    return (uint16_t)(i > 0 ? i - 1 : i == 0 ? -32767 : i + 1);
}

static inline uint16_t bf16_floor(float x) {
    const uint16_t b = to_bf16(x);
    return from_bf16(b) > x ? step_down(b) : b;
}

static inline uint16_t bf16_ceil(float x) { /* x > 0 */
    const uint16_t b = to_bf16(x);
    return from_bf16(b) < x ? (uint16_t)(b + 1) : b;
}

/* Squared error of the grid (scale, low) over x[0..valid), its codes written to q[0..group). */
static float fit_grid(const float *x, int64_t valid, int64_t group, float scale, float low, uint8_t *q) {
    float err = 0.0f;
    for (int64_t j = 0; j < group; j++) {
        const float v0 = j < valid ? x[j] : 0.0f;
        float v = nearbyintf((v0 - low) / scale);
        v = v < 0 ? 0 : v > 15 ? 15 : v;
        q[j] = (uint8_t)v;
        if (j < valid) {
            const float e = v * scale + low - v0;
            err += e * e;
        }
    }
    return err;
}

/* Lloyd steps from the range search's grid: the least-squares (scale, low) for the codes q, rounded
 * to bfloat16, then the codes for that grid; kept while the squared error falls (quantize_int4.py's
 * _refine). */
static void refine(const float *x, int64_t valid, int64_t group, int64_t steps, uint8_t *q, uint16_t *sb,
                   uint16_t *lb, float *err) {
    uint8_t cur[256];
    for (int64_t it = 0; it < steps; it++) {
        double sq = 0, sx = 0;
        for (int64_t j = 0; j < valid; j++) sq += q[j], sx += x[j];
        const double qm = sq / (double)valid, xm = sx / (double)valid;
        double var = 0, cov = 0;
        for (int64_t j = 0; j < valid; j++) {
            var += (q[j] - qm) * (q[j] - qm);
            cov += (q[j] - qm) * (x[j] - xm);
        }
        if (!(var > 0) || !(cov > 0)) return;
        const double scale = cov / var;
        const uint16_t s2 = to_bf16((float)scale), l2 = to_bf16((float)(xm - scale * qm));
        if (!(from_bf16(s2) > 0)) return;
        const float e2 = fit_grid(x, valid, group, from_bf16(s2), from_bf16(l2), cur);
        if (!(e2 < *err)) return;
        *err = e2, *sb = s2, *lb = l2;
        memcpy(q, cur, (size_t)group);
    }
}

/* w (N, K) float32 -> q (N, Kp / 2) packed nibbles, s and l (N, Kp / group) bfloat16; fracs: the
 * fractions of each group's range to try (the first is kept on ties); steps: refine's at most. */
void qc_int4_quantize(const float *w, int64_t N, int64_t K, int64_t group, const float *fracs, int64_t nfrac,
                      int64_t steps, uint8_t *q, uint16_t *s, uint16_t *l) {
    const int64_t Kp = (K + group - 1) / group * group, groups = Kp / group;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        uint8_t best_q[256], cur_q[256];
        if (group > 256) continue; /* refused by the caller */
        for (int64_t g = 0; g < groups; g++) {
            const float *wg = w + n * K + g * group;
            const int64_t valid = K - g * group < group ? K - g * group : group;
            float lo = INFINITY, hi = -INFINITY;
            for (int64_t j = 0; j < valid; j++) {
                lo = wg[j] < lo ? wg[j] : lo;
                hi = wg[j] > hi ? wg[j] : hi;
            }
            const float mid = (lo + hi) / 2;
            float best_err = INFINITY;
            uint16_t best_s = 0, best_l = 0;
            for (int64_t f = 0; f < nfrac; f++) {
                const float lo_f = mid + (lo - mid) * fracs[f], hi_f = mid + (hi - mid) * fracs[f];
                const uint16_t lb = bf16_floor(lo_f);
                const float low = from_bf16(lb);
                float step = (hi_f - low) / 15;
                step = step < 1e-30f ? 1e-30f : step;
                const uint16_t sb = bf16_ceil(step);
                const float scale = from_bf16(sb);
                const float err = fit_grid(wg, valid, group, scale, low, cur_q);
                if (f == 0 || err < best_err) {
                    best_err = err, best_s = sb, best_l = lb;
                    memcpy(best_q, cur_q, (size_t)group);
                }
            }
            if (valid > 0) refine(wg, valid, group, steps, best_q, &best_s, &best_l, &best_err);
            s[n * groups + g] = best_s;
            l[n * groups + g] = best_l;
            uint8_t *qg = q + n * (Kp / 2) + g * (group / 2);
            for (int64_t c = 0; c < group / 32; c++)
                for (int j = 0; j < 16; j++) qg[c * 16 + j] = (uint8_t)(best_q[c * 32 + j] | best_q[c * 32 + 16 + j] << 4);
        }
    }
}
