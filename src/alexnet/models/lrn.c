/* Local response normalisation over the channels of channels_last (N, H, W, C) maps, forward and backward,
 * in one pass over memory each: the kernels that eager PyTorch lacks (see alexnet/models/native.py).
 *
 *   d_i = k + alpha * sum_{j in window(i)} x_j^2,  window(i) = i - size/2 .. i + (size-1)/2 in i's tower
 *   y_i = x_i * d_i^-beta
 *   dx_i = g_i d_i^-beta - 2 alpha beta x_i * sum_{j : i in window(j)} g_j x_j d_j^(-beta-1)
 *
 * Each row is one pixel's C channels, in towers of C / groups; arithmetic is in float whatever the storage
 * (float or bf16, rounded to nearest even on the way out). d is recomputed in the backward pass from x, so the
 * forward pass writes y alone. Rows [begin, end) let the caller split the work between threads.
 *
 * With `relu` set, the kernels take the preceding ReLU's input instead of its output: x above is max(input, 0),
 * and the backward pass's result is the gradient by that input (zero where it is not positive). The ReLU's own
 * passes over the map, forward and backward, are then saved (see ReLULRN in layers.py). */

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
/* ... after the ReLU, where `relu` is set. */
#define ACTIVATED(row, i) (relu ? fmaxf(LOAD(row, i), 0.0f) : LOAD(row, i))
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

/* Towers are done in blocks (the rows' towers lie one after another: tower s of the block starts s * tower
 * elements in), a pass over the whole block at a time: the squares of all its towers, then their windows.
 * Read right after they were written, a tower's shifted windows stalled on the store buffer; a block later,
 * they come from the cache (30% off the forward pass, measured). Each tower's slot in a buffer holds zeros
 * (`size / 2` before the squares, `(size - 1) / 2` before the backward pass's terms), the tower's values and
 * zeros to `tower + size`, so every window is `size` adjacent entries. Inlined with `size`, `beta` and the
 * storage known. */
#define BUFFER (MAX_TOWER + MAX_SIZE) /* floats in a block's buffer: one slot at least */

static inline __attribute__((always_inline)) void squares(const char *x, float *sq, int slots, int tower, int size,
                                                          int relu, int is_bf16) {
    int stride = tower + size, before = size / 2;
    for (int s = 0; s < slots; s++) {
        const char *row = x + (size_t)s * tower * (is_bf16 ? sizeof(bf16) : sizeof(float));
        float *p = sq + (size_t)s * stride;
        for (int i = 0; i < before; i++) p[i] = 0.0f;
        for (int i = 0; i < tower; i++) {
            float v = ACTIVATED(row, i);
            p[before + i] = v * v;
        }
        for (int i = before + tower; i < stride; i++) p[i] = 0.0f;
    }
}

/* y = x d^-beta for `slots` towers from x. */
static inline __attribute__((always_inline)) void forward_block(const char *x, char *y, int slots, int tower,
                                                                int size, float alpha, float beta, float k,
                                                                int relu, int is_bf16) {
    float sq[BUFFER];
    int stride = tower + size;
    size_t element = is_bf16 ? sizeof(bf16) : sizeof(float);
    squares(x, sq, slots, tower, size, relu, is_bf16);
    for (int s = 0; s < slots; s++) {
        const char *xs = x + (size_t)s * tower * element;
        char *ys = y + (size_t)s * tower * element;
        const float *p = sq + (size_t)s * stride;
        for (int i = 0; i < tower; i++) {
            float sum = 0.0f;
            for (int o = 0; o < size; o++) sum += p[i + o];
            STORE(ys, i, ACTIVATED(xs, i) * inverse_power(k + alpha * sum, beta));
        }
    }
}

/* dx = g p - 2 alpha beta x sum_j t_j, t_j = g_j p_j x_j / d_j, over the j whose window holds i
 * (i - (size-1)/2 .. i + size/2), for `slots` towers. */
static inline __attribute__((always_inline)) void backward_block(const char *x, const char *g, char *dx, int slots,
                                                                 int tower, int size, float alpha, float beta,
                                                                 float k, int relu, int is_bf16) {
    float sq[BUFFER], terms[BUFFER], direct[BUFFER];
    int stride = tower + size, after = (size - 1) / 2;
    size_t element = is_bf16 ? sizeof(bf16) : sizeof(float);
    float factor = 2.0f * alpha * beta;
    squares(x, sq, slots, tower, size, relu, is_bf16);
    for (int s = 0; s < slots; s++) {
        const char *xs = x + (size_t)s * tower * element, *gs = g + (size_t)s * tower * element;
        const float *p = sq + (size_t)s * stride;
        float *t = terms + (size_t)s * stride, *direct_s = direct + (size_t)s * tower;
        for (int i = 0; i < after; i++) t[i] = 0.0f;
        for (int i = 0; i < tower; i++) {
            float sum = 0.0f;
            for (int o = 0; o < size; o++) sum += p[i + o];
            float d = k + alpha * sum;
            direct_s[i] = LOAD(gs, i) * inverse_power(d, beta);
            t[after + i] = direct_s[i] * ACTIVATED(xs, i) / d;
        }
        for (int i = after + tower; i < stride; i++) t[i] = 0.0f;
    }
    for (int s = 0; s < slots; s++) {
        const char *xs = x + (size_t)s * tower * element;
        char *dxs = dx + (size_t)s * tower * element;
        const float *t = terms + (size_t)s * stride, *direct_s = direct + (size_t)s * tower;
        for (int i = 0; i < tower; i++) {
            float windows = 0.0f;
            for (int o = 0; o < size; o++) windows += t[i + o];
            float v = LOAD(xs, i), through = direct_s[i] - factor * (relu ? fmaxf(v, 0.0f) : v) * windows;
            STORE(dxs, i, relu && !(v > 0.0f) ? 0.0f : through);
        }
    }
}

/* The towers of rows [begin, end), block by block, with the paper's window and exponent (5, 0.75) compiled on
 * their own (the window's loops unrolled, the power without a branch), with and without the ReLU. */
#define BLOCKS(call, element_size)                                                                         \
    int tower = channels / groups, per_block = BUFFER / (tower + size);                                    \
    int64_t first = begin * groups, last = end * groups;                                                   \
    for (int64_t s = first; s < last; s += per_block) {                                                    \
        int slots = (int)(last - s < per_block ? last - s : per_block);                                    \
        size_t at = (size_t)s * tower * (element_size);                                                    \
        if (size == 5 && beta == 0.75f && relu)                                                            \
            call(5, 0.75f, 1);                                                                             \
        else if (size == 5 && beta == 0.75f)                                                               \
            call(5, 0.75f, 0);                                                                             \
        else                                                                                               \
            call(size, beta, relu);                                                                        \
    }

int lrn_max_tower(void) { return MAX_TOWER; }
int lrn_max_size(void) { return MAX_SIZE; }

#define FORWARD(window, exponent, activated) \
    forward_block((const char *)x + at, (char *)y + at, slots, tower, window, alpha, exponent, k, activated, is_bf16)
#define BACKWARD(window, exponent, activated)                                                              \
    backward_block((const char *)x + at, (const char *)g + at, (char *)dx + at, slots, tower, window, alpha, \
                   exponent, k, activated, is_bf16)

VECTORISED void lrn_forward_f32(const void *x, void *y, int64_t begin, int64_t end, int channels, int groups,
                                int size, float alpha, float beta, float k, int relu) {
    const int is_bf16 = 0;
    BLOCKS(FORWARD, sizeof(float))
}

VECTORISED void lrn_forward_bf16(const void *x, void *y, int64_t begin, int64_t end, int channels, int groups,
                                 int size, float alpha, float beta, float k, int relu) {
    const int is_bf16 = 1;
    BLOCKS(FORWARD, sizeof(bf16))
}

VECTORISED void lrn_backward_f32(const void *x, const void *g, void *dx, int64_t begin, int64_t end, int channels,
                                 int groups, int size, float alpha, float beta, float k, int relu) {
    const int is_bf16 = 0;
    BLOCKS(BACKWARD, sizeof(float))
}

VECTORISED void lrn_backward_bf16(const void *x, const void *g, void *dx, int64_t begin, int64_t end,
                                  int channels, int groups, int size, float alpha, float beta, float k, int relu) {
    const int is_bf16 = 1;
    BLOCKS(BACKWARD, sizeof(bf16))
}
