/*
 * xxh3.c - XXH3-64 / XXH3-128, written from the xxHash specification
 * (doc/xxhash_spec.md in the xxHash project; section names are cited below).
 */
#include "xxh3.h"

#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define MML_INLINE static __inline__ __attribute__((always_inline))
#else
#define MML_INLINE static inline
#endif

/* ---- "XXH3 Algorithm Overview": constants -------------------------------- */

#define PRIME32_1 0x9E3779B1U
#define PRIME32_2 0x85EBCA77U
#define PRIME32_3 0xC2B2AE3DU
#define PRIME64_1 0x9E3779B185EBCA87ULL
#define PRIME64_2 0xC2B2AE3D27D4EB4FULL
#define PRIME64_3 0x165667B19E3779F9ULL
#define PRIME64_4 0x85EBCA77C2B2AE63ULL
#define PRIME64_5 0x27D4EB2F165667C5ULL
#define PRIME_MX1 0x165667919E3779F9ULL
#define PRIME_MX2 0x9FB21C651E98DF25ULL

/* ---- "Seed and Secret": the default 192-byte secret ---------------------- */

#define SECRET_LEN 192
static const unsigned char kSecret[SECRET_LEN] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

/* Long-input geometry for a 192-byte secret ("Step 2. Process blocks"). */
#define STRIPE_LEN 64
#define STRIPES_PER_BLOCK ((SECRET_LEN - STRIPE_LEN) / 8) /* 16 */
#define LAST_STRIPE_OFFSET (SECRET_LEN - 71)               /* 121 */
#define MID_SIZE_MAX 240

/* ---- primitive operations ("Operation notations") ------------------------ */

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define MML_LITTLE_ENDIAN 1
#else
#define MML_LITTLE_ENDIAN 0
#endif

/* All input and secret words are little-endian, at any alignment. */
MML_INLINE uint32_t rd32(const unsigned char *p)
{
#if MML_LITTLE_ENDIAN
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
#endif
}

MML_INLINE uint64_t rd64(const unsigned char *p)
{
#if MML_LITTLE_ENDIAN
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    return (uint64_t)rd32(p) | ((uint64_t)rd32(p + 4) << 32);
#endif
}

MML_INLINE void wr64(unsigned char *p, uint64_t v)
{
#if MML_LITTLE_ENDIAN
    memcpy(p, &v, sizeof v);
#else
    int i;
    for (i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
#endif
}

MML_INLINE uint32_t bswap32(uint32_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_bswap32(x);
#else
    return (x << 24) | ((x << 8) & 0x00FF0000U) | ((x >> 8) & 0x0000FF00U) | (x >> 24);
#endif
}

MML_INLINE uint64_t bswap64(uint64_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_bswap64(x);
#else
    return ((uint64_t)bswap32((uint32_t)x) << 32) | bswap32((uint32_t)(x >> 32));
#endif
}

MML_INLINE uint32_t rotl32(uint32_t x, unsigned r) { return (x << r) | (x >> (32 - r)); }
MML_INLINE uint64_t rotl64(uint64_t x, unsigned r) { return (x << r) | (x >> (64 - r)); }

/* (u128)a * (u128)b, returned as two halves. */
MML_INLINE uint64_t mul128(uint64_t a, uint64_t b, uint64_t *hi)
{
#if defined(__SIZEOF_INT128__)
    __extension__ typedef unsigned __int128 u128;
    u128 r = (u128)a * b;
    *hi = (uint64_t)(r >> 64);
    return (uint64_t)r;
#else
    uint64_t lo_lo = (a & 0xFFFFFFFFU) * (b & 0xFFFFFFFFU);
    uint64_t hi_lo = (a >> 32) * (b & 0xFFFFFFFFU);
    uint64_t lo_hi = (a & 0xFFFFFFFFU) * (b >> 32);
    uint64_t hi_hi = (a >> 32) * (b >> 32);
    uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFFU) + lo_hi;
    *hi = (hi_lo >> 32) + (cross >> 32) + hi_hi;
    return (cross << 32) | (lo_lo & 0xFFFFFFFFU);
#endif
}

/* lowerHalf(m) xor higherHalf(m) of the full 128-bit product. */
MML_INLINE uint64_t mul_fold64(uint64_t a, uint64_t b)
{
    uint64_t hi, lo = mul128(a, b, &hi);
    return lo ^ hi;
}

/* ---- "Final Mixing Step (avalanche)" ------------------------------------- */

MML_INLINE uint64_t avalanche(uint64_t x)
{
    x ^= x >> 37;
    x *= PRIME_MX1;
    return x ^ (x >> 32);
}

MML_INLINE uint64_t avalanche_xxh64(uint64_t x)
{
    x ^= x >> 33;
    x *= PRIME64_2;
    x ^= x >> 29;
    x *= PRIME64_3;
    return x ^ (x >> 32);
}

/* ---- "Small inputs" (0-16 bytes); always the default secret ------------- */

static uint64_t hash64_0to16(const unsigned char *p, size_t len, uint64_t seed)
{
    const unsigned char *k = kSecret;
    if (len > 8) { /* "9-16 bytes of input" */
        uint64_t lo = ((rd64(k + 24) ^ rd64(k + 32)) + seed) ^ rd64(p);
        uint64_t hi = ((rd64(k + 40) ^ rd64(k + 48)) - seed) ^ rd64(p + len - 8);
        return avalanche((uint64_t)len + bswap64(lo) + hi + mul_fold64(lo, hi));
    }
    if (len >= 4) { /* "4-8 bytes of input" */
        uint64_t mseed = seed ^ ((uint64_t)bswap32((uint32_t)seed) << 32);
        uint64_t combined = (uint64_t)rd32(p + len - 4) | ((uint64_t)rd32(p) << 32);
        uint64_t v = ((rd64(k + 8) ^ rd64(k + 16)) - mseed) ^ combined;
        v ^= rotl64(v, 49) ^ rotl64(v, 24);
        v *= PRIME_MX2;
        v ^= (v >> 35) + (uint64_t)len;
        v *= PRIME_MX2;
        return v ^ (v >> 28);
    }
    if (len > 0) { /* "1-3 bytes of input" */
        uint32_t combined = (uint32_t)p[len - 1] | ((uint32_t)len << 8) |
                            ((uint32_t)p[0] << 16) | ((uint32_t)p[len >> 1] << 24);
        uint64_t v = ((uint64_t)(rd32(k) ^ rd32(k + 4)) + seed) ^ combined;
        return avalanche_xxh64(v);
    }
    /* "Empty input" */
    return avalanche_xxh64(seed ^ rd64(k + 56) ^ rd64(k + 64));
}

static mml_u128 hash128_0to16(const unsigned char *p, size_t len, uint64_t seed)
{
    const unsigned char *k = kSecret;
    mml_u128 r;
    if (len > 8) { /* "9-16 bytes of input" */
        uint64_t first = rd64(p), last = rd64(p + len - 8);
        uint64_t v1 = ((rd64(k + 32) ^ rd64(k + 40)) - seed) ^ first ^ last;
        uint64_t v2 = ((rd64(k + 48) ^ rd64(k + 56)) + seed) ^ last;
        uint64_t mhi, mlo = mul128(v1, PRIME64_1, &mhi);
        uint64_t lo = mlo + ((uint64_t)(len - 1) << 54);
        uint64_t hi = mhi + (v2 & 0xFFFFFFFF00000000ULL) + (v2 & 0xFFFFFFFFU) * PRIME32_2;
        lo ^= bswap64(hi);
        /* {lo,hi} = (u128){lo,hi} * PRIME64_2, i.e. a 128x64 -> 128 product */
        mlo = mul128(lo, PRIME64_2, &mhi);
        hi = mhi + hi * PRIME64_2;
        r.low64 = avalanche(mlo);
        r.high64 = avalanche(hi);
        return r;
    }
    if (len >= 4) { /* "4-8 bytes of input" */
        uint64_t mseed = seed ^ ((uint64_t)bswap32((uint32_t)seed) << 32);
        uint64_t combined = (uint64_t)rd32(p) | ((uint64_t)rd32(p + len - 4) << 32);
        uint64_t v = ((rd64(k + 16) ^ rd64(k + 24)) + mseed) ^ combined;
        uint64_t hi, lo = mul128(v, PRIME64_1 + ((uint64_t)len << 2), &hi);
        hi += lo << 1;
        lo ^= hi >> 3;
        lo ^= lo >> 35;
        lo *= PRIME_MX2;
        r.low64 = lo ^ (lo >> 28);
        r.high64 = avalanche(hi);
        return r;
    }
    if (len > 0) { /* "1-3 bytes of input" */
        uint32_t combined = (uint32_t)p[len - 1] | ((uint32_t)len << 8) |
                            ((uint32_t)p[0] << 16) | ((uint32_t)p[len >> 1] << 24);
        uint64_t lo = ((uint64_t)(rd32(k) ^ rd32(k + 4)) + seed) ^ combined;
        uint64_t hi = ((uint64_t)(rd32(k + 8) ^ rd32(k + 12)) - seed) ^
                      (uint64_t)rotl32(bswap32(combined), 13); /* 32-bit rotate */
        r.low64 = avalanche_xxh64(lo);
        r.high64 = avalanche_xxh64(hi);
        return r;
    }
    /* "Empty input" */
    r.low64 = avalanche_xxh64(seed ^ rd64(k + 64) ^ rd64(k + 72));
    r.high64 = avalanche_xxh64(seed ^ rd64(k + 80) ^ rd64(k + 88));
    return r;
}

/* ---- "Medium inputs" (17-240 bytes); always the default secret ---------- */

/* "Mixing operation": mixStep */
MML_INLINE uint64_t mix16(const unsigned char *p, const unsigned char *sec, uint64_t seed)
{
    return mul_fold64(rd64(p) ^ (rd64(sec) + seed), rd64(p + 8) ^ (rd64(sec + 8) - seed));
}

/* "Mixing operation": mixTwoChunks (XXH3-128) */
MML_INLINE void mix32(uint64_t acc[2], const unsigned char *d1, const unsigned char *d2,
                      const unsigned char *sec, uint64_t seed)
{
    acc[0] += mix16(d1, sec, seed);
    acc[1] += mix16(d2, sec + 16, seed);
    acc[0] ^= rd64(d2) + rd64(d2 + 8);
    acc[1] ^= rd64(d1) + rd64(d1 + 8);
}

static uint64_t hash64_17to240(const unsigned char *p, size_t len, uint64_t seed)
{
    const unsigned char *k = kSecret;
    uint64_t acc = (uint64_t)len * PRIME64_1;
    if (len <= 128) { /* "17-128 bytes": N chunks from the front, N from the back */
        size_t i = ((len - 1) >> 5) + 1;
        while (i-- > 0) {
            acc += mix16(p + 16 * i, k + 32 * i, seed);
            acc += mix16(p + len - 16 * i - 16, k + 32 * i + 16, seed);
        }
    } else { /* "129-240 bytes" */
        size_t i, nchunks = len >> 4;
        for (i = 0; i < 8; i++)
            acc += mix16(p + 16 * i, k + 16 * i, seed);
        acc = avalanche(acc);
        for (i = 8; i < nchunks; i++)
            acc += mix16(p + 16 * i, k + 16 * (i - 8) + 3, seed);
        acc += mix16(p + len - 16, k + 119, seed);
    }
    return avalanche(acc); /* "Step 3. Finalization" */
}

static mml_u128 hash128_17to240(const unsigned char *p, size_t len, uint64_t seed)
{
    const unsigned char *k = kSecret;
    uint64_t acc[2];
    mml_u128 r;
    acc[0] = (uint64_t)len * PRIME64_1;
    acc[1] = 0;
    if (len <= 128) { /* "17-128 bytes": order matters here (xor), go inward-out */
        size_t i = ((len - 1) >> 5) + 1;
        while (i-- > 0)
            mix32(acc, p + 16 * i, p + len - 16 * i - 16, k + 32 * i, seed);
    } else { /* "129-240 bytes" */
        size_t i, nchunks = len >> 5;
        for (i = 0; i < 4; i++)
            mix32(acc, p + 32 * i, p + 32 * i + 16, k + 32 * i, seed);
        acc[0] = avalanche(acc[0]);
        acc[1] = avalanche(acc[1]);
        for (i = 4; i < nchunks; i++)
            mix32(acc, p + 32 * i, p + 32 * i + 16, k + 32 * (i - 4) + 3, seed);
        /* last 32 bytes: halves swapped and the seed negated */
        mix32(acc, p + len - 16, p + len - 32, k + 103, (uint64_t)0 - seed);
    }
    /* "Step 3. Finalization" */
    r.low64 = avalanche(acc[0] + acc[1]);
    r.high64 = (uint64_t)0 - avalanche(acc[0] * PRIME64_1 + acc[1] * PRIME64_4 +
                                       ((uint64_t)len - seed) * PRIME64_2);
    return r;
}

/* ---- "Large inputs" (241+ bytes) ------------------------------------------ */

/* "Step 1. Initialize internal accumulators" */
static void acc_init(uint64_t acc[8])
{
    acc[0] = PRIME32_3;
    acc[1] = PRIME64_1;
    acc[2] = PRIME64_2;
    acc[3] = PRIME64_3;
    acc[4] = PRIME64_4;
    acc[5] = PRIME32_2;
    acc[6] = PRIME64_5;
    acc[7] = PRIME32_1;
}

/* "Step 2-1": accumulate one 64-byte stripe. The spec's per-lane loop
 * (acc[i ^ 1] += stripe[i]; acc[i] += lo32(v) * hi32(v)) written one lane
 * pair at a time, which compilers schedule/vectorize better. */
#if defined(__SSE2__)
#include <emmintrin.h>
/* The same step on SSE2 (every x86-64 has it), a lane pair per 128-bit register: the
 * product of the low and high 32 bits of data ^ secret (_mm_mul_epu32 multiplies the low
 * halves of each 64-bit lane, so the high halves are shuffled down first), plus the data
 * with its two lanes swapped. Bit-identical to the scalar loop below. */
MML_INLINE void accumulate(uint64_t acc[8], const unsigned char *stripe,
                           const unsigned char *sec)
{
    int i;
    for (i = 0; i < 8; i += 2) {
        __m128i a = _mm_loadu_si128((const __m128i *)(void *)(acc + i));
        __m128i d = _mm_loadu_si128((const __m128i *)(const void *)(stripe + 8 * i));
        __m128i k = _mm_loadu_si128((const __m128i *)(const void *)(sec + 8 * i));
        __m128i v = _mm_xor_si128(d, k);
        __m128i hi = _mm_shuffle_epi32(v, _MM_SHUFFLE(3, 3, 1, 1)); /* hi32 into lo32 */
        __m128i product = _mm_mul_epu32(v, hi);
        __m128i swapped = _mm_shuffle_epi32(d, _MM_SHUFFLE(1, 0, 3, 2)); /* lanes swapped */
        a = _mm_add_epi64(a, _mm_add_epi64(product, swapped));
        _mm_storeu_si128((__m128i *)(void *)(acc + i), a);
    }
}
#else
MML_INLINE void accumulate(uint64_t acc[8], const unsigned char *stripe,
                           const unsigned char *sec)
{
    int i;
    for (i = 0; i < 8; i += 2) {
        uint64_t d0 = rd64(stripe + 8 * i), d1 = rd64(stripe + 8 * i + 8);
        uint64_t v0 = d0 ^ rd64(sec + 8 * i), v1 = d1 ^ rd64(sec + 8 * i + 8);
        acc[i] += d1 + (v0 & 0xFFFFFFFFU) * (v0 >> 32);
        acc[i + 1] += d0 + (v1 & 0xFFFFFFFFU) * (v1 >> 32);
    }
}
#endif

/* "Step 2-2": scramble with the last 64 bytes of the secret */
MML_INLINE void scramble(uint64_t acc[8], const unsigned char *secret)
{
    const unsigned char *sec = secret + SECRET_LEN - STRIPE_LEN;
    int i;
    for (i = 0; i < 8; i++) {
        uint64_t a = acc[i];
        a ^= a >> 47;
        a ^= rd64(sec + 8 * i);
        acc[i] = a * PRIME32_1;
    }
}

/*
 * Accumulate n consecutive stripes, tracking the stripe position within the
 * current block (*nb) and scrambling as soon as a block's 16th stripe is done.
 *
 * Why this matches the one-shot description: the spec accumulates every
 * stripe that ends strictly before the end of the input (full blocks while
 * more than one block remains, then (len-1)/64 stripes of the last block),
 * then the last 64 bytes as a separate stripe. A block's 16th stripe ends
 * strictly before the input end exactly when that block is a full block
 * followed by more input, i.e. exactly when the spec scrambles it. So the
 * caller only has to guarantee that each stripe passed here is followed by
 * at least one more input byte.
 */
static void consume_stripes(uint64_t acc_io[8], size_t *nb, const unsigned char *p, size_t n,
                            const unsigned char *secret)
{
    uint64_t acc[8]; /* local copy: provably not aliased by the input bytes */
    memcpy(acc, acc_io, sizeof acc);
    while (n > 0) {
        size_t take = STRIPES_PER_BLOCK - *nb, j;
        if (take > n)
            take = n;
        for (j = 0; j < take; j++)
            accumulate(acc, p + STRIPE_LEN * j, secret + 8 * (*nb + j));
        p += STRIPE_LEN * take;
        n -= take;
        *nb += take;
        if (*nb == STRIPES_PER_BLOCK) {
            scramble(acc, secret);
            *nb = 0;
        }
    }
    memcpy(acc_io, acc, sizeof acc);
}

/* "Step 4. Finalization": finalMerge */
static uint64_t final_merge(const uint64_t acc[8], const unsigned char *sec, uint64_t init)
{
    uint64_t r = init;
    int i;
    for (i = 0; i < 4; i++)
        r += mul_fold64(acc[2 * i] ^ rd64(sec + 16 * i), acc[2 * i + 1] ^ rd64(sec + 16 * i + 8));
    return avalanche(r);
}

MML_INLINE uint64_t merge64(const uint64_t acc[8], const unsigned char *secret, uint64_t len)
{
    return final_merge(acc, secret + 11, len * PRIME64_1);
}

MML_INLINE mml_u128 merge128(const uint64_t acc[8], const unsigned char *secret, uint64_t len)
{
    mml_u128 r;
    r.low64 = final_merge(acc, secret + 11, len * PRIME64_1);
    r.high64 = final_merge(acc, secret + SECRET_LEN - STRIPE_LEN - 11, ~(len * PRIME64_2));
    return r;
}

/* "Seed and Secret": deriveSecret; seed 0 yields the default secret */
static void derive_secret(unsigned char out[SECRET_LEN], uint64_t seed)
{
    int i;
    for (i = 0; i < SECRET_LEN / 16; i++) {
        wr64(out + 16 * i, rd64(kSecret + 16 * i) + seed);
        wr64(out + 16 * i + 8, rd64(kSecret + 16 * i + 8) - seed);
    }
}

/* Steps 1-3 over a contiguous input of len > 240 bytes. */
static void hash_long(uint64_t acc[8], const unsigned char *p, size_t len,
                      const unsigned char *secret)
{
    size_t nb = 0;
    acc_init(acc);
    consume_stripes(acc, &nb, p, (len - 1) / STRIPE_LEN, secret);
    accumulate(acc, p + len - STRIPE_LEN, secret + LAST_STRIPE_OFFSET); /* "Step 3" */
}

/* ---- one-shot entry points ------------------------------------------------ */

uint64_t mml_xxh3_64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = (const unsigned char *)data;
    if (len <= 16)
        return hash64_0to16(p, len, seed);
    if (len <= MID_SIZE_MAX)
        return hash64_17to240(p, len, seed);
    {
        uint64_t acc[8];
        unsigned char derived[SECRET_LEN];
        const unsigned char *secret = kSecret;
        if (seed != 0) {
            derive_secret(derived, seed);
            secret = derived;
        }
        hash_long(acc, p, len, secret);
        return merge64(acc, secret, (uint64_t)len);
    }
}

mml_u128 mml_xxh3_128(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = (const unsigned char *)data;
    if (len <= 16)
        return hash128_0to16(p, len, seed);
    if (len <= MID_SIZE_MAX)
        return hash128_17to240(p, len, seed);
    {
        uint64_t acc[8];
        unsigned char derived[SECRET_LEN];
        const unsigned char *secret = kSecret;
        if (seed != 0) {
            derive_secret(derived, seed);
            secret = derived;
        }
        hash_long(acc, p, len, secret);
        return merge128(acc, secret, (uint64_t)len);
    }
}

/* ---- streaming ------------------------------------------------------------
 * The spec only notes that streaming needs a buffer ("Performance
 * considerations"). Invariants kept here:
 *  - a stripe is consumed only once at least one later input byte is known,
 *    so the final (possibly overlapping) stripe is never consumed early;
 *  - nothing is consumed until more than MML_XXH3_BUFFER_SIZE (>= 240) bytes
 *    arrived, so a short total input is still whole in the buffer and the
 *    digest can run the short-input algorithms on it;
 *  - mem[0..64) holds the 64 bytes preceding the buffered tail, so the last
 *    64 input bytes are always contiguous at mem + buffered.
 */

#define BUF MML_XXH3_BUFFER_SIZE
#define BUF_AT(s) ((s)->mem + STRIPE_LEN)

void mml_xxh3_128_reset(mml_xxh3_state *s, uint64_t seed)
{
    acc_init(s->acc);
    s->seed = seed;
    s->total_len = 0;
    s->buffered = 0;
    s->stripes_in_block = 0;
    derive_secret(s->secret, seed);
}

void mml_xxh3_64_reset(mml_xxh3_state *s, uint64_t seed) { mml_xxh3_128_reset(s, seed); }

void mml_xxh3_update(mml_xxh3_state *s, const void *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    if (len == 0)
        return;
    s->total_len += len;
    if (len <= BUF - s->buffered) { /* fits: just buffer it */
        memcpy(BUF_AT(s) + s->buffered, p, len);
        s->buffered += len;
        return;
    }
    if (s->buffered > 0) { /* top up the buffer; input remains, so consume all of it */
        size_t fill = BUF - s->buffered;
        memcpy(BUF_AT(s) + s->buffered, p, fill);
        p += fill;
        len -= fill;
        consume_stripes(s->acc, &s->stripes_in_block, BUF_AT(s), BUF / STRIPE_LEN, s->secret);
        memcpy(s->mem, BUF_AT(s) + BUF - STRIPE_LEN, STRIPE_LEN);
        s->buffered = 0;
    }
    if (len > BUF) { /* consume straight from the input, keeping 1..64 bytes back */
        size_t n = (len - 1) / STRIPE_LEN;
        consume_stripes(s->acc, &s->stripes_in_block, p, n, s->secret);
        p += n * STRIPE_LEN;
        len -= n * STRIPE_LEN;
        memcpy(s->mem, p - STRIPE_LEN, STRIPE_LEN);
    }
    memcpy(BUF_AT(s), p, len); /* 1 <= len <= BUF */
    s->buffered = len;
}

/* Finish steps 2-3 on a copy of the accumulators (the state stays usable). */
static void stream_finish_long(const mml_xxh3_state *s, uint64_t acc[8])
{
    size_t nb = s->stripes_in_block;
    memcpy(acc, s->acc, sizeof s->acc);
    consume_stripes(acc, &nb, BUF_AT(s), (s->buffered - 1) / STRIPE_LEN, s->secret);
    /* the last 64 input bytes: BUF_AT(s) + buffered - 64 == mem + buffered */
    accumulate(acc, s->mem + s->buffered, s->secret + LAST_STRIPE_OFFSET);
}

uint64_t mml_xxh3_64_digest(const mml_xxh3_state *s)
{
    if (s->total_len > MID_SIZE_MAX) {
        uint64_t acc[8];
        stream_finish_long(s, acc);
        return merge64(acc, s->secret, s->total_len);
    }
    return mml_xxh3_64(BUF_AT(s), s->buffered, s->seed);
}

mml_u128 mml_xxh3_128_digest(const mml_xxh3_state *s)
{
    if (s->total_len > MID_SIZE_MAX) {
        uint64_t acc[8];
        stream_finish_long(s, acc);
        return merge128(acc, s->secret, s->total_len);
    }
    return mml_xxh3_128(BUF_AT(s), s->buffered, s->seed);
}

void mml_u128_canonical(mml_u128 h, unsigned char out[16])
{
    int i;
    for (i = 0; i < 8; i++) {
        out[i] = (unsigned char)(h.high64 >> (56 - 8 * i));
        out[8 + i] = (unsigned char)(h.low64 >> (56 - 8 * i));
    }
}
