/* Local response normalisation over the channels of channels_last (N, H, W, C) maps, forward and backward,
 * in one pass over memory each: the kernels that eager PyTorch lacks (see alexnet/models/native.py).
 *
 *   d_i = k + alpha * sum_{j in window(i)} x_j^2,  window(i) = i - size/2 .. i + (size-1)/2 in i's tower
 *   y_i = x_i * d_i^-beta
 *   dx_i = g_i d_i^-beta - 2 alpha beta x_i * sum_{j : i in window(j)} g_j x_j d_j^(-beta-1)
 *
 * Each row is one pixel's C channels, in towers of C / groups; arithmetic is in float whatever the storage
 * (float or bf16, rounded to nearest even on the way out). d is recomputed in the backward pass from x, so the
 * forward pass writes y alone. Rows [begin, end) let the caller split the work between threads. */

#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_TOWER 4096 /* channels of one tower */
#define MAX_SIZE 64 /* the window, in channels: at most 63 */

/* One build for every x86-64 machine: gcc compiles each exported function for AVX-512, for AVX2 and for the
 * baseline, and the loader picks the best this CPU runs (the helpers are inlined into each). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define VECTORISED __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VECTORISED
#endif

typedef uint16_t bf16;

static inline float from_bf16(bf16 v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline bf16 to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    bits += 0x7fffu + ((bits >> 16) & 1u); /* round to nearest even (a quiet NaN stays one) */
    return (bf16)(bits >> 16);
}

/* Element i of a float or bf16 row, as float; and stored back. */
#define LOAD(row, i) (is_bf16 ? from_bf16(((const bf16 *)(row))[i]) : ((const float *)(row))[i])
#define STORE(row, i, v)                                                                                   \
    do {                                                                                                   \
        if (is_bf16)                                                                                       \
            ((bf16 *)(row))[i] = to_bf16(v);                                                               \
        else                                                                                               \
            ((float *)(row))[i] = (v);                                                                     \
    } while (0)

/* d^-beta: the paper's beta 0.75 as two roots and a division, which vectorise (powf does not). */
static inline float inverse_power(float d, float beta) {
    return beta == 0.75f ? 1.0f / sqrtf(d * sqrtf(d)) : powf(d, -beta);
}

/* One tower of one pixel's channels: y = x d^-beta. `padded` holds x^2 with `size / 2` zeros before and
 * `size` after, so every window is `size` adjacent entries. Inlined with `size` and the storage known. */
static inline __attribute__((always_inline)) void forward_tower(const void *restrict x, void *restrict y,
                                                                 int tower, int size, float alpha, float beta,
                                                                 float k, int is_bf16) {
    float padded[MAX_TOWER + 2 * MAX_SIZE];
    int before = size / 2;
    for (int i = 0; i < before; i++) padded[i] = 0.0f;
    for (int i = 0; i < size; i++) padded[before + tower + i] = 0.0f;
    for (int i = 0; i < tower; i++) {
        float v = LOAD(x, i);
        padded[before + i] = v * v;
    }
    for (int i = 0; i < tower; i++) {
        float sum = 0.0f;
        for (int o = 0; o < size; o++) sum += padded[i + o];
        STORE(y, i, LOAD(x, i) * inverse_power(k + alpha * sum, beta));
    }
}

/* One tower of one pixel's channels: dx = g p - 2 alpha beta x sum_j t_j, t_j = g_j p_j x_j / d_j, over the
 * j whose window holds i (i - (size-1)/2 .. i + size/2). */
static inline __attribute__((always_inline)) void backward_tower(const void *restrict x, const void *restrict g,
                                                                  void *restrict dx, int tower, int size,
                                                                  float alpha, float beta, float k,
                                                                  int is_bf16) {
    float padded[MAX_TOWER + 2 * MAX_SIZE], direct[MAX_TOWER];
    int before = size / 2, after = (size - 1) / 2;
    for (int i = 0; i < before; i++) padded[i] = 0.0f;
    for (int i = 0; i < size; i++) padded[before + tower + i] = 0.0f;
    for (int i = 0; i < tower; i++) {
        float v = LOAD(x, i);
        padded[before + i] = v * v;
    }
    float terms[MAX_TOWER + 2 * MAX_SIZE];
    for (int i = 0; i < after; i++) terms[i] = 0.0f;
    for (int i = 0; i < size; i++) terms[after + tower + i] = 0.0f;
    for (int i = 0; i < tower; i++) {
        float sum = 0.0f;
        for (int o = 0; o < size; o++) sum += padded[i + o];
        float d = k + alpha * sum;
        direct[i] = LOAD(g, i) * inverse_power(d, beta);
        terms[after + i] = direct[i] * LOAD(x, i) / d;
    }
    float factor = 2.0f * alpha * beta;
    for (int i = 0; i < tower; i++) {
        float windows = 0.0f;
        for (int o = 0; o < size; o++) windows += terms[i + o];
        STORE(dx, i, direct[i] - factor * LOAD(x, i) * windows);
    }
}

/* Rows [begin, end) of towers, with the paper's window of 5 compiled on its own (its loops unrolled). */
#define ROWS(call, element_size)                                                                           \
    int tower = channels / groups;                                                                         \
    for (int64_t r = begin; r < end; r++)                                                                  \
        for (int t = 0; t < groups; t++) {                                                                 \
            int64_t at = (r * channels + (int64_t)t * tower) * (element_size);                             \
            if (size == 5)                                                                                 \
                call(5);                                                                                   \
            else                                                                                           \
                call(size);                                                                                \
        }

int lrn_max_tower(void) { return MAX_TOWER; }
int lrn_max_size(void) { return MAX_SIZE; }

#define FORWARD(window) \
    forward_tower((const char *)x + at, (char *)y + at, tower, window, alpha, beta, k, is_bf16)
#define BACKWARD(window)                                                                                   \
    backward_tower((const char *)x + at, (const char *)g + at, (char *)dx + at, tower, window, alpha, beta, k, \
                   is_bf16)

VECTORISED void lrn_forward_f32(const void *x, void *y, int64_t begin, int64_t end, int channels, int groups,
                                int size, float alpha, float beta, float k) {
    const int is_bf16 = 0;
    ROWS(FORWARD, sizeof(float))
}

VECTORISED void lrn_forward_bf16(const void *x, void *y, int64_t begin, int64_t end, int channels, int groups,
                                 int size, float alpha, float beta, float k) {
    const int is_bf16 = 1;
    ROWS(FORWARD, sizeof(bf16))
}

VECTORISED void lrn_backward_f32(const void *x, const void *g, void *dx, int64_t begin, int64_t end, int channels,
                                 int groups, int size, float alpha, float beta, float k) {
    const int is_bf16 = 0;
    ROWS(BACKWARD, sizeof(float))
}

VECTORISED void lrn_backward_bf16(const void *x, const void *g, void *dx, int64_t begin, int64_t end,
                                  int channels, int groups, int size, float alpha, float beta, float k) {
    const int is_bf16 = 1;
    ROWS(BACKWARD, sizeof(bf16))
}
