/*
 * xxh3.h - XXH3-64 and XXH3-128 (default secret, optional 64-bit seed).
 *
 * Written from the published xxHash specification (doc/xxhash_spec.md,
 * "XXH3 Algorithm Description"); results are bit-identical to the reference
 * XXH3_64bits_withSeed / XXH3_128bits_withSeed.
 *
 * Portable C99. Scalar only. No heap allocation.
 */
#ifndef MML_XXH3_H
#define MML_XXH3_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One-shot 64-bit hash. */
uint64_t mml_xxh3_64(const void *data, size_t len, uint64_t seed);

/* 128-bit hash: low64 / high64 halves, as in the spec's XXH128_hash_t. */
typedef struct {
    uint64_t low64, high64;
} mml_u128;

/* One-shot 128-bit hash. */
mml_u128 mml_xxh3_128(const void *data, size_t len, uint64_t seed);

/*
 * Streaming: hash several discontiguous pieces without concatenating them.
 * The result equals the one-shot hash of the concatenation, for any split.
 * The state is plain data of fixed size (usable on the stack); its fields are
 * private. The same state serves both widths: either digest may be taken,
 * any number of times, and update may continue after a digest.
 */
#define MML_XXH3_BUFFER_SIZE 256 /* multiple of 64 and >= 240 */
typedef struct {
    uint64_t acc[8];            /* long-input accumulators */
    uint64_t seed;
    uint64_t total_len;         /* bytes fed so far */
    size_t buffered;            /* unprocessed bytes held in mem[64..] */
    size_t stripes_in_block;    /* stripes accumulated in the current block */
    unsigned char secret[192];  /* default secret, or seed-derived one */
    /* mem[0..64): the 64 input bytes just before the buffered ones
     * (valid once any stripe was consumed); mem[64..64+buffered): the
     * unprocessed input tail. */
    unsigned char mem[64 + MML_XXH3_BUFFER_SIZE];
} mml_xxh3_state;

void mml_xxh3_128_reset(mml_xxh3_state *s, uint64_t seed);
void mml_xxh3_64_reset(mml_xxh3_state *s, uint64_t seed);
void mml_xxh3_update(mml_xxh3_state *s, const void *data, size_t len);
uint64_t mml_xxh3_64_digest(const mml_xxh3_state *s);
mml_u128 mml_xxh3_128_digest(const mml_xxh3_state *s);

/* Canonical 16-byte big-endian form (high64 first), as returned by python
 * xxhash's xxh3_128_digest / XXH128_canonicalFromHash. */
void mml_u128_canonical(mml_u128 h, unsigned char out[16]);

#ifdef __cplusplus
}
#endif

#endif /* MML_XXH3_H */
