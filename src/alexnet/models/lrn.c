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
 * passes over the map, forward and backward, are then saved (see Sequential in layers.py). The lrn_pool_ kernels
 * at the end also do the max-pool after the layer.
 *
 * Three implementations: plain C loops over blocks of towers (any window and exponent; gcc vectorises them for
 * each x86-64 level), AVX-512 code for the paper's window on whole 16-channel vectors, and the pooling kernels,
 * which call either on a row of pixels at a time. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
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

/* The paper's window (5) and exponent (0.75) on towers of whole 16-channel vectors, with AVX-512 and AVX512-BF16
 * (the AMX Xeons and Zen 4s, which train in bf16): each window from shifts (valignd) of a vector and its
 * neighbours, all in registers; d^-0.75 and 1/d from the reciprocal-root instruction (14 bits: a Newton step for
 * float storage, none for bf16, which keeps 8). A tower's vectors are taken in order, the backward pass one vector
 * behind (its windows need the next vector's terms). No buffers. On an AMX Xeon (2 threads, bf16, both of
 * alexnet_paper's LRN layers at batch 128, ReLU fused): forward 24 -> 14 ms, backward 38 -> 19 ms against the
 * loops above (a copy of the same maps: 9-10 ms). 512-bit arithmetic has two ports there: the loops' time is
 * their count of vector operations, which is why the windows are sums of pairs and bf16 skips the Newton steps. */
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"), always_inline)) static inline
#define AVX512_ENTRY __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static

/* The CPU check, made once. Worker threads may make it at the same time and store the same value: relaxed
 * atomics make that a benign race in C's terms too. */
static int has_avx512(void) {
    static int cached = -1;
    int known = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
        __atomic_store_n(&cached, known, __ATOMIC_RELAXED);
    }
    return known;
}

AVX512 __m512 load16(const char *row, int v, int relu, int is_bf16) {
    __m512 x = is_bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(
                             _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)row + v)), 16))
                       : _mm512_loadu_ps((const float *)row + 16 * v);
    return relu ? _mm512_max_ps(x, _mm512_setzero_ps()) : x;
}

AVX512 void store16(char *row, int v, __m512 value, int is_bf16) {
    if (is_bf16)
        _mm256_storeu_si256((__m256i *)row + v, (__m256i)_mm512_cvtneps_pbh(value)); /* nearest even */
    else
        _mm512_storeu_ps((float *)row + 16 * v, value);
}

/* Lanes n.. of low, then high's: (low, high)[i + n] for the 16 i. */
#define SHIFT(high, low, n)                                                                                \
    _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(high), _mm512_castps_si512(low), n))

/* b[i-2] + b[i-1] + b[i] + b[i+1] + b[i+2] for the 16 i of b, with c the vector after b: p[i-2] + p[i] + b[i+2]
 * from the sums of pairs p[i] = b[i] + b[i+1] (three shifts, three additions). *pairs holds those of the vector
 * before b and gets b's; before a tower's first vector f it is first_pairs(f). */
AVX512 __m512 window5(__m512 *pairs, __m512 b, __m512 c) {
    __m512 ours = _mm512_add_ps(b, SHIFT(c, b, 1));
    __m512 sum = _mm512_add_ps(_mm512_add_ps(SHIFT(ours, *pairs, 14), ours), SHIFT(c, b, 2));
    *pairs = ours;
    return sum;
}

/* The pairs before a tower: zeros but the last, 0 + f[0]. */
AVX512 __m512 first_pairs(__m512 f) { return SHIFT(f, _mm512_setzero_ps(), 1); }

/* 1/sqrt(v): the 14-bit estimate, and for float storage a Newton step to float's precision (bf16 keeps 8 bits). */
AVX512 __m512 rsqrt16(__m512 v, int is_bf16) {
    __m512 y = _mm512_rsqrt14_ps(v);
    if (is_bf16)
        return y;
    __m512 half_vy = _mm512_mul_ps(_mm512_mul_ps(v, y), _mm512_set1_ps(0.5f));
    return _mm512_mul_ps(y, _mm512_fnmadd_ps(half_vy, y, _mm512_set1_ps(1.5f)));
}

/* d^-0.75 = r sqrt(r) = r^2 / sqrt(r) with r = d^-1/2; *inverse = 1/d = r^2. */
AVX512 __m512 power16(__m512 d, __m512 *inverse, int is_bf16) {
    __m512 r = rsqrt16(d, is_bf16);
    *inverse = _mm512_mul_ps(r, r);
    return _mm512_mul_ps(*inverse, rsqrt16(r, is_bf16));
}

AVX512 void forward_avx512(const char *x, char *y, int64_t towers, int vectors, float alpha, float k, int relu,
                           int is_bf16) {
    size_t bytes = (size_t)vectors * 16 * (is_bf16 ? sizeof(bf16) : sizeof(float));
    __m512 va = _mm512_set1_ps(alpha), vk = _mm512_set1_ps(k), zero = _mm512_setzero_ps(), inverse;
    for (int64_t s = 0; s < towers; s++, x += bytes, y += bytes) {
        __m512 now = load16(x, 0, relu, is_bf16), square = _mm512_mul_ps(now, now), pairs = first_pairs(square);
        for (int v = 0; v < vectors; v++) {
            __m512 next = v + 1 < vectors ? load16(x, v + 1, relu, is_bf16) : zero;
            __m512 next_square = _mm512_mul_ps(next, next);
            __m512 d = _mm512_fmadd_ps(va, window5(&pairs, square, next_square), vk);
            store16(y, v, _mm512_mul_ps(now, power16(d, &inverse, is_bf16)), is_bf16);
            square = next_square, now = next;
        }
    }
}

AVX512 void backward_avx512(const char *x, const char *g, char *dx, int64_t towers, int vectors, float alpha,
                            float beta, float k, int relu, int is_bf16) {
    size_t bytes = (size_t)vectors * 16 * (is_bf16 ? sizeof(bf16) : sizeof(float));
    __m512 va = _mm512_set1_ps(alpha), vk = _mm512_set1_ps(k), zero = _mm512_setzero_ps();
    __m512 factor = _mm512_set1_ps(2.0f * alpha * beta), inverse;
    for (int64_t s = 0; s < towers; s++, x += bytes, g += bytes, dx += bytes) {
        /* Vector v's terms t = g d^-beta x / d are made while vector v - 1's gradient is finished. */
        __m512 now = load16(x, 0, relu, is_bf16), square = _mm512_mul_ps(now, now), pairs = first_pairs(square);
        __m512 terms_pairs = zero, terms_behind = zero, direct_behind = zero, x_behind = zero;
        for (int v = 0; v <= vectors; v++) {
            __m512 terms = zero, direct = zero, next = zero;
            if (v < vectors) {
                next = v + 1 < vectors ? load16(x, v + 1, relu, is_bf16) : zero;
                __m512 next_square = _mm512_mul_ps(next, next);
                __m512 d = _mm512_fmadd_ps(va, window5(&pairs, square, next_square), vk);
                direct = _mm512_mul_ps(load16(g, v, 0, is_bf16), power16(d, &inverse, is_bf16));
                terms = _mm512_mul_ps(_mm512_mul_ps(direct, now), inverse);
                square = next_square;
            }
            if (v == 0) {
                terms_pairs = first_pairs(terms);
            } else {
                __m512 windows = window5(&terms_pairs, terms_behind, terms);
                __m512 scaled = _mm512_mul_ps(factor, x_behind);
                /* Through the ReLU, zero where its input is not positive (where its output is not). */
                __mmask16 keep = relu ? _mm512_cmp_ps_mask(x_behind, zero, _CMP_GT_OQ) : (__mmask16)0xffff;
                store16(dx, v - 1, _mm512_maskz_fnmadd_ps(keep, scaled, windows, direct_behind), is_bf16);
            }
            terms_behind = terms, direct_behind = direct, x_behind = now, now = next;
        }
    }
}

/* Entries (not inlined, compiled for AVX-512) with the ReLU and the storage fixed inside. */
#define AVX512_ENTRIES(suffix, is_bf16)                                                                    \
    AVX512_ENTRY void forward_avx512_##suffix(const void *x, void *y, int64_t towers, int vectors,         \
                                              float alpha, float k, int relu) {                            \
        if (relu)                                                                                          \
            forward_avx512(x, y, towers, vectors, alpha, k, 1, is_bf16);                                   \
        else                                                                                               \
            forward_avx512(x, y, towers, vectors, alpha, k, 0, is_bf16);                                   \
    }                                                                                                      \
    AVX512_ENTRY void backward_avx512_##suffix(const void *x, const void *g, void *dx, int64_t towers,      \
                                               int vectors, float alpha, float beta, float k, int relu) {  \
        if (relu)                                                                                          \
            backward_avx512(x, g, dx, towers, vectors, alpha, beta, k, 1, is_bf16);                        \
        else                                                                                               \
            backward_avx512(x, g, dx, towers, vectors, alpha, beta, k, 0, is_bf16);                        \
    }
AVX512_ENTRIES(f32, 0)
AVX512_ENTRIES(bf16, 1)

/* Whether the AVX-512 kernels take these towers: the paper's window and exponent, whole vectors, the CPU. */
#define ON_AVX512                                                                                          \
    (size == 5 && beta == 0.75f && channels % groups == 0 && (channels / groups) % 16 == 0 && has_avx512())
#define AVX512_FORWARD(suffix, element_size)                                                               \
    if (ON_AVX512) {                                                                                       \
        size_t at = (size_t)begin * channels * (element_size);                                             \
        forward_avx512_##suffix((const char *)x + at, (char *)y + at, (end - begin) * groups,               \
                                channels / groups / 16, alpha, k, relu);                                   \
        return;                                                                                            \
    }
#define AVX512_BACKWARD(suffix, element_size)                                                              \
    if (ON_AVX512) {                                                                                       \
        size_t at = (size_t)begin * channels * (element_size);                                             \
        backward_avx512_##suffix((const char *)x + at, (const char *)g + at, (char *)dx + at,               \
                                 (end - begin) * groups, channels / groups / 16, alpha, beta, k, relu);    \
        return;                                                                                            \
    }
#else
#define AVX512_FORWARD(suffix, element_size)
#define AVX512_BACKWARD(suffix, element_size)
static int has_avx512(void) { return 0; }
#endif

int lrn_avx512(void) { return has_avx512(); }

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

#define FORWARD(window, exponent, activated)                                                               \
    forward_block((const char *)x + at, (char *)y + at, slots, tower, window, alpha, exponent, k, activated, \
                  is_bf16)
#define BACKWARD(window, exponent, activated)                                                              \
    backward_block((const char *)x + at, (const char *)g + at, (char *)dx + at, slots, tower, window, alpha, \
                   exponent, k, activated, is_bf16)

VECTORISED void lrn_forward_f32(const void *x, void *y, int64_t begin, int64_t end, int channels, int groups,
                                int size, float alpha, float beta, float k, int relu) {
    const int is_bf16 = 0;
    AVX512_FORWARD(f32, sizeof(float))
    BLOCKS(FORWARD, sizeof(float))
}

VECTORISED void lrn_forward_bf16(const void *x, void *y, int64_t begin, int64_t end, int channels, int groups,
                                 int size, float alpha, float beta, float k, int relu) {
    const int is_bf16 = 1;
    AVX512_FORWARD(bf16, sizeof(bf16))
    BLOCKS(FORWARD, sizeof(bf16))
}

VECTORISED void lrn_backward_f32(const void *x, const void *g, void *dx, int64_t begin, int64_t end, int channels,
                                 int groups, int size, float alpha, float beta, float k, int relu) {
    const int is_bf16 = 0;
    AVX512_BACKWARD(f32, sizeof(float))
    BLOCKS(BACKWARD, sizeof(float))
}

VECTORISED void lrn_backward_bf16(const void *x, const void *g, void *dx, int64_t begin, int64_t end,
                                  int channels, int groups, int size, float alpha, float beta, float k, int relu) {
    const int is_bf16 = 1;
    AVX512_BACKWARD(bf16, sizeof(bf16))
    BLOCKS(BACKWARD, sizeof(bf16))
}

/* The layer followed by a max-pool (`kernel` x `kernel` windows at `stride`, no padding, windows that fit), as
 * alexnet_paper's conv1 and conv2 have it: the layer's output is computed a row of pixels at a time into a buffer
 * of `kernel` rows and pooled from there, so the full-size output is never written, and the backward pass builds
 * each row's gradient from the pooled one in a buffer, never writing it to memory either. Each window's argmax is
 * kept as a byte (kh * kernel + kw; the first maximum in row-major order, as torch's pool keeps it) where torch's
 * pool keeps 8-byte indices. The results are the layer's and torch's pool's, to the bit: the buffers hold the
 * layer's output and the gradient in the storage type, the gradient summed in the storage type in the order of
 * the windows, as torch's pool does. Output rows [begin, end) of the whole batch (forward), input rows (backward).
 * Returns 0, or -1 where the buffers could not be had. */
#define POOL_ARGUMENTS                                                                                     \
    int64_t begin, int64_t end, int height, int width, int channels, int groups, int size, float alpha,    \
        float beta, float k, int relu, int kernel, int stride

static inline __attribute__((always_inline)) int pool_forward(const char *x, char *p, uint8_t *code, POOL_ARGUMENTS,
                                                              int is_bf16) {
    size_t element = is_bf16 ? sizeof(bf16) : sizeof(float), row = (size_t)width * channels;
    int out_h = (height - kernel) / stride + 1, out_w = (width - kernel) / stride + 1;
    char *rows = malloc((size_t)kernel * row * element);
    float *best = malloc((size_t)channels * sizeof(float));
    uint8_t *arg = malloc((size_t)channels);
    int64_t held[16]; /* which input row of which image each slot holds */
    if (!rows || !best || !arg || kernel > 16)
        return free(rows), free(best), free(arg), -1;
    for (int i = 0; i < kernel; i++) held[i] = -1;
    for (int64_t r = begin; r < end; r++) {
        int64_t n = r / out_h, oh = r % out_h;
        const char *slot[16];
        for (int kh = 0; kh < kernel; kh++) {
            int64_t h = n * height + oh * stride + kh; /* the input row, counted over the batch */
            char *buffer = rows + (size_t)(h % kernel) * row * element;
            if (held[h % kernel] != h) {
                const char *source = x + (size_t)h * row * element;
                if (is_bf16)
                    lrn_forward_bf16(source, buffer, 0, width, channels, groups, size, alpha, beta, k, relu);
                else
                    lrn_forward_f32(source, buffer, 0, width, channels, groups, size, alpha, beta, k, relu);
                held[h % kernel] = h;
            }
            slot[kh] = buffer;
        }
        char *out = p + (size_t)r * out_w * channels * element;
        uint8_t *codes = code + (size_t)r * out_w * channels;
        for (int ow = 0; ow < out_w; ow++) { /* over the channels innermost, which vectorises */
            const char *corner = slot[0] + (size_t)ow * stride * channels * element;
            for (int c = 0; c < channels; c++) best[c] = LOAD(corner, c), arg[c] = 0;
            for (int kh = 0; kh < kernel; kh++)
                for (int kw = 0; kw < kernel; kw++) {
                    const char *at = slot[kh] + ((size_t)ow * stride + kw) * channels * element;
                    uint8_t which = (uint8_t)(kh * kernel + kw);
                    for (int c = 0; c < channels; c++) {
                        float v = LOAD(at, c);
                        int better = v > best[c];
                        best[c] = better ? v : best[c];
                        arg[c] = better ? which : arg[c];
                    }
                }
            for (int c = 0; c < channels; c++) STORE(out, (size_t)ow * channels + c, best[c]);
            memcpy(codes + (size_t)ow * channels, arg, (size_t)channels);
        }
    }
    free(rows), free(best), free(arg);
    return 0;
}

static inline __attribute__((always_inline)) int pool_backward(const char *x, const char *gp, const uint8_t *code,
                                                               char *dx, POOL_ARGUMENTS, int is_bf16) {
    size_t element = is_bf16 ? sizeof(bf16) : sizeof(float), row = (size_t)width * channels;
    int out_h = (height - kernel) / stride + 1, out_w = (width - kernel) / stride + 1;
    float *sums = malloc(row * sizeof(float));
    char *grad = malloc(row * element);
    if (!sums || !grad)
        return free(sums), free(grad), -1;
    for (int64_t r = begin; r < end; r++) {
        int64_t n = r / height, h = r % height;
        for (size_t i = 0; i < row; i++) sums[i] = 0.0f;
        int64_t first = h - kernel + 1 <= 0 ? 0 : (h - kernel + 1 + stride - 1) / stride, last = h / stride;
        for (int64_t oh = first; oh <= last && oh < out_h; oh++) {
            int kh = (int)(h - oh * stride);
            const char *g = gp + (size_t)(n * out_h + oh) * out_w * channels * element;
            const uint8_t *codes = code + (size_t)(n * out_h + oh) * out_w * channels;
            for (int ow = 0; ow < out_w; ow++)
                for (int kw = 0; kw < kernel; kw++) {
                    float *into = sums + ((size_t)ow * stride + kw) * channels;
                    const uint8_t *c_codes = codes + (size_t)ow * channels;
                    size_t at = (size_t)ow * channels;
                    for (int c = 0; c < channels; c++) {
                        float sum = into[c] + (c_codes[c] == kh * kernel + kw ? LOAD(g, at + c) : 0.0f);
                        into[c] = is_bf16 ? from_bf16(to_bf16(sum)) : sum; /* summed in the storage type */
                    }
                }
        }
        for (size_t i = 0; i < row; i++) STORE(grad, i, sums[i]);
        size_t at = (size_t)r * row * element;
        if (is_bf16)
            lrn_backward_bf16(x + at, grad, dx + at, 0, width, channels, groups, size, alpha, beta, k, relu);
        else
            lrn_backward_f32(x + at, grad, dx + at, 0, width, channels, groups, size, alpha, beta, k, relu);
    }
    free(sums), free(grad);
    return 0;
}

VECTORISED int lrn_pool_forward_f32(const void *x, void *p, uint8_t *code, POOL_ARGUMENTS) {
    return pool_forward(x, p, code, begin, end, height, width, channels, groups, size, alpha, beta, k, relu, kernel,
                        stride, 0);
}

VECTORISED int lrn_pool_forward_bf16(const void *x, void *p, uint8_t *code, POOL_ARGUMENTS) {
    return pool_forward(x, p, code, begin, end, height, width, channels, groups, size, alpha, beta, k, relu, kernel,
                        stride, 1);
}

VECTORISED int lrn_pool_backward_f32(const void *x, const void *gp, const uint8_t *code, void *dx, POOL_ARGUMENTS) {
    return pool_backward(x, gp, code, dx, begin, end, height, width, channels, groups, size, alpha, beta, k, relu,
                         kernel, stride, 0);
}

VECTORISED int lrn_pool_backward_bf16(const void *x, const void *gp, const uint8_t *code, void *dx, POOL_ARGUMENTS) {
    return pool_backward(x, gp, code, dx, begin, end, height, width, channels, groups, size, alpha, beta, k, relu,
                         kernel, stride, 1);
}
