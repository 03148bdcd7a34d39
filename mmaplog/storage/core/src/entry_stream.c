/* entry_stream.c - see entry_stream.h. */
#include "entry_stream.h"

#include <string.h>

#include "xxh3.h"

#define FLAG_CORRELATION 1u
#define FLAG_CAUSATION 2u
#define SMALL_STREAM 4096 /* streams up to this size are copied and hashed in one shot */

static const unsigned char DOMAIN[16] = {'m', 'm', 'a', 'p', 'l', 'o', 'g', '/',
                                         'e', 'n', 't', 'r', 'y', '/', 'v', '1'};

static void put_u64be(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (56 - 8 * i));
}

void mml_stream_head(unsigned char head[MML_STREAM_HEAD], uint64_t seq, uint64_t ts_init,
                     uint64_t ts_publish) {
    memcpy(head, DOMAIN, 16);
    put_u64be(head + 16, seq);
    put_u64be(head + 24, ts_init);
    put_u64be(head + 32, ts_publish);
}

size_t mml_stream_tail(unsigned char tail[MML_STREAM_TAIL_MAX], unsigned flags,
                       const unsigned char corr[16], const unsigned char caus[16]) {
    size_t n = 0;
    tail[n++] = (flags & FLAG_CORRELATION) ? 1 : 0;
    if (flags & FLAG_CORRELATION) {
        memcpy(tail + n, corr, 16);
        n += 16;
    }
    tail[n++] = (flags & FLAG_CAUSATION) ? 1 : 0;
    if (flags & FLAG_CAUSATION) {
        memcpy(tail + n, caus, 16);
        n += 16;
    }
    return n;
}

void mml_entry_hash_parts(const mml_part *parts, int nparts, unsigned char out[16]) {
    size_t total = 0;
    for (int i = 0; i < nparts; i++) total += parts[i].len;
    mml_u128 h;
    if (total <= SMALL_STREAM) {
        unsigned char stream[SMALL_STREAM];
        size_t at = 0;
        for (int i = 0; i < nparts; i++) {
            if (parts[i].len) memcpy(stream + at, parts[i].bytes, parts[i].len);
            at += parts[i].len;
        }
        h = mml_xxh3_128(stream, total, 0);
    } else {
        mml_xxh3_state st;
        mml_xxh3_128_reset(&st, 0);
        for (int i = 0; i < nparts; i++)
            if (parts[i].len) mml_xxh3_update(&st, parts[i].bytes, parts[i].len);
        h = mml_xxh3_128_digest(&st);
    }
    mml_u128_canonical(h, out);
}
