/*
 * hix.h - the sidecar hash index keys.hix in C: the writer side, HashIndex.add
 * (mmaplog/storage/hash_index.py) ported byte for byte, and the read side, the walk of
 * HashIndex.lookup_all (at the end of this header). The byte layout is
 * the one in mmaplog/storage/hash_index_format.py.
 *
 * Portable C99. No heap allocation, no Python API: the caller may release the
 * GIL around mml_hix_add. Not thread-safe (one writer per file, as in Python).
 *
 * Growth stays in Python. mml_hix_add never grows anything: when the insert
 * of a new key needs the slot table doubled it returns MML_HIX_NEED_TABLE, when
 * the heap needs more room it returns MML_HIX_NEED_HEAP; in both cases nothing
 * has been written, and the caller grows the file and calls again.
 *
 * Keeping the struct and the Python HashIndex object in sync:
 *   mm, size, slots, hs   <- HashIndex._mm (address of the writable map),
 *                            _size, _slots, _hs; reload after every _grow /
 *                            _grow_table / _remap (they replace the map).
 *   heap_used, key_count, <-> HashIndex._heap_used, _key_count, _max_added,
 *   max_added, dirty          _dirty (bool). The C side updates them; copy them
 *                            back to the object before any Python method
 *                            (_grow, _grow_table, commit, truncate, add, ...) runs,
 *                            and copy them from the object again afterwards.
 * HashIndex._records / _miss need no syncing: C never uses them, the record
 * offsets the cache holds stay valid (the heap is append-only and a table
 * rebuild copies it unchanged), and _miss is always set by the _find of the
 * same Python add that consumes it.
 */
#ifndef MML_HIX_H
#define MML_HIX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    unsigned char *mm;      /* writable mapping of the whole keys.hix file */
    uint64_t size;          /* bytes mapped (== file size) */
    uint64_t slots;         /* slot_count from the header */
    uint64_t hs;            /* heap_start from the header */
    uint64_t heap_used;     /* writer's copy (Python HashIndex._heap_used) */
    uint64_t key_count;     /* writer's copy (Python HashIndex._key_count) */
    uint64_t max_added;     /* Python HashIndex._max_added */
    int dirty;              /* Python HashIndex._dirty */
} mml_hix;

enum {
    MML_HIX_OK = 0,
    MML_HIX_NEED_TABLE = 1,  /* the insert of a new key needs the slot table doubled first:
                                the Python side calls HashIndex._grow_table(slots << 1) and retries */
    MML_HIX_NEED_HEAP = 2,   /* the heap needs to grow so that the file is at least *need_end bytes:
                                the Python side calls HashIndex._grow(*need_end) and retries */
    MML_HIX_CORRUPT = -1,    /* what the Python raises IndexCorruptError for; *detail_offset set */
    MML_HIX_NOT_ASCENDING = -2, /* Python raises ValueError: seq below the key's last seq */
    MML_HIX_BAD_ARG = -3     /* kind not in 1..255, key longer than MAX_KEY_LEN, seq 0 or > 2^64-1 */
};

/* *detail_offset for MML_HIX_CORRUPT where the Python error carries offset=None
 * (the probe met no empty slot: the table is overfull). Offsets the Python
 * computes past 2^64 (hs + a huge offset read from the file) wrap modulo 2^64. */
#define MML_HIX_NO_OFFSET UINT64_MAX

/* Add `seq` to (kind, key) exactly as HashIndex.add does: re-adding a key's last seq is a no-op,
   writes the same bytes in the same order (the dirty header word before the first change, the
   posting/record/slot words in the same order — the order matters for concurrent readers, see
   the comments in the Python), updates the struct's writer copies. When it returns NEED_*,
   NOTHING has been modified, so the call can be retried after the Python side grew the file.

   need_end and detail_offset may be NULL. MML_HIX_BAD_ARG is also returned, with nothing
   written, when the struct itself is inconsistent (mm NULL, slots not a power of two >= 8,
   hs != 128 + 16 * slots, hs > size, or hs + heap_used > size): those come from the caller,
   not from the file. */
int mml_hix_add(mml_hix *ix, unsigned kind, const unsigned char *key, size_t klen,
                uint64_t seq, uint64_t *need_end, uint64_t *detail_offset);

/* mml_hix_add with the key's hash already computed (key_h != 0), as mml_hix_prefetch_adds
   leaves it; key_h == 0 hashes the key here. */
int mml_hix_add_hashed(mml_hix *ix, unsigned kind, const unsigned char *key, size_t klen,
                       uint64_t key_h, uint64_t seq, uint64_t *need_end,
                       uint64_t *detail_offset);

/* One add a batch is about to make. */
typedef struct {
    const unsigned char *key;
    unsigned kind;
    uint16_t klen;
    uint64_t seq;
    uint64_t post_slot, post_off; /* where the framer resumes if this add stops it */
    uint64_t h;                   /* set by mml_hix_prefetch_adds (0: hash it in the add) */
    uint64_t rec;                 /* scratch for the prefetch */
} mml_hix_pending;

/* Hash the keys of `n` adds about to be made and prefetch, pass after pass, their home slots,
   key records and last posting blocks, so that the cache misses of a batch's adds overlap.
   Reads only (bounds-checked); a hint: mml_hix_add_hashed checks everything again. */
void mml_hix_prefetch_adds(const mml_hix *ix, mml_hix_pending *adds, int n);

/* ---- the read side: HashIndex.lookup_all's walk --------------------------------------------
 *
 * A read-only view of a mapping (a reader's, or the writer's own). The caller validated the
 * geometry when it opened the file (_validate_header) and passes what its HashIndex holds;
 * size is the mapping's length, which may trail a file that has grown since.
 *
 * Both functions return MML_HIX_CORRUPT for every case where the Python raises
 * IndexCorruptError *or* would remap first (an offset past the mapping: a reader remaps when
 * the file grew). The caller then lets the Python answer, so a damaged file gets the Python's
 * error and a grown one the Python's remap: C only ever answers when the Python would have
 * answered the same without raising. */
typedef struct {
    const unsigned char *mm;
    uint64_t size;  /* bytes mapped */
    uint64_t slots; /* slot_count */
    uint64_t hs;    /* heap_start */
} mml_hix_view;

enum { MML_HIX_MISSING = 0, MML_HIX_FOUND = 1 };

/* _find: MML_HIX_FOUND with the key record's first block and count, MML_HIX_MISSING, or
   MML_HIX_CORRUPT (also for a view whose geometry is inconsistent, kind outside 1..255 or a
   key longer than MAX_KEY_LEN: the Python raises for those). count is bounded: count * 8
   never exceeds the heap's mapped bytes. */
int mml_hix_find(const mml_hix_view *v, unsigned kind, const unsigned char *key, size_t klen,
                 uint64_t *first, uint64_t *count);

/* A hint to start loading the slot where the probe for (kind, key) starts, before the caller's
   syscalls: the load that follows them is then no cache miss. Never faults (a prefetch). */
void mml_hix_prefetch(const mml_hix_view *v, unsigned kind, const unsigned char *key,
                      size_t klen);

/* _postings: all `count` seqs of the chain starting at `first` into out[0..count), checked as
   the Python checks them (every block's bounds, capacity and used; no empty block; the hop
   limit of long chains; ascending). MML_HIX_OK or MML_HIX_CORRUPT. */
int mml_hix_postings(const mml_hix_view *v, uint64_t first, uint64_t count, uint64_t *out);

#ifdef __cplusplus
}
#endif

#endif /* MML_HIX_H */
