/*
 * entry_stream.h - the canonical entry byte stream, in one place for every C file that hashes it.
 *
 * Python twin: mmaplog/storage/entry_hash.py (canonical_stream, hash_with_framing); the layout
 * is in docs/FORMAT.md, "Canonical entry hash":
 *
 *   "mmaplog/entry/v1" | seq, ts_init, ts_publish (u64 big-endian)      <- mml_stream_head
 *   | u64be(len) topic | u64be(len) payload_type                         <- the framed names
 *   | u64be(payload length) | payload
 *   | correlation id, causation id: each 0x00, or 0x01 + its 16 bytes    <- mml_stream_tail
 *
 * The entry hash is the xxh3-128 (canonical, big-endian) of that stream; the Merkle leaf is the
 * SHA-256 of 0x00 followed by it.
 */
#ifndef MML_ENTRY_STREAM_H
#define MML_ENTRY_STREAM_H

#include <stddef.h>
#include <stdint.h>

#define MML_STREAM_HEAD 40     /* domain + three u64 */
#define MML_STREAM_TAIL_MAX 34 /* two ids, present */

typedef struct {
    const void *bytes;
    size_t len;
} mml_part;

/* The stream's first 40 bytes: the domain and seq, ts_init, ts_publish. */
void mml_stream_head(unsigned char head[MML_STREAM_HEAD], uint64_t seq, uint64_t ts_init,
                     uint64_t ts_publish);

/* The stream's last bytes from the frame flags and the raw ids; returns their length. */
size_t mml_stream_tail(unsigned char tail[MML_STREAM_TAIL_MAX], unsigned flags,
                       const unsigned char corr[16], const unsigned char caus[16]);

/* The entry hash (xxh3-128, canonical) of the stream made of `parts` in order: hashed in one
 * shot when it is small, streamed otherwise. */
void mml_entry_hash_parts(const mml_part *parts, int nparts, unsigned char out[16]);

#endif /* MML_ENTRY_STREAM_H */
