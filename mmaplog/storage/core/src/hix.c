/*
 * hix.c - HashIndex.add (mmaplog/storage/hash_index.py) in C; see hix.h.
 *
 * Names in comments (_find, _block, _alloc, _insert, _mark_dirty) are the
 * Python methods each part mirrors. The Python's _records / _miss caches are
 * left out: they only skip work and never change a byte.
 *
 * Every offset read from the file is checked against ix->size before it is
 * used, in arithmetic that cannot wrap. A writer maps the whole file, so an
 * offset past the end is MML_HIX_CORRUPT (the Python's IndexCorruptError).
 *
 * Stores happen in the Python's order; a release fence between the stores
 * that readers depend on keeps the compiler (and a weakly ordered CPU) from
 * reordering them. On x86 it costs nothing but the compiler barrier.
 */
#include "hix.h"

#include <string.h>

#include "xxh3.h"

#if defined(__GNUC__) || defined(__clang__)
#define HIX_INLINE static __inline__ __attribute__((always_inline))
#define HIX_ORDER() __atomic_thread_fence(__ATOMIC_RELEASE)
#define HIX_PREFETCH(p) __builtin_prefetch(p)
#else
#define HIX_PREFETCH(p) ((void)(p))
#define HIX_INLINE static inline
#define HIX_ORDER() ((void)0)
#endif

/* ---- layout (hash_index_format.py) --------------------------------------- */

#define HEADER_SIZE 128u
#define SLOT_SIZE 16u
#define RECORD_SIZE 40u
#define BLOCK_HEADER_SIZE 16u
#define FIRST_CAPACITY 4u
#define MAX_CAPACITY 4096u
#define MAX_KEY_LEN 1024u
#define MIN_SLOTS 8u

#define H_HEAP_USED 40u /* heap_used, then key_count at 48 (_HEAP_AND_KEYS) */
#define H_KEY_COUNT 48u
#define H_DIRTY 64u
#define R_FIRST 0u
#define R_LAST 8u  /* _R_LAST */
#define R_COUNT 16u /* _R_COUNT */
#define R_HASH 24u
#define R_KIND 32u
#define R_KEY_LEN 34u
#define B_NEXT 0u
#define B_CAP 8u
#define B_USED 12u /* _B_USED */

/* ---- little-endian loads and stores (any alignment) ---------------------- */

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HIX_LE 1
#else
#define HIX_LE 0
#endif

HIX_INLINE uint64_t ld64(const unsigned char *p) {
#if HIX_LE
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
#endif
}

HIX_INLINE uint32_t ld32(const unsigned char *p) {
#if HIX_LE
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
#else
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
#endif
}

HIX_INLINE unsigned ld16(const unsigned char *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

/* A test build (-DMML_HIX_TRACE) logs every store as (file offset, length). */
#ifdef MML_HIX_TRACE
#define MML_HIX_TRACE_CAP 4096
uint64_t mml_hix_trace_log[MML_HIX_TRACE_CAP][2];
size_t mml_hix_trace_len;
static void trace(const mml_hix *ix, const unsigned char *p, size_t n) {
    if (mml_hix_trace_len < MML_HIX_TRACE_CAP) {
        mml_hix_trace_log[mml_hix_trace_len][0] = (uint64_t)(p - ix->mm);
        mml_hix_trace_log[mml_hix_trace_len][1] = n;
    }
    mml_hix_trace_len++;
}
#define TRACE(ix, p, n) trace((ix), (p), (n))
#else
#define TRACE(ix, p, n) ((void)0)
#endif

HIX_INLINE void put64(unsigned char *p, uint64_t v) {
#if HIX_LE
    memcpy(p, &v, sizeof v);
#else
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
#endif
}

HIX_INLINE void put32(unsigned char *p, uint32_t v) {
#if HIX_LE
    memcpy(p, &v, sizeof v);
#else
    int i;
    for (i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
#endif
}

/* One ordered store each: what one struct.pack_into of the Python writes. */
HIX_INLINE void st64(const mml_hix *ix, uint64_t off, uint64_t v) {
    put64(ix->mm + off, v);
    TRACE(ix, ix->mm + off, 8);
    HIX_ORDER();
}

HIX_INLINE void st32(const mml_hix *ix, uint64_t off, uint32_t v) {
    put32(ix->mm + off, v);
    TRACE(ix, ix->mm + off, 4);
    HIX_ORDER();
}

/* ---- the add ------------------------------------------------------------- */

static int corrupt(uint64_t *detail_offset, uint64_t off) {
    if (detail_offset) *detail_offset = off;
    return MML_HIX_CORRUPT;
}

/* _mark_dirty: the header's dirty word goes to 1 before the first change. */
HIX_INLINE void mark_dirty(mml_hix *ix, uint64_t seq) {
    if (seq > ix->max_added) ix->max_added = seq;
    if (!ix->dirty) {
        st64(ix, H_DIRTY, 1);
        ix->dirty = 1;
    }
}

/* _key_hash: xxh3_64(kind byte + key bytes), seed 0; 0 becomes 1 (0 marks an empty slot). */
static uint64_t key_hash(unsigned kind, const unsigned char *key, size_t klen) {
    unsigned char buf[1 + MAX_KEY_LEN];
    uint64_t h;
    buf[0] = (unsigned char)kind;
    if (klen) memcpy(buf + 1, key, klen);
    h = mml_xxh3_64(buf, 1 + klen, 0);
    return h ? h : 1;
}

int mml_hix_add(mml_hix *ix, unsigned kind, const unsigned char *key, size_t klen,
                uint64_t seq, uint64_t *need_end, uint64_t *detail_offset) {
    return mml_hix_add_hashed(ix, kind, key, klen, 0, seq, need_end, detail_offset);
}

int mml_hix_add_hashed(mml_hix *ix, unsigned kind, const unsigned char *key, size_t klen,
                       uint64_t key_h, uint64_t seq, uint64_t *need_end,
                       uint64_t *detail_offset) {
    unsigned char *mm;
    uint64_t size, hs, mask, h, i, n, heap_cap;
    uint64_t rec = 0, last = 0, count = 0;
    int found = 0;

    /* _check_seq / _check_kind_key, and the caller's own geometry. */
    if (kind < 1 || kind > 255 || klen > MAX_KEY_LEN || seq == 0 || (klen && !key))
        return MML_HIX_BAD_ARG;
    if (!ix || !ix->mm || ix->slots < MIN_SLOTS || (ix->slots & (ix->slots - 1)) ||
        ix->slots > (UINT64_MAX - HEADER_SIZE) / SLOT_SIZE ||
        ix->hs != HEADER_SIZE + SLOT_SIZE * ix->slots || ix->hs > ix->size ||
        ix->heap_used > ix->size - ix->hs)
        return MML_HIX_BAD_ARG;
    mm = ix->mm;
    size = ix->size;
    hs = ix->hs;
    heap_cap = size - hs;
    mask = ix->slots - 1;

    /* Given by the caller when it already hashed the key (mml_hix_prefetch_adds). */
    h = key_h != 0 ? key_h : key_hash(kind, key, klen);

    /* _find: linear probing from h & mask, at most `slots` slots. */
    i = h & mask;
    for (n = 0;; n++) {
        const unsigned char *slot;
        uint64_t slot_hash, roff;
        if (n == ix->slots)
            return corrupt(detail_offset, MML_HIX_NO_OFFSET); /* "table overfull" */
        slot = mm + HEADER_SIZE + (i << 4);
        slot_hash = ld64(slot);
        if (slot_hash == 0) break; /* a miss: slot i is where the insert goes */
        if (slot_hash == h) {
            const unsigned char *r;
            roff = ld64(slot + 8);
            rec = hs + roff; /* the Python's offset; wraps only when out of bounds anyway */
            /* key_at + klen > size: the key record runs past the end of the file. */
            if (roff > heap_cap || heap_cap - roff < RECORD_SIZE + (uint64_t)klen)
                return corrupt(detail_offset, rec);
            r = mm + rec;
            if (r[R_KIND] == kind && ld16(r + R_KEY_LEN) == klen &&
                (klen == 0 || memcmp(r + RECORD_SIZE, key, klen) == 0)) {
                last = ld64(r + R_LAST);
                count = ld64(r + R_COUNT);
                /* count << 3 > size - hs: more postings than the heap can hold. */
                if (count > heap_cap >> 3) return corrupt(detail_offset, rec);
                found = 1;
                break;
            }
        }
        i = (i + 1) & mask;
    }

    if (found) {
        /* _block(last, rec): a validated last block. */
        uint64_t b, end, cap, used;
        if (last == 0) return corrupt(detail_offset, rec); /* chain ends before its count */
        b = hs + last;
        if (last > heap_cap || heap_cap - last < BLOCK_HEADER_SIZE)
            return corrupt(detail_offset, b);
        cap = ld32(mm + b + B_CAP);
        used = ld32(mm + b + B_USED);
        if (cap < FIRST_CAPACITY || cap > MAX_CAPACITY || used > cap)
            return corrupt(detail_offset, b);
        if (size - b - BLOCK_HEADER_SIZE < cap << 3) return corrupt(detail_offset, b);
        if (count) {
            uint64_t last_seq;
            if (used == 0) return corrupt(detail_offset, b); /* empty last block */
            last_seq = ld64(mm + b + BLOCK_HEADER_SIZE + ((used - 1) << 3));
            if (seq == last_seq) return MML_HIX_OK; /* re-adding the last seq: a no-op */
            if (seq < last_seq) return MML_HIX_NOT_ASCENDING;
        }
        if (used < cap) {
            mark_dirty(ix, seq);
            st64(ix, b + BLOCK_HEADER_SIZE + (used << 3), seq);
            st32(ix, b + B_USED, (uint32_t)(used + 1));
            st64(ix, rec + R_COUNT, count + 1);
            return MML_HIX_OK;
        }
        {
            /* A full last block: a successor of min(cap << 1, MAX_CAPACITY) via _alloc. */
            uint64_t new_cap = cap << 1 < MAX_CAPACITY ? cap << 1 : MAX_CAPACITY;
            uint64_t nbytes = BLOCK_HEADER_SIZE + (new_cap << 3);
            uint64_t nb = ix->heap_used, a;
            end = hs + nb + nbytes;
            if (end > size) {
                if (need_end) *need_end = end;
                return MML_HIX_NEED_HEAP;
            }
            mark_dirty(ix, seq);
            ix->heap_used = nb + nbytes;
            st64(ix, H_HEAP_USED, ix->heap_used); /* _alloc publishes heap_used */
            a = hs + nb;
            /* _BLOCK.pack_into(mm, a, 0, new_cap, 0): one 16-byte store. */
            put64(mm + a + B_NEXT, 0);
            put32(mm + a + B_CAP, (uint32_t)new_cap);
            put32(mm + a + B_USED, 0);
            TRACE(ix, mm + a, BLOCK_HEADER_SIZE);
            HIX_ORDER();
            st64(ix, a + BLOCK_HEADER_SIZE, seq);
            st32(ix, a + B_USED, 1);
            st64(ix, b + B_NEXT, nb); /* the old last block's next_block */
            st64(ix, rec + R_LAST, nb);
            st64(ix, rec + R_COUNT, count + 1);
            return MML_HIX_OK;
        }
    }

    {
        /* _insert: a new key goes to slot i. */
        uint64_t pad = (8u - (klen & 7u)) & 7u; /* -klen & 7 */
        uint64_t boff_rel = RECORD_SIZE + klen + pad;
        uint64_t nbytes = boff_rel + BLOCK_HEADER_SIZE + (FIRST_CAPACITY << 3);
        uint64_t roff, first, end, slot;
        unsigned char *r, *fb;
        if (ix->key_count >= ix->slots >> 1) /* key_count + 1 > slots * MAX_LOAD */
            return MML_HIX_NEED_TABLE;
        roff = ix->heap_used;
        end = hs + roff + nbytes;
        if (end > size) { /* _alloc(..., publish=False) would _grow(end) */
            if (need_end) *need_end = end;
            return MML_HIX_NEED_HEAP;
        }
        mark_dirty(ix, seq);
        ix->heap_used = roff + nbytes;
        first = roff + boff_rel;
        rec = hs + roff;
        /* Record, key, zero pad and first block (holding the first seq) in one copy; the
           rest of the block is left as it is (zero: the heap is only ever appended to). */
        r = mm + rec;
        put64(r + R_FIRST, first);
        put64(r + R_LAST, first);
        put64(r + R_COUNT, 1);
        put64(r + R_HASH, h);
        r[R_KIND] = (unsigned char)kind;
        r[R_KIND + 1] = 0;
        r[R_KEY_LEN] = (unsigned char)(klen & 0xff);
        r[R_KEY_LEN + 1] = (unsigned char)(klen >> 8);
        put32(r + 36, 0);
        if (klen) memcpy(r + RECORD_SIZE, key, klen);
        memset(r + RECORD_SIZE + klen, 0, (size_t)pad);
        fb = r + boff_rel;
        put64(fb + B_NEXT, 0);
        put32(fb + B_CAP, FIRST_CAPACITY);
        put32(fb + B_USED, 1);
        put64(fb + BLOCK_HEADER_SIZE, seq);
        TRACE(ix, r, (size_t)(boff_rel + BLOCK_HEADER_SIZE + 8));
        HIX_ORDER();
        ix->key_count += 1;
        /* _HEAP_AND_KEYS.pack_into: heap_used and key_count in one 16-byte store. */
        put64(mm + H_HEAP_USED, ix->heap_used);
        put64(mm + H_KEY_COUNT, ix->key_count);
        TRACE(ix, mm + H_HEAP_USED, 16);
        HIX_ORDER();
        /* Offset before hash: a reader that sees the hash also sees where the record is. */
        slot = HEADER_SIZE + (i << 4);
        st64(ix, slot + 8, roff);
        st64(ix, slot, h);
        return MML_HIX_OK;
    }
}

/* ---- the read side: HashIndex.lookup_all (_find, _block, _postings) ----------------------- */

#define SMALL_CHAIN 64u /* _SMALL: the Python reads longer chains another way, with a hop limit */

/* The view's own geometry: what _validate_header established when the file was opened. */
static int view_ok(const mml_hix_view *v) {
    return v && v->mm && v->slots >= MIN_SLOTS && !(v->slots & (v->slots - 1)) &&
           v->slots <= (UINT64_MAX - HEADER_SIZE) / SLOT_SIZE &&
           v->hs == HEADER_SIZE + SLOT_SIZE * v->slots && v->hs <= v->size;
}

void mml_hix_prefetch(const mml_hix_view *v, unsigned kind, const unsigned char *key,
                      size_t klen) {
#if defined(__GNUC__) || defined(__clang__)
    if (kind < 1 || kind > 255 || klen > MAX_KEY_LEN || (klen && !key) || !view_ok(v)) return;
    __builtin_prefetch(v->mm + HEADER_SIZE + ((key_hash(kind, key, klen) & (v->slots - 1)) << 4));
#else
    (void)v, (void)kind, (void)key, (void)klen;
#endif
}

int mml_hix_find(const mml_hix_view *v, unsigned kind, const unsigned char *key, size_t klen,
                 uint64_t *first, uint64_t *count) {
    uint64_t heap_cap, mask, h, i, n;
    if (kind < 1 || kind > 255 || klen > MAX_KEY_LEN || (klen && !key) || !view_ok(v))
        return MML_HIX_CORRUPT; /* the Python raises ValueError for the first two */
    heap_cap = v->size - v->hs;
    mask = v->slots - 1;
    h = key_hash(kind, key, klen);
    /* Probing is bounded by the slot count: a table with no empty slot ends here too. */
    for (i = h & mask, n = 0; n < v->slots; n++, i = (i + 1) & mask) {
        const unsigned char *slot = v->mm + HEADER_SIZE + (i << 4), *r;
        uint64_t slot_hash = ld64(slot), roff;
        if (slot_hash == 0) return MML_HIX_MISSING;
        if (slot_hash != h) continue;
        roff = ld64(slot + 8);
        /* The record and its key must lie inside the mapping before any byte of them is read
           (the Python: key_at + klen > size, then _need). */
        if (roff > heap_cap || heap_cap - roff < RECORD_SIZE + (uint64_t)klen)
            return MML_HIX_CORRUPT;
        r = v->mm + v->hs + roff;
        if (r[R_KIND] != kind || ld16(r + R_KEY_LEN) != klen ||
            (klen && memcmp(r + RECORD_SIZE, key, klen) != 0))
            continue; /* another key with the same hash */
        *first = ld64(r + R_FIRST);
        *count = ld64(r + R_COUNT);
        /* count << 3 > size - hs: more postings than the mapped heap can hold. */
        if (*count > heap_cap >> 3) return MML_HIX_CORRUPT;
        return MML_HIX_FOUND;
    }
    return MML_HIX_CORRUPT; /* "probe sequence found no empty slot (table overfull)" */
}

/* _block: the block at heap offset boff, inside the mapping with a sane capacity and use. */
HIX_INLINE int read_block(const mml_hix_view *v, uint64_t boff, const unsigned char **blk,
                          uint64_t *next, uint64_t *used) {
    uint64_t heap_cap = v->size - v->hs, cap;
    const unsigned char *b;
    if (boff == 0) return MML_HIX_CORRUPT; /* the chain ends before its count */
    if (boff > heap_cap || heap_cap - boff < BLOCK_HEADER_SIZE) return MML_HIX_CORRUPT;
    b = v->mm + v->hs + boff;
    cap = ld32(b + B_CAP);
    *used = ld32(b + B_USED);
    if (cap < FIRST_CAPACITY || cap > MAX_CAPACITY || *used > cap) return MML_HIX_CORRUPT;
    /* The whole block, all `cap` seqs, must be mapped (the Python checks the block's end). */
    if (heap_cap - boff - BLOCK_HEADER_SIZE < cap << 3) return MML_HIX_CORRUPT;
    *next = ld64(b + B_NEXT);
    *blk = b;
    return MML_HIX_OK;
}

int mml_hix_postings(const mml_hix_view *v, uint64_t first, uint64_t count, uint64_t *out) {
    uint64_t boff = first, got = 0, k;
    /* The Python bounds the hops of a long chain (one well formed has at most
       count / 4096 + 11 blocks); a short one needs no bound, every block gives a seq. */
    uint64_t hops_left = count > SMALL_CHAIN ? count / MAX_CAPACITY + 12 : UINT64_MAX;
    if (!view_ok(v)) return MML_HIX_CORRUPT;
    while (got < count) {
        const unsigned char *b;
        uint64_t next, used, take;
        if (hops_left-- == 0) return MML_HIX_CORRUPT;
        if (read_block(v, boff, &b, &next, &used) != MML_HIX_OK) return MML_HIX_CORRUPT;
        if (used == 0) return MML_HIX_CORRUPT; /* an empty block inside a chain */
        take = used < count - got ? used : count - got;
#if HIX_LE
        memcpy(out + got, b + BLOCK_HEADER_SIZE, (size_t)(take << 3));
#else
        for (k = 0; k < take; k++) out[got + k] = ld64(b + BLOCK_HEADER_SIZE + (k << 3));
#endif
        got += take;
        boff = next;
    }
    /* Ascending (equal neighbours pass, as in the Python's sorted() comparison). */
    for (k = 1; k < count; k++)
        if (out[k] < out[k - 1]) return MML_HIX_CORRUPT;
    return MML_HIX_OK;
}

/* ---- the write side's prefetch ------------------------------------------------------------ */

void mml_hix_prefetch_adds(const mml_hix *ix, mml_hix_pending *adds, int n) {
    /* Three passes, each touching only what the one before brought in: the home slots; the
     * key records those slots point to; the records' last posting blocks. The misses of a
     * pass overlap instead of following one another, add after add. Nothing is written;
     * what does not look right is skipped (the add itself checks everything). */
    if (!ix || !ix->mm || ix->slots < MIN_SLOTS || (ix->slots & (ix->slots - 1)) ||
        ix->hs != HEADER_SIZE + SLOT_SIZE * ix->slots || ix->hs > ix->size)
        return;
    const unsigned char *mm = ix->mm;
    uint64_t mask = ix->slots - 1, heap_cap = ix->size - ix->hs;
    for (int j = 0; j < n; j++) {
        mml_hix_pending *a = &adds[j];
        a->h = 0;
        if (a->kind < 1 || a->kind > 255 || a->klen > MAX_KEY_LEN || (a->klen && !a->key))
            continue;
        a->h = key_hash(a->kind, a->key, a->klen);
        HIX_PREFETCH(mm + HEADER_SIZE + ((a->h & mask) << 4));
    }
    for (int j = 0; j < n; j++) {
        const unsigned char *slot = mm + HEADER_SIZE + ((adds[j].h & mask) << 4);
        uint64_t roff = ld64(slot + 8);
        if (adds[j].h == 0 || ld64(slot) != adds[j].h || heap_cap < RECORD_SIZE ||
            roff > heap_cap - RECORD_SIZE) {
            adds[j].rec = 0;
            continue;
        }
        adds[j].rec = ix->hs + roff;
        HIX_PREFETCH(mm + adds[j].rec);
    }
    for (int j = 0; j < n; j++) {
        if (adds[j].rec == 0) continue;
        uint64_t last = ld64(mm + adds[j].rec + R_LAST);
        if (heap_cap >= BLOCK_HEADER_SIZE && last <= heap_cap - BLOCK_HEADER_SIZE)
            HIX_PREFETCH(mm + ix->hs + last);
    }
}
