/*
 * LoRA dropout masks drawn from torch's own CPU generator, bit for bit, fast.
 *
 * torch's CPU dropout draws its noise with `bernoulli_(1 - p)`: one element at
 * a time (a serial kernel), each from two outputs of the default generator's
 * MT19937 engine: u = ((r1 << 32 | r2) & (2^53 - 1)) * 2^-53, kept when
 * u < 1 - p. On a 2-core CPU that is about a sixth of a LoRA training step.
 * This file reads the generator's state (torch.get_rng_state()), draws the
 * same outputs in blocks (the MT19937 twist and tempering vectorise), decides
 * each keep-bit with one integer comparison (u < q  <=>  v53 < ceil(q * 2^53),
 * exact because v53 * 2^-53 is exact in double) and writes the dropped input
 * and a byte mask in the same pass; the caller then writes the advanced state
 * back (torch.set_rng_state). The masks, the dropped values and the generator
 * state afterwards are exactly torch's: services/trainer/fast_dropout.py
 * checks that against torch itself before it uses this, and falls back to
 * torch when they differ (another torch, another engine).
 *
 * The state buffer is torch's CPUGeneratorImplState (legacy layout): int32
 * `left` at byte 8, uint64 `next` at 16, uint64 state[624] at 24.
 *
 * Plain C with no Python API: native_dropout.py compiles it with the system's
 * C compiler on first use (cached by the source's hash) and calls it through
 * ctypes, so the lorafleet wheel stays pure Python.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MT_N 624
#define MT_M 397
#define MATRIX_A 0x9908b0dfU
#define UPPER 0x80000000U
#define LOWER 0x7fffffffU
#define STATE_BYTES 5056
#define OFF_LEFT 8
#define OFF_NEXT 16
#define OFF_STATE 24
/* Elements drawn per round: two engine outputs each, on the stack. */
#define CHUNK 2048

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MULTIVERSION
#endif

typedef struct {
    uint32_t mt[MT_N];
    int32_t left; /* torch's mt19937: outputs left before the next twist, + 1 */
    uint32_t next; /* index of the next output in mt */
} engine;

static inline uint32_t twisted(uint32_t u, uint32_t v) {
    return (((u & UPPER) | (v & LOWER)) >> 1) ^ ((v & 1U) ? MATRIX_A : 0U);
}

/* at::mt19937::next_state(), as three loops gcc can vectorise. */
MULTIVERSION
static void twist(uint32_t *mt) {
    int i;
    for (i = 0; i < MT_N - MT_M; i++) mt[i] = mt[i + MT_M] ^ twisted(mt[i], mt[i + 1]);
    for (; i < MT_N - 1; i++) mt[i] = mt[i + MT_M - MT_N] ^ twisted(mt[i], mt[i + 1]);
    mt[MT_N - 1] = mt[MT_M - 1] ^ twisted(mt[MT_N - 1], mt[0]);
}

MULTIVERSION
static void temper(const uint32_t *src, uint32_t *dst, size_t count) {
    for (size_t k = 0; k < count; k++) {
        uint32_t y = src[k];
        y ^= (y >> 11);
        y ^= (y << 7) & 0x9d2c5680U;
        y ^= (y << 15) & 0xefc60000U;
        y ^= (y >> 18);
        dst[k] = y;
    }
}

/* The engine's next `want` outputs, in order, into dst. */
static void draw(engine *g, uint32_t *dst, size_t want) {
    while (want > 0) {
        if (g->left <= 1) {
            twist(g->mt);
            g->left = MT_N + 1;
            g->next = 0;
        }
        size_t avail = (size_t)(g->left - 1);
        size_t take = avail < want ? avail : want;
        temper(g->mt + g->next, dst, take);
        g->next += (uint32_t)take;
        g->left -= (int32_t)take;
        dst += take;
        want -= take;
    }
}

/* One chunk: keep-bits from output pairs, the dropped input, the mask.
 * v = (r1 & (2^21 - 1)) << 32 | r2 < threshold, compared as two 32-bit halves
 * (AVX2 has no unsigned 64-bit compare; this vectorises, twice as fast). */
MULTIVERSION
static void apply_chunk(const uint32_t *pairs, const float *x, float *out,
                        uint8_t *mask, size_t count, uint64_t threshold, float scale) {
    const uint32_t th = (uint32_t)(threshold >> 32), tl = (uint32_t)threshold;
    for (size_t k = 0; k < count; k++) {
        uint32_t hi = pairs[2 * k] & 0x1fffffU, lo = pairs[2 * k + 1];
        uint32_t keep = (hi < th) | ((hi == th) & (lo < tl));
        mask[k] = (uint8_t)keep;
        out[k] = x[k] * (keep ? scale : 0.0f);
    }
}

MULTIVERSION
static void scale_by_mask(const float *src, const uint8_t *mask, float *dst,
                          size_t count, float scale) {
    for (size_t k = 0; k < count; k++) dst[k] = src[k] * (mask[k] ? scale : 0.0f);
}

static int load_engine(engine *g, const uint8_t *state) {
    int32_t left;
    uint64_t next;
    memcpy(&left, state + OFF_LEFT, sizeof left);
    memcpy(&next, state + OFF_NEXT, sizeof next);
    if (left < 1 || left > MT_N + 1 || next > MT_N || next + (uint64_t)left != MT_N + 1) {
        /* After manual_seed torch has left = 1, next = 0: a twist comes first. */
        if (!(left == 1 && next == 0)) return -1;
    }
    for (int i = 0; i < MT_N; i++) {
        uint64_t word;
        memcpy(&word, state + OFF_STATE + 8 * (size_t)i, sizeof word);
        g->mt[i] = (uint32_t)word;
    }
    g->left = left;
    g->next = (uint32_t)next;
    return 0;
}

static void store_engine(const engine *g, uint8_t *state) {
    uint64_t next = g->next;
    memcpy(state + OFF_LEFT, &g->left, sizeof g->left);
    memcpy(state + OFF_NEXT, &next, sizeof next);
    for (int i = 0; i < MT_N; i++) {
        uint64_t word = g->mt[i];
        memcpy(state + OFF_STATE + 8 * (size_t)i, &word, sizeof word);
    }
}

/* ABI of the functions below; native_dropout.py checks it after loading. */
int lf_abi_version(void) { return 1; }

/*
 * Draws torch's bernoulli_(q) keep-bits for n float32 elements from the
 * MT19937 state in `state` (a torch.get_rng_state() buffer of state_len
 * bytes, advanced in place) and writes out = x * (scale if kept else 0.0f)
 * and mask = keep (0/1 bytes). `threshold` is ceil(q * 2^53).
 * Returns 0, or -1 for a state buffer that is not torch's, -2 for a
 * threshold above 2^53.
 */
int lf_dropout(uint8_t *state, size_t state_len, const float *x, float *out,
               uint8_t *mask, size_t n, uint64_t threshold, float scale) {
    engine g;
    uint32_t pairs[2 * CHUNK];
    if (state_len != STATE_BYTES || load_engine(&g, state) < 0) return -1;
    if (threshold > (1ULL << 53)) return -2;
    for (size_t start = 0; start < n; start += CHUNK) {
        size_t count = n - start < CHUNK ? n - start : CHUNK;
        draw(&g, pairs, 2 * count);
        apply_chunk(pairs, x + start, out + start, mask + start, count, threshold, scale);
    }
    store_engine(&g, state);
    return 0;
}

/* dst = src * (scale if mask else 0.0f): dropout's backward, and the dropped
 * input rebuilt from a saved mask. */
void lf_scale_by_mask(const float *src, const uint8_t *mask, float *dst, size_t n,
                      float scale) {
    scale_by_mask(src, mask, dst, n, scale);
}
