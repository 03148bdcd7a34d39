/*
 * sha256.h - SHA-256 (FIPS 180-4), written for mmaplog's Merkle leaves and nodes.
 *
 * A portable scalar compression function, and on x86 one using the SHA extensions, picked at
 * run time (mml_sha256_setup). Proven equal to hashlib in tests/test_native_sha256.py.
 */
#ifndef MML_SHA256_H
#define MML_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define MML_SHA256_SIZE 32u

typedef struct {
    uint32_t h[8];
    uint64_t total;          /* bytes hashed so far */
    size_t fill;             /* bytes waiting in buf */
    unsigned char buf[64];
} mml_sha256_ctx;

/* Choose the compression function (SHA-NI when the CPU has it). Idempotent; call once at
 * module init. force_scalar: use the portable one (tests compare both). */
void mml_sha256_setup(int force_scalar);
/* "sha-ni" or "scalar": the compression function in use. */
const char *mml_sha256_impl(void);

void mml_sha256_init(mml_sha256_ctx *ctx);
void mml_sha256_update(mml_sha256_ctx *ctx, const void *data, size_t len);
void mml_sha256_final(mml_sha256_ctx *ctx, unsigned char out[MML_SHA256_SIZE]);
void mml_sha256(const void *data, size_t len, unsigned char out[MML_SHA256_SIZE]);
/* SHA-256(0x01 || left || right): an RFC 9162 interior node. */
void mml_sha256_node(const unsigned char *left, const unsigned char *right,
                     unsigned char out[MML_SHA256_SIZE]);

#endif
