/* A plain MXFP4 matrix-vector product, y = W x, for bench/native_gemv.py: how fast a native kernel streams the
 * experts' bytes on this CPU, to compare with ONNX Runtime's QMoE fp4 (bench/roofline.py). Not used by gptoss.
 *
 *   codes   uint8 [N, K/32, 16]   32 FP4 (e2m1) codes per block, low nibble first (the checkpoint's own bytes)
 *   scales  uint8 [N, K/32]       E8M0: the block's values are FP4 * 2^(e - 127)
 *   x       float [K];  y float [N]
 *
 * Exact arithmetic in float32: each block's sum of FP4 * x is scaled by its power of two (exact), so only the
 * order of the float32 additions differs from a dequantize-then-multiply reference. AVX-512F; OpenMP over rows.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 4096
#endif

static const float FP4[16] = {0.f, .5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f, -0.f, -.5f, -1.f, -1.5f, -2.f, -3.f, -4.f, -6.f};

/* x regrouped per block: the 16 even-position values, then the 16 odd ones (low and high nibbles). */
static void split_even_odd(const float *x, float *xs, int blocks) {
    for (int g = 0; g < blocks; g++)
        for (int i = 0; i < 16; i++) {
            xs[32 * g + i] = x[32 * g + 2 * i];
            xs[32 * g + 16 + i] = x[32 * g + 2 * i + 1];
        }
}

static float row_dot(const uint8_t *codes, const uint8_t *scales, const float *xs, const float *pow2, int blocks) {
    const __m512 lut = _mm512_loadu_ps(FP4);
    __m512 acc = _mm512_setzero_ps();
    for (int g = 0; g < blocks; g++) {
        /* software prefetch: the hardware prefetchers alone left this loop at ~5 GB/s per core from memory */
        if ((g & 3) == 0) _mm_prefetch((const char *)(codes + 16 * g + PREFETCH_BYTES), _MM_HINT_T0);
        if ((g & 63) == 0) _mm_prefetch((const char *)(scales + g + PREFETCH_BYTES / 16), _MM_HINT_T0);
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + 16 * g)));
        __m512 lo = _mm512_permutexvar_ps(v, lut);                        /* uses the index's low 4 bits */
        __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
        __m512 p = _mm512_mul_ps(lo, _mm512_loadu_ps(xs + 32 * g));
        p = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xs + 32 * g + 16), p);
        acc = _mm512_fmadd_ps(p, _mm512_set1_ps(pow2[scales[g]]), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

void mxfp4_gemv(const uint8_t *codes, const uint8_t *scales, const float *x, float *y, int n, int k, int threads) {
    int blocks = k / 32;
    float pow2[256];
    for (int e = 0; e < 256; e++) pow2[e] = e == 255 ? NAN : ldexpf(1.f, e - 127);
    float *xs = aligned_alloc(64, (size_t)blocks * 32 * sizeof(float));
    split_even_odd(x, xs, blocks);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int r = 0; r < n; r++)
        y[r] = row_dot(codes + (size_t)r * blocks * 16, scales + (size_t)r * blocks, xs, pow2, blocks);
    free(xs);
}
