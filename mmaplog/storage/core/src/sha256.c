/*
 * sha256.c - SHA-256 from FIPS 180-4 (sections 4.1.2, 5.1.1, 6.2). The constants K and the
 * initial hash value come from sha256_consts.h, generated from the primes by
 * gen_sha256_consts.py.
 */
#include "sha256.h"

#include <string.h>

#include "sha256_consts.h"

#if defined(__x86_64__) || defined(__i386__)
#define MML_SHA_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

typedef void (*mml_blocks_fn)(uint32_t h[8], const unsigned char *p, size_t nblocks);

static inline uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static inline uint32_t load_be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
           (uint32_t)p[3];
}

static inline void store_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* FIPS 180-4 6.2.2: the message schedule and 64 rounds, one 64-byte block at a time. */
static void blocks_scalar(uint32_t h[8], const unsigned char *p, size_t nblocks) {
    uint32_t w[64];
    for (; nblocks; nblocks--, p += 64) {
        for (int t = 0; t < 16; t++) w[t] = load_be32(p + 4 * t);
        for (int t = 16; t < 64; t++) {
            uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
            uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
            w[t] = s1 + w[t - 7] + s0 + w[t - 16];
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int t = 0; t < 64; t++) {
            uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
            uint32_t ch = (e & f) ^ (~e & g);
            uint32_t t1 = hh + S1 + ch + MML_SHA256_K[t] + w[t];
            uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
            uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
            uint32_t t2 = S0 + maj;
            hh = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
        h[5] += f;
        h[6] += g;
        h[7] += hh;
    }
}

#ifdef MML_SHA_X86
/* The same rounds with the SHA extensions. The state lives in two registers as the
 * instructions want it: abef = lanes (F, E, B, A), cdgh = lanes (H, G, D, C), lane 0 first.
 * sha256rnds2(cdgh, abef, wk) does two rounds with the low two lanes of wk (W[t] + K[t]) and
 * returns the new (A, B, E, F); the old (A, B, E, F) is the new (C, D, G, H). */
__attribute__((target("sha,sse4.1,ssse3"))) static void blocks_shani(uint32_t h[8],
                                                                     const unsigned char *p,
                                                                     size_t nblocks) {
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i abcd = _mm_loadu_si128((const __m128i *)&h[0]);    /* A B C D */
    __m128i efgh = _mm_loadu_si128((const __m128i *)&h[4]);    /* E F G H */
    __m128i badc = _mm_shuffle_epi32(abcd, 0xB1);              /* B A D C */
    __m128i hgfe = _mm_shuffle_epi32(efgh, 0x1B);              /* H G F E */
    __m128i abef = _mm_alignr_epi8(badc, hgfe, 8);             /* F E B A */
    __m128i cdgh = _mm_blend_epi16(hgfe, badc, 0xF0);          /* H G D C */
    for (; nblocks; nblocks--, p += 64) {
        const __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i w[16];
        for (int g = 0; g < 16; g++) {
            if (g < 4) {
                w[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), bswap);
            } else {
                /* W[t..t+3] from W[t-16..t-1] (FIPS 180-4 6.2.2 step 1). */
                __m128i x = _mm_sha256msg1_epu32(w[g - 4], w[g - 3]);
                x = _mm_add_epi32(x, _mm_alignr_epi8(w[g - 1], w[g - 2], 4));
                w[g] = _mm_sha256msg2_epu32(x, w[g - 1]);
            }
            __m128i wk = _mm_add_epi32(w[g], _mm_loadu_si128((const __m128i *)&MML_SHA256_K[4 * g]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0E));
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    __m128i abfe = _mm_shuffle_epi32(abef, 0x1B);                /* A B E F */
    __m128i ghcd = _mm_shuffle_epi32(cdgh, 0xB1);                /* G H C D */
    _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(abfe, ghcd, 0xF0)); /* A B C D */
    _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(ghcd, abfe, 8));    /* E F G H */
}

static int cpu_has_shani(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!(c & (1u << 9)) || !(c & (1u << 19))) return 0; /* SSSE3, SSE4.1 */
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 29) & 1; /* SHA */
}
#endif

static mml_blocks_fn blocks = blocks_scalar;
static const char *impl_name = "scalar";

void mml_sha256_setup(int force_scalar) {
    blocks = blocks_scalar;
    impl_name = "scalar";
#ifdef MML_SHA_X86
    if (!force_scalar && cpu_has_shani()) {
        blocks = blocks_shani;
        impl_name = "sha-ni";
    }
#endif
}

const char *mml_sha256_impl(void) { return impl_name; }

void mml_sha256_init(mml_sha256_ctx *ctx) {
    memcpy(ctx->h, MML_SHA256_H0, sizeof ctx->h);
    ctx->total = 0;
    ctx->fill = 0;
}

void mml_sha256_update(mml_sha256_ctx *ctx, const void *data, size_t len) {
    const unsigned char *p = data;
    ctx->total += len;
    if (ctx->fill) {
        size_t take = 64 - ctx->fill;
        if (take > len) take = len;
        memcpy(ctx->buf + ctx->fill, p, take);
        ctx->fill += take;
        p += take;
        len -= take;
        if (ctx->fill < 64) return;
        blocks(ctx->h, ctx->buf, 1);
        ctx->fill = 0;
    }
    if (len >= 64) {
        blocks(ctx->h, p, len / 64);
        p += len & ~(size_t)63;
        len &= 63;
    }
    if (len) {
        memcpy(ctx->buf, p, len);
        ctx->fill = len;
    }
}

/* FIPS 180-4 5.1.1: 0x80, zeros to 56 mod 64, the bit length as a big-endian u64. */
void mml_sha256_final(mml_sha256_ctx *ctx, unsigned char out[MML_SHA256_SIZE]) {
    uint64_t bits = ctx->total * 8;
    size_t fill = ctx->fill;
    ctx->buf[fill++] = 0x80;
    if (fill > 56) {
        memset(ctx->buf + fill, 0, 64 - fill);
        blocks(ctx->h, ctx->buf, 1);
        fill = 0;
    }
    memset(ctx->buf + fill, 0, 56 - fill);
    store_be32(ctx->buf + 56, (uint32_t)(bits >> 32));
    store_be32(ctx->buf + 60, (uint32_t)bits);
    blocks(ctx->h, ctx->buf, 1);
    for (int i = 0; i < 8; i++) store_be32(out + 4 * i, ctx->h[i]);
}

void mml_sha256(const void *data, size_t len, unsigned char out[MML_SHA256_SIZE]) {
    mml_sha256_ctx ctx;
    mml_sha256_init(&ctx);
    mml_sha256_update(&ctx, data, len);
    mml_sha256_final(&ctx, out);
}

void mml_sha256_node(const unsigned char *left, const unsigned char *right,
                     unsigned char out[MML_SHA256_SIZE]) {
    unsigned char msg[1 + 2 * MML_SHA256_SIZE];
    msg[0] = 0x01;
    memcpy(msg + 1, left, MML_SHA256_SIZE);
    memcpy(msg + 1 + MML_SHA256_SIZE, right, MML_SHA256_SIZE);
    mml_sha256(msg, sizeof msg, out);
}
