/*
 * verify.c - the per-frame, per-record and per-slot loops of `mmaplog verify`, GIL released.
 *
 * Python twins (the reference; MMAPLOG_PURE=1 runs them): mmaplog/integrity/verify_scan.py
 * (_FrameScan._fast, _accept, _index_only_checks), verify_run.py (check_entry_hashes),
 * verify_postings.py (_frame_postings, _index_postings) and verify_keys.py (_HixAudit). Each
 * function below says which Python it replaces; the Python keeps every decision about findings
 * and every rare path (damage, walks, odd key blocks and odd posting chains). What C does not
 * handle exactly as the Python would, it hands back ("deferred") instead of guessing, so the two
 * cores report the same findings by construction; tests/test_verify_differential.py checks it.
 *
 * A call writes only the per-seq slots of the rows it is given, so the Python runs the segments'
 * scans on two threads (verify_scan.py: _native_scans) and merges what they return in order.
 *
 * Every offset and length read from a file is checked against the size of the buffer it
 * indexes before it is used, in arithmetic that cannot wrap. The buffers are the caller's
 * read-only mappings, each no longer than its file (so no SIGBUS); output arrays are the
 * caller's numpy arrays, indexed by seq - 1 and checked against their length.
 */
#include "native.h"

#include "entry_stream.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Per-seq states (verify_scan.py: _MISSING, _OK, _DAMAGED, _SEQ_MISMATCH, _HASH_MISMATCH). */
enum { ST_MISSING = 0, ST_OK = 1, ST_DAMAGED = 2, ST_SEQ_MISMATCH = 3, ST_HASH_MISMATCH = 4 };

/* Index drift bits, in the order the Python names the fields (verify_scan.py: DRIFT_FIELDS). */
enum {
    D_POSITION = 1 << 0,
    D_LENGTH = 1 << 1,
    D_TS_INIT = 1 << 2,
    D_TS_PUBLISH = 1 << 3,
    D_TOPIC = 1 << 4,
    D_PTYPE = 1 << 5,
    D_FLAGS = 1 << 6,
    D_CORRELATION = 1 << 7,
    D_CAUSATION = 1 << 8,
    D_SEQ = 1 << 9,
    D_TS_MAX = 1 << 10,
    D_CHECKSUM = 1 << 11,
    D_RESERVED = 1 << 12,
};

#define EOS_WORD ((uint64_t)MML_EOS_MAGIC << 32)
#define MIN_FRAME (MML_FRAME_HEADER_SIZE + 8u)

/* Frames and keys.hix records are read one cache line each, in an order memory does not
 * predict: asking for the line PREFETCH_AHEAD items early hides most of the latency. A prefetch
 * never faults; the addresses are bounds-checked all the same. */
#define PREFETCH_AHEAD 16
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch((p), 0, 0)
#else
#define PREFETCH(p) ((void)0)
#endif

static inline uint32_t ld32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v; /* the format and every supported CPU are little-endian (native.h) */
}
static inline uint64_t ld64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* --- buffers --------------------------------------------------------------------------------- */

/* Up to 8 buffer arguments, released together. */
typedef struct {
    Py_buffer views[8];
    int n;
} bufs;

static int take(bufs *b, PyObject *obj, int writable, const unsigned char **out, size_t *len) {
    if (b->n == 8) {
        PyErr_SetString(PyExc_SystemError, "too many buffers");
        return -1;
    }
    if (PyObject_GetBuffer(obj, &b->views[b->n], writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0)
        return -1;
    *out = b->views[b->n].buf;
    *len = (size_t)b->views[b->n].len;
    b->n++;
    return 0;
}

static void release(bufs *b) {
    while (b->n > 0) PyBuffer_Release(&b->views[--b->n]);
}

/* --- faulting a mapping in ------------------------------------------------------------------ */

/* populate(buffer) -> bool: verify_keys.populate (MADV_POPULATE_READ over the whole pages of a
 * read-only mapping) with the GIL released, so a verify thread faulting one segment in does not
 * stall the one checking another. False where the kernel does not know the advice. */
static PyObject *py_populate(PyObject *Py_UNUSED(module), PyObject *arg) {
#ifdef MADV_POPULATE_READ
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)view.buf, end = start + (uintptr_t)view.len;
    int rc = 0;
    if (page > 0) {
        /* only pages wholly inside the buffer: the advice must not reach beyond it */
        start = (start + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
        end &= ~((uintptr_t)page - 1);
        if (end > start) {
            Py_BEGIN_ALLOW_THREADS
            rc = madvise((void *)start, end - start, MADV_POPULATE_READ);
            Py_END_ALLOW_THREADS
        }
    }
    PyBuffer_Release(&view);
    return PyBool_FromLong(rc == 0);
#else
    Py_RETURN_FALSE;
#endif
}

/* --- the walk test (_FrameScan._fast, first pass) --------------------------------------------- */

/* walk_test(segment, records, first, n, is_last, sealed) -> None | (end, is_eos)
 *
 * True when records first..first+n-1 (0-based rows of the committed records) place their frames
 * exactly where a walk by the frames' own length words lands: the first at 64, each next one
 * where the one before ends, every commit word a plausible frame inside the segment, and the
 * word after the last frame an end-of-segment marker (zero is also allowed in the last segment
 * of a run; in a live run anything is). Nothing is written: a failed test leaves the segment to
 * the walk, exactly as the Python's False does. */
static PyObject *py_walk_test(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *seg_obj, *rec_obj;
    Py_ssize_t first, n;
    int is_last, sealed;
    if (!PyArg_ParseTuple(args, "OOnnpp", &seg_obj, &rec_obj, &first, &n, &is_last, &sealed))
        return NULL;
    bufs b = {.n = 0};
    const unsigned char *seg, *rec;
    size_t size, rlen;
    if (take(&b, seg_obj, 0, &seg, &size) < 0 || take(&b, rec_obj, 0, &rec, &rlen) < 0) {
        release(&b);
        return NULL;
    }
    if (first < 0 || n < 1 || (size_t)first > rlen / MML_INDEX_RECORD_SIZE ||
        (size_t)n > rlen / MML_INDEX_RECORD_SIZE - (size_t)first) {
        release(&b);
        PyErr_SetString(PyExc_ValueError, "records out of range");
        return NULL;
    }
    uint64_t end = MML_SEGMENT_HEADER_SIZE;
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < n; k++) {
        if (k + PREFETCH_AHEAD < n) {
            size_t row = (size_t)(first + k + PREFETCH_AHEAD);
            uint64_t ahead = ld32(rec + row * MML_INDEX_RECORD_SIZE + 36);
            if (ahead < size) PREFETCH(seg + ahead);
        }
        uint64_t off = ld32(rec + (size_t)(first + k) * MML_INDEX_RECORD_SIZE + 36);
        /* off + 8 <= size before the commit word is read; length checked before it is added */
        if (off != end || (off & 7) || off + 8 > size) {
            ok = 0;
            break;
        }
        uint64_t cw = ld64(seg + off), len = cw & 0xFFFFFFFFu;
        if ((cw >> 32) != MML_FRAME_MAGIC || len < MIN_FRAME || (len & 7) || off + len + 8 > size) {
            ok = 0;
            break;
        }
        end = off + len;
    }
    Py_END_ALLOW_THREADS
    uint64_t term = ok ? ld64(seg + end) : 0; /* end + 8 <= size: checked in the loop */
    release(&b);
    if (!ok || (!is_last && term != EOS_WORD) ||
        (is_last && sealed && term != 0 && term != EOS_WORD))
        Py_RETURN_NONE;
    return Py_BuildValue("(Ki)", (unsigned long long)end, term == EOS_WORD);
}

/* --- a small set of (topic, payload_type) pairs, first seq each ------------------------------ */

typedef struct {
    uint64_t *keys; /* (topic << 32 | ptype) + 1; 0 marks an empty slot */
    uint64_t *first;
    size_t cap, used;
    int failed;
} pair_set;

static void pairs_add(pair_set *ps, uint64_t pair, uint64_t seq) {
    if (ps->failed) return;
    if (2 * (ps->used + 1) > ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 64;
        uint64_t *keys = calloc(cap, 8), *first = calloc(cap, 8);
        if (keys == NULL || first == NULL) {
            free(keys);
            free(first);
            ps->failed = 1;
            return;
        }
        for (size_t i = 0; i < ps->cap; i++) {
            if (!ps->keys[i]) continue;
            size_t j = (size_t)(ps->keys[i] * 0x9E3779B97F4A7C15ull >> 20) & (cap - 1);
            while (keys[j]) j = (j + 1) & (cap - 1);
            keys[j] = ps->keys[i];
            first[j] = ps->first[i];
        }
        free(ps->keys);
        free(ps->first);
        ps->keys = keys;
        ps->first = first;
        ps->cap = cap;
    }
    uint64_t key = pair + 1;
    size_t j = (size_t)(key * 0x9E3779B97F4A7C15ull >> 20) & (ps->cap - 1);
    while (ps->keys[j]) {
        if (ps->keys[j] == key) return; /* seen: the first seq stays */
        j = (j + 1) & (ps->cap - 1);
    }
    ps->keys[j] = key;
    ps->first[j] = seq;
    ps->used++;
}

/* --- postings as a digest --------------------------------------------------------------------- */

/* verify_keys.py: _fingerprints (splitmix64's finaliser over hash and seq). */
static inline uint64_t fingerprint(uint64_t h, uint64_t s) {
    uint64_t x = h ^ (s * 0x9E3779B97F4A7C15ull);
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* xxh3-64 of the kind byte and the key, as keys.hix hashes a (kind, key). */
static uint64_t key_hash(unsigned kind, const unsigned char *key, size_t klen) {
    unsigned char buf[1 + MML_MAX_KEY_BYTES];
    buf[0] = (unsigned char)kind;
    memcpy(buf + 1, key, klen); /* klen <= 1024: checked by every caller */
    return mml_xxh3_64(buf, 1 + klen, 0);
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The 16 bytes of a UUID in its canonical text (8-4-4-4-12 hex digits); 0, or -1 for any
 * other text, which the Python (uuid.UUID, with its many accepted spellings) then judges. */
static int parse_uuid(const unsigned char *s, size_t n, unsigned char out[16]) {
    if (n != 36) return -1;
    int at = 0;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return -1;
            continue;
        }
        int v = hexval(s[i]);
        if (v < 0) return -1;
        if (at & 1)
            out[at >> 1] |= (unsigned char)v;
        else
            out[at >> 1] = (unsigned char)(v << 4);
        at++;
    }
    return 0;
}

#define FRAME_KEYS_MAX 64 /* a key block with more keys is left to the Python */

/* The key hashes a good frame is indexed under (verify_postings.py: _frame_postings and
 * block_keys): its key block, correlation ids as their 16 UUID bytes, and its header's
 * correlation id; distinct. -1 when the Python must judge the frame (a cut-short block, a
 * correlation key not in canonical text, many keys, a frame outside the segment). */
static int frame_key_hashes(const unsigned char *seg, size_t size, uint64_t off, uint64_t *hs) {
    if ((off & 7) || off < MML_SEGMENT_HEADER_SIZE || off + MIN_FRAME > size) return -1;
    const unsigned char *f = seg + off;
    uint64_t len = ld32(f), plen = ld32(f + 40), klen = mml_get_u16(f + 46);
    if (len > size - off || plen + klen + MIN_FRAME > len) return -1;
    const unsigned char *p = f + MML_FRAME_HEADER_SIZE + plen, *end = p + klen;
    int n = 0;
    while (p < end) {
        if (end - p < 3) return -1; /* cut short: a finding */
        unsigned kind = p[0];
        size_t kl = mml_get_u16(p + 1);
        if ((size_t)(end - p - 3) < kl) return -1; /* cut short: a finding */
        const unsigned char *key = p + 3;
        p += 3 + kl;
        if (n == FRAME_KEYS_MAX) return -1;
        if (kind == MML_KIND_CORRELATION) {
            unsigned char raw[16];
            if (parse_uuid(key, kl, raw) < 0) return -1;
            hs[n++] = key_hash(kind, raw, 16);
        } else {
            if (kl > MML_MAX_KEY_BYTES) return -1;
            hs[n++] = key_hash(kind, key, kl);
        }
    }
    if (mml_get_u16(f + 44) & MML_FLAG_CORRELATION) {
        if (n == FRAME_KEYS_MAX) return -1;
        hs[n++] = key_hash(MML_KIND_CORRELATION, f + 48, 16);
    }
    /* distinct (the Python's pairs are a set): a key may repeat, or be the header's id too */
    int m = 0;
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (int j = 0; j < m && !seen; j++) seen = hs[j] == hs[i];
        if (!seen) hs[m++] = hs[i];
    }
    return m;
}

/* --- checksums, fields and entry hashes (_fast second pass, _accept, check_entry_hashes) ------ */

/* The canonical entry hash of the frame at f (bounds checked by the caller). */
static void entry_hash(const unsigned char *f, const mml_name_ref *topic, const mml_name_ref *ptype,
                       uint32_t plen, unsigned char out[16]) {
    unsigned char head[MML_STREAM_HEAD], lenbe[8], tail[MML_STREAM_TAIL_MAX];
    mml_stream_head(head, ld64(f + 8), ld64(f + 16), ld64(f + 24));
    mml_put_u64be(lenbe, plen);
    size_t ntail = mml_stream_tail(tail, mml_get_u16(f + 44) & 3u, f + 48, f + 64);
    const mml_part parts[] = {
        {head, sizeof head}, {topic->bytes, topic->len}, {ptype->bytes, ptype->len},
        {lenbe, sizeof lenbe}, {f + MML_FRAME_HEADER_SIZE, plen}, {tail, ntail},
    };
    mml_entry_hash_parts(parts, 6, out);
}

/* Bits of the `done` array: what the fast path already did for a seq. */
enum { DONE_HASH = 1, DONE_KEYS = 2, DONE_TS = 4 };

/* check_frames(segment, records, lo, hi, number, names, state, loc_seg, loc_off, drift, done,
 *              embedded) -> (bytes, seq_mismatches, [(topic, ptype, first seq)], key sum, keys,
 *                            ts frames, ts low, ts high)
 *
 * Rows lo..hi-1 of a segment that passed walk_test (so every frame is inside the segment; it is
 * checked again here, cheaply): the frame checksum and that payload + keys fit the length
 * (else DAMAGED), the embedded seq (else SEQ_MISMATCH, the embedded seq in embedded[row - lo]),
 * and for the good frames (_accept) OK, the (topic, payload_type) pairs they use, and the record
 * against its frame (drift bits). names: None, or the framed name of every symbol id (id 0 is
 * no symbol): the good frames whose ids both resolve get their canonical entry hash checked
 * (HASH_MISMATCH) and done[row] |= DONE_HASH, so check_entry_hashes skips them. The frames
 * left OK also have their postings summed (frame_digest's sum and count, returned) and
 * done[row] |= DONE_KEYS, unless their key block is one frame_digest would defer; and their
 * smallest and largest ts_init are returned (_observed_ts), done[row] |= DONE_TS. */
static PyObject *py_check_frames(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *seg_obj, *rec_obj, *names_obj, *state_obj, *lseg_obj, *loff_obj, *drift_obj,
        *done_obj, *emb_obj;
    Py_ssize_t lo, hi;
    unsigned long number;
    if (!PyArg_ParseTuple(args, "OOnnkOOOOOOO", &seg_obj, &rec_obj, &lo, &hi, &number, &names_obj,
                          &state_obj, &lseg_obj, &loff_obj, &drift_obj, &done_obj, &emb_obj))
        return NULL;
    if (names_obj != Py_None && !PyList_Check(names_obj)) {
        PyErr_SetString(PyExc_TypeError, "names must be a list of bytes or None");
        return NULL;
    }
    bufs b = {.n = 0};
    const unsigned char *seg, *rec, *state_c, *lseg_c, *loff_c, *drift_c, *done_c, *emb_c;
    size_t size, rlen, nstate, nlseg, nloff, ndrift, ndone, nemb;
    if (take(&b, seg_obj, 0, &seg, &size) < 0 || take(&b, rec_obj, 0, &rec, &rlen) < 0 ||
        take(&b, state_obj, 1, &state_c, &nstate) < 0 ||
        take(&b, lseg_obj, 1, &lseg_c, &nlseg) < 0 || take(&b, loff_obj, 1, &loff_c, &nloff) < 0 ||
        take(&b, drift_obj, 1, &drift_c, &ndrift) < 0 ||
        take(&b, done_obj, 1, &done_c, &ndone) < 0 ||
        take(&b, emb_obj, 1, &emb_c, &nemb) < 0) {
        release(&b);
        return NULL;
    }
    uint8_t *state = (uint8_t *)state_c, *done = (uint8_t *)done_c;
    uint32_t *loc_seg = (uint32_t *)lseg_c, *loc_off = (uint32_t *)loff_c;
    uint16_t *drift = (uint16_t *)drift_c;
    uint64_t *embedded = (uint64_t *)emb_c;
    size_t rows = rlen / MML_INDEX_RECORD_SIZE;
    if (lo < 0 || hi < lo || (size_t)hi > rows || (size_t)hi > nstate || (size_t)hi > nlseg / 4 ||
        (size_t)hi > nloff / 4 || (size_t)hi > ndrift / 2 || (size_t)hi > ndone ||
        (size_t)(hi - lo) > nemb / 8) {
        release(&b);
        PyErr_SetString(PyExc_ValueError, "rows out of range of the arrays");
        return NULL;
    }
    mml_names name_set;
    if (mml_names_get(&name_set, names_obj) < 0) {
        mml_names_release(&name_set);
        release(&b);
        return NULL;
    }
    const mml_name_ref *names = name_set.refs;
    Py_ssize_t nnames = name_set.n;
    pair_set ps = {0};
    uint64_t total = 0, mismatches = 0, key_sum = 0, key_count = 0;
    uint64_t ts_count = 0, ts_lo = UINT64_MAX, ts_hi = 0;
    int bounds = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = lo; i < hi; i++) {
        const unsigned char *r = rec + (size_t)i * MML_INDEX_RECORD_SIZE;
        uint64_t off = ld32(r + 36);
        if ((off & 7) || off < MML_SEGMENT_HEADER_SIZE || off + MIN_FRAME > size) {
            bounds = 1; /* walk_test ruled this out: the caller broke the contract */
            break;
        }
        const unsigned char *f = seg + off;
        uint64_t len = ld32(f);
        if (len < MIN_FRAME || (len & 7) || off + len > size) {
            bounds = 1;
            break;
        }
        loc_seg[i] = (uint32_t)number;
        loc_off[i] = (uint32_t)off;
        total += len;
        uint64_t plen = ld32(f + 40), klen = mml_get_u16(f + 46);
        if (ld64(f + len - 8) != mml_xxh3_64(f, (size_t)len - 8, 0) ||
            plen + klen + MIN_FRAME > len) {
            state[i] = ST_DAMAGED;
            continue;
        }
        uint64_t seq = ld64(f + 8);
        if (seq != (uint64_t)i + 1) {
            state[i] = ST_SEQ_MISMATCH;
            embedded[i - lo] = seq;
            mismatches++;
            continue;
        }
        /* _accept: a good frame, and its record against it. */
        state[i] = ST_OK;
        uint32_t topic = ld32(f + 32), ptype = ld32(f + 36);
        pairs_add(&ps, (uint64_t)topic << 32 | ptype, seq);
        uint16_t d = 0;
        if (ld32(r + 32) != number || ld32(r + 36) != off) d |= D_POSITION;
        if (ld32(r + 40) != len) d |= D_LENGTH;
        if (ld64(r + 8) != ld64(f + 16)) d |= D_TS_INIT;
        if (ld64(r + 16) != ld64(f + 24)) d |= D_TS_PUBLISH;
        if (ld32(r + 44) != topic) d |= D_TOPIC;
        if (ld32(r + 48) != ptype) d |= D_PTYPE;
        if (ld32(r + 52) != mml_get_u16(f + 44)) d |= D_FLAGS;
        if (memcmp(r + 56, f + 48, 16) != 0) d |= D_CORRELATION;
        if (memcmp(r + 72, f + 64, 16) != 0) d |= D_CAUSATION;
        drift[i] |= d;
        /* check_entry_hashes: only where both names resolve (else a symbol finding says why) */
        if (topic > 0 && ptype > 0 && (Py_ssize_t)topic < nnames && (Py_ssize_t)ptype < nnames) {
            unsigned char digest[16];
            entry_hash(f, &names[topic], &names[ptype], (uint32_t)plen, digest);
            done[i] |= DONE_HASH;
            if (memcmp(digest, f + 80, 16) != 0) {
                state[i] = ST_HASH_MISMATCH;
                continue;
            }
        }
        /* its state is final (OK): _observed_ts and frame_digest, while it is in cache */
        uint64_t ts = ld64(f + 16);
        if (ts < ts_lo) ts_lo = ts;
        if (ts > ts_hi) ts_hi = ts;
        ts_count++;
        done[i] |= DONE_TS;
        uint64_t hs[FRAME_KEYS_MAX];
        int m = frame_key_hashes(seg, size, off, hs);
        if (m >= 0) {
            for (int j = 0; j < m; j++) key_sum += fingerprint(hs[j], seq);
            key_count += (uint64_t)m;
            done[i] |= DONE_KEYS;
        }
    }
    Py_END_ALLOW_THREADS
    mml_names_release(&name_set);
    release(&b);
    PyObject *out = NULL, *pairs = NULL;
    if (bounds) {
        PyErr_SetString(PyExc_ValueError, "a record points outside the segment");
        goto done;
    }
    if (ps.failed) {
        PyErr_NoMemory();
        goto done;
    }
    pairs = PyList_New(0);
    if (pairs == NULL) goto done;
    for (size_t j = 0; j < ps.cap; j++) {
        if (!ps.keys[j]) continue;
        uint64_t key = ps.keys[j] - 1;
        PyObject *t = Py_BuildValue("(kkK)", (unsigned long)(key >> 32),
                                    (unsigned long)(key & 0xFFFFFFFFu),
                                    (unsigned long long)ps.first[j]);
        if (t == NULL || PyList_Append(pairs, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    out = Py_BuildValue("(KKOKKKKK)", (unsigned long long)total, (unsigned long long)mismatches,
                        pairs, (unsigned long long)key_sum, (unsigned long long)key_count,
                        (unsigned long long)ts_count, (unsigned long long)ts_lo,
                        (unsigned long long)ts_hi);
done:
    Py_XDECREF(pairs);
    free(ps.keys);
    free(ps.first);
    return out;
}

/* --- the records on their own (_FrameScan._index_only_checks) -------------------------------- */

/* record_checks(records, lo, hi, checksummed, carry, drift) -> carry
 * Rows lo..hi-1: the seq field is the row's seq, ts_max is the running max of ts_init (carry:
 * the max before row lo), and the version-2 checksum (version 1: the reserved bytes are 0). */
static PyObject *py_record_checks(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *rec_obj, *drift_obj;
    Py_ssize_t lo, hi;
    int checksummed;
    unsigned long long carry;
    if (!PyArg_ParseTuple(args, "OnnpKO", &rec_obj, &lo, &hi, &checksummed, &carry, &drift_obj))
        return NULL;
    bufs b = {.n = 0};
    const unsigned char *rec, *drift_c;
    size_t rlen, ndrift;
    if (take(&b, rec_obj, 0, &rec, &rlen) < 0 || take(&b, drift_obj, 1, &drift_c, &ndrift) < 0) {
        release(&b);
        return NULL;
    }
    if (lo < 0 || hi < lo || (size_t)hi > rlen / MML_INDEX_RECORD_SIZE || (size_t)hi > ndrift / 2) {
        release(&b);
        PyErr_SetString(PyExc_ValueError, "rows out of range of the arrays");
        return NULL;
    }
    uint16_t *drift = (uint16_t *)drift_c;
    uint64_t running = carry;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = lo; i < hi; i++) {
        const unsigned char *r = rec + (size_t)i * MML_INDEX_RECORD_SIZE;
        uint64_t ts = ld64(r + 8);
        if (ts > running) running = ts;
        uint16_t d = 0;
        if (ld64(r) != (uint64_t)i + 1) d |= D_SEQ;
        if (ld64(r + 24) != running) d |= D_TS_MAX;
        if (checksummed) {
            if (ld64(r + 88) != mml_xxh3_64(r, MML_INDEX_RECORD_CHECKED, 0)) d |= D_CHECKSUM;
        } else if (ld64(r + 88) != 0) {
            d |= D_RESERVED;
        }
        drift[i] |= d;
    }
    Py_END_ALLOW_THREADS
    release(&b);
    return PyLong_FromUnsignedLongLong(running);
}

/* frame_digest(segment, idx, offs) -> (sum, count, [positions deferred to the Python])
 * idx: int64 seq - 1 of good frames; offs: their int64 offsets. sum and count: _digest's
 * (sum mod 2^64 of the fingerprints of the distinct (key hash, seq) pairs, how many). */
static PyObject *py_frame_digest(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *seg_obj, *idx_obj, *offs_obj;
    if (!PyArg_ParseTuple(args, "OOO", &seg_obj, &idx_obj, &offs_obj)) return NULL;
    bufs b = {.n = 0};
    const unsigned char *seg, *idx_c, *offs_c;
    size_t size, nidx, noffs;
    if (take(&b, seg_obj, 0, &seg, &size) < 0 || take(&b, idx_obj, 0, &idx_c, &nidx) < 0 ||
        take(&b, offs_obj, 0, &offs_c, &noffs) < 0) {
        release(&b);
        return NULL;
    }
    size_t n = nidx / 8 < noffs / 8 ? nidx / 8 : noffs / 8;
    const int64_t *idx = (const int64_t *)idx_c, *offs = (const int64_t *)offs_c;
    uint64_t sum = 0, count = 0;
    size_t *deferred = malloc((n ? n : 1) * sizeof(size_t)), ndeferred = 0;
    if (deferred == NULL) {
        release(&b);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    uint64_t hs[FRAME_KEYS_MAX];
    for (size_t k = 0; k < n; k++) {
        int m = offs[k] < 0 ? -1 : frame_key_hashes(seg, size, (uint64_t)offs[k], hs);
        if (m < 0) {
            deferred[ndeferred++] = k;
            continue;
        }
        for (int j = 0; j < m; j++) sum += fingerprint(hs[j], (uint64_t)idx[k] + 1);
        count += (uint64_t)m;
    }
    Py_END_ALLOW_THREADS
    release(&b);
    PyObject *list = PyList_New((Py_ssize_t)ndeferred);
    for (size_t k = 0; list != NULL && k < ndeferred; k++) {
        PyObject *v = PyLong_FromSize_t(deferred[k]);
        if (v == NULL) Py_CLEAR(list);
        else PyList_SET_ITEM(list, (Py_ssize_t)k, v);
    }
    free(deferred);
    if (list == NULL) return NULL;
    return Py_BuildValue("(KKN)", (unsigned long long)sum, (unsigned long long)count, list);
}

/* --- keys.hix as the Python's _HixAudit reads it ---------------------------------------------- */

#define HIX_HEADER 128u
#define HIX_RECORD 40u
#define HIX_BLOCK 16u

typedef struct {
    const unsigned char *mm;
    uint64_t size, slots, hs, hwm;
} hix_view;

/* The postings HashIndex.lookup_all(kind, key, max_seq=hwm) returns for the key of slot `p`
 * (slot hash sh, the key's own hash h: they differ only where h is 0, stored as 1), into the
 * digest; 0, or -1 where lookup_all would raise or would find another record (an
 * earlier slot holding the same key): the Python then calls lookup_all itself. Mirrors _find,
 * _block and _postings check for check. */
static int lookup_digest(const hix_view *v, uint64_t p, uint64_t sh, uint64_t h, unsigned kind,
                         const unsigned char *key, uint64_t klen, uint64_t *sum, uint64_t *count) {
    const unsigned char *mm = v->mm;
    uint64_t size = v->size, hs = v->hs, mask = v->slots - 1, i = sh & mask;
    uint64_t first = 0, n = 0;
    for (uint64_t probes = 0;; probes++) {
        if (probes == v->slots) return -1; /* table overfull: raises */
        const unsigned char *slot = mm + HIX_HEADER + (i << 4);
        uint64_t here = ld64(slot);
        if (here == 0) return -1; /* p is reachable: an empty slot first cannot happen */
        if (here == sh) {
            uint64_t roff = ld64(slot + 8);
            if (roff > size || hs > size - roff || size - hs - roff < HIX_RECORD + klen) return -1;
            const unsigned char *r = mm + hs + roff;
            if (r[32] == kind && mml_get_u16(r + 34) == klen &&
                memcmp(r + HIX_RECORD, key, klen) == 0) {
                if (i != p) return -1; /* lookup_all reads another record */
                first = ld64(r);
                n = ld64(r + 16);
                if (n > (size - hs) >> 3) return -1; /* "posting count" past the file */
                break;
            }
        }
        i = (i + 1) & mask;
    }
    if (n == 0) return 0;
    /* _postings: blocks from `first`, `n` seqs in all, ascending (equal neighbours allowed). */
    uint64_t remaining = n, boff = first, prev = 0, hops = n / 4096 + 12, emitted = 0;
    uint64_t local_sum = 0, local_count = 0;
    int have_prev = 0;
    while (remaining) {
        if (n > 64 && hops-- == 0) return -1;
        if (boff == 0 || boff > size || hs > size - boff || size - hs - boff < HIX_BLOCK) return -1;
        const unsigned char *blk = mm + hs + boff;
        uint64_t next = ld64(blk), cap = ld32(blk + 8), used = ld32(blk + 12);
        if (cap < 4 || cap > 4096 || used > cap) return -1;
        if (size - hs - boff - HIX_BLOCK < cap << 3) return -1;
        if (used == 0) return -1;
        uint64_t takes = used < remaining ? used : remaining;
        for (uint64_t k = 0; k < takes; k++) {
            uint64_t s = ld64(blk + HIX_BLOCK + 8 * k);
            if (have_prev && s < prev) return -1; /* "not ascending" */
            /* sorted(set(seqs <= hwm)): ascending, so equal seqs are neighbours */
            if (s <= v->hwm && (!emitted || s != prev)) {
                local_sum += fingerprint(h, s);
                local_count++;
                emitted = 1;
            }
            prev = s;
            have_prev = 1;
        }
        remaining -= takes;
        boff = next;
    }
    *sum += local_sum;
    *count += local_count;
    return 0;
}

/* hix_prev(hix, a) -> int | None: the last empty slot before slot a, wrapped (negative: the
 * table's last empty slot minus the slot count) when none is before a; None when the table has
 * no empty slot. What _HixAudit.chunks carries from chunk to chunk, so that chunks can be
 * audited independently (on two threads). */
static PyObject *py_hix_prev(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *hix_obj;
    unsigned long long a;
    if (!PyArg_ParseTuple(args, "OK", &hix_obj, &a)) return NULL;
    bufs bb = {.n = 0};
    const unsigned char *mm;
    size_t size;
    if (take(&bb, hix_obj, 0, &mm, &size) < 0) return NULL;
    uint64_t slots = size >= 32 ? ld64(mm + 16) : 0;
    if (slots < 8 || slots > ((uint64_t)1 << 36) || HIX_HEADER + 16 * slots > size || a > slots) {
        release(&bb);
        PyErr_SetString(PyExc_ValueError, "keys.hix geometry or slot out of bounds");
        return NULL;
    }
    long long found = 0;
    int have = 0;
    Py_BEGIN_ALLOW_THREADS
    for (uint64_t q = a; q-- > 0 && !have;)
        if (ld64(mm + HIX_HEADER + (q << 4)) == 0) found = (long long)q, have = 1;
    for (uint64_t q = slots; q-- > a && !have;)
        if (ld64(mm + HIX_HEADER + (q << 4)) == 0) found = (long long)q - (long long)slots, have = 1;
    Py_END_ALLOW_THREADS
    release(&bb);
    if (!have) Py_RETURN_NONE;
    return PyLong_FromLongLong(found);
}

/* The slot hashes of a chunk's valid keys (never 0), sized for every slot of the chunk. */
typedef struct {
    uint64_t *keys;
    uint64_t cap; /* a power of two, at least twice the slots of the chunk */
} hash_set;

/* Adds h; 1 when it was there already. */
static int seen_add(hash_set *set, uint64_t h) {
    uint64_t j = (h * 0x9E3779B97F4A7C15ull >> 17) & (set->cap - 1);
    while (set->keys[j]) {
        if (set->keys[j] == h) return 1;
        j = (j + 1) & (set->cap - 1);
    }
    set->keys[j] = h;
    return 0;
}

/* hix_digest(hix, a, b, prev, hwm) -> None | (sum, count, [drift record offsets],
 *                                            [deferred slots, first group], [second group])
 *
 * Slots a..b-1 as _HixAudit.chunks (one chunk), _records, single_block_postings and
 * _index_postings read them, reduced to the _digest of their postings. prev: the last empty
 * slot before a (wrapped: negative), or None when the table has no empty slot. The drift list
 * holds the records that store another hash than their slot; the deferred slots are the keys
 * whose postings the Python reads with lookup_all (the first group before the second, as the
 * Python orders them). None: two keys of the chunk share a hash, so their postings could
 * coincide and the chunk needs the Python's exact de-duplication. */
static PyObject *py_hix_digest(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *hix_obj, *prev_obj;
    unsigned long long a, b_end, hwm;
    if (!PyArg_ParseTuple(args, "OKKOK", &hix_obj, &a, &b_end, &prev_obj, &hwm)) return NULL;
    int have_prev = prev_obj != Py_None;
    long long prev = 0;
    if (have_prev) {
        prev = PyLong_AsLongLong(prev_obj);
        if (prev == -1 && PyErr_Occurred()) return NULL;
    }
    bufs bb = {.n = 0};
    const unsigned char *mm;
    size_t size;
    if (take(&bb, hix_obj, 0, &mm, &size) < 0) return NULL;
    uint64_t slots = size >= 32 ? ld64(mm + 16) : 0, hs = size >= 32 ? ld64(mm + 24) : 0;
    /* HashIndex.open checked these; checked again, as everything else read from the file */
    if (slots < 8 || (slots & (slots - 1)) || slots > ((uint64_t)1 << 36) ||
        hs != HIX_HEADER + 16 * slots || hs > size || a > b_end || b_end > slots) {
        release(&bb);
        PyErr_SetString(PyExc_ValueError, "keys.hix geometry or slot range out of bounds");
        return NULL;
    }
    hix_view v = {mm, (uint64_t)size, slots, hs, hwm};
    size_t span = (size_t)(b_end - a);
    uint64_t *drift = malloc((span ? span : 1) * 8), *def_a = malloc((span ? span : 1) * 8),
             *def_b = malloc((span ? span : 1) * 8);
    size_t ndrift = 0, na = 0, nb = 0;
    uint64_t sum = 0, count = 0;
    int dup = 0;
    hash_set seen = {NULL, 16};
    while (seen.cap < 2 * (uint64_t)span) seen.cap <<= 1;
    seen.keys = calloc((size_t)seen.cap, 8);
    if (drift == NULL || def_a == NULL || def_b == NULL || seen.keys == NULL) {
        free(seen.keys);
        free(drift);
        free(def_a);
        free(def_b);
        release(&bb);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    for (uint64_t p = a; p < b_end && !dup; p++) {
        if (p + PREFETCH_AHEAD < b_end) {
            uint64_t ahead = ld64(mm + HIX_HEADER + ((p + PREFETCH_AHEAD) << 4) + 8);
            if (ahead < size - hs) {
                PREFETCH(mm + hs + ahead);
                if (size - hs - ahead > 64) PREFETCH(mm + hs + ahead + 64); /* its first block */
            }
        }
        const unsigned char *slot = mm + HIX_HEADER + (p << 4);
        uint64_t sh = ld64(slot), roff = ld64(slot + 8);
        if (sh == 0) {
            prev = (long long)p;
            have_prev = 1;
            continue;
        }
        /* reachable: no empty slot between the key's home slot and p, in probe order */
        uint64_t home = sh & (slots - 1);
        int reachable =
            !have_prev || ((p - home) & (slots - 1)) < (uint64_t)((long long)p - prev);
        /* _records: the record lies inside the file and looks like one */
        int inside = roff < size && (roff & 7) == 0 && roff <= size - hs &&
                     size - hs - roff >= HIX_RECORD;
        if (!inside) continue;
        const unsigned char *r = mm + hs + roff;
        unsigned kind = r[32];
        uint64_t klen = mml_get_u16(r + 34);
        if (klen > MML_MAX_KEY_BYTES || size - hs - roff - HIX_RECORD < klen || kind == 0) continue;
        uint64_t h = key_hash(kind, r + HIX_RECORD, klen);
        if (ld64(r + 24) != sh) drift[ndrift++] = hs + roff;
        if ((h ? h : 1) != sh || !reachable) continue; /* a lookup never finds this record */
        /* two keys of the chunk with one hash: the Python's de-duplication decides */
        if (seen_add(&seen, sh)) {
            dup = 1;
            break;
        }
        uint64_t first = ld64(r), last = ld64(r + 8), n = ld64(r + 16);
        if (n == 0) continue;
        /* single_block_postings: a lone full-length block, read in place */
        int one = first == last && first < size && (first & 7) == 0 && first <= size - hs &&
                  size - hs - first >= HIX_BLOCK;
        uint64_t cap = 0;
        const unsigned char *blk = NULL;
        if (one) {
            blk = mm + hs + first;
            cap = ld32(blk + 8);
            one = ld64(blk) == 0 && cap >= 4 && cap <= 4096 && ld32(blk + 12) == n && n <= cap &&
                  size - hs - first - HIX_BLOCK >= cap * 8;
        }
        if (one) {
            int ascending = 1;
            for (uint64_t k = 1; k < n && ascending; k++)
                ascending = ld64(blk + HIX_BLOCK + 8 * k) > ld64(blk + HIX_BLOCK + 8 * (k - 1));
            if (ascending) {
                for (uint64_t k = 0; k < n; k++) {
                    uint64_t s = ld64(blk + HIX_BLOCK + 8 * k);
                    if (s <= hwm) {
                        sum += fingerprint(h, s);
                        count++;
                    }
                }
                continue;
            }
            if (lookup_digest(&v, p, sh, h, kind, r + HIX_RECORD, klen, &sum, &count) < 0)
                def_b[nb++] = p;
            continue;
        }
        if (lookup_digest(&v, p, sh, h, kind, r + HIX_RECORD, klen, &sum, &count) < 0)
            def_a[na++] = p;
    }
    Py_END_ALLOW_THREADS
    release(&bb);
    PyObject *out = NULL, *ld = NULL, *la = NULL, *lb = NULL;
    if (!dup) {
        ld = PyList_New((Py_ssize_t)ndrift);
        la = PyList_New((Py_ssize_t)na);
        lb = PyList_New((Py_ssize_t)nb);
        int ok = ld != NULL && la != NULL && lb != NULL;
        for (size_t k = 0; ok && k < ndrift; k++) {
            PyObject *x = PyLong_FromUnsignedLongLong(drift[k]);
            ok = x != NULL;
            if (ok) PyList_SET_ITEM(ld, (Py_ssize_t)k, x);
        }
        for (size_t k = 0; ok && k < na; k++) {
            PyObject *x = PyLong_FromUnsignedLongLong(def_a[k]);
            ok = x != NULL;
            if (ok) PyList_SET_ITEM(la, (Py_ssize_t)k, x);
        }
        for (size_t k = 0; ok && k < nb; k++) {
            PyObject *x = PyLong_FromUnsignedLongLong(def_b[k]);
            ok = x != NULL;
            if (ok) PyList_SET_ITEM(lb, (Py_ssize_t)k, x);
        }
        if (ok)
            out = Py_BuildValue("(KKOOO)", (unsigned long long)sum, (unsigned long long)count, ld,
                                la, lb);
    }
    Py_XDECREF(ld);
    Py_XDECREF(la);
    Py_XDECREF(lb);
    free(drift);
    free(def_a);
    free(def_b);
    free(seen.keys);
    if (dup) Py_RETURN_NONE;
    return out;
}

PyMethodDef mml_verify_methods[] = {
    {"populate", py_populate, METH_O, "populate(buffer) -> bool: MADV_POPULATE_READ, GIL released"},
    {"walk_test", py_walk_test, METH_VARARGS,
     "walk_test(segment, records, first, n, is_last, sealed) -> None | (end, is_eos)"},
    {"check_frames", py_check_frames, METH_VARARGS,
     "check_frames(segment, records, lo, hi, number, names, state, loc_seg, loc_off, drift, "
     "done, embedded) -> (bytes, seq_mismatches, pairs, key_sum, key_count, ts_count, ts_lo, "
     "ts_hi)"},
    {"record_checks", py_record_checks, METH_VARARGS,
     "record_checks(records, lo, hi, checksummed, carry, drift) -> carry"},
    {"frame_digest", py_frame_digest, METH_VARARGS,
     "frame_digest(segment, idx, offs) -> (sum, count, deferred)"},
    {"hix_prev", py_hix_prev, METH_VARARGS, "hix_prev(hix, a) -> the last empty slot before a"},
    {"hix_digest", py_hix_digest, METH_VARARGS,
     "hix_digest(hix, a, b, prev, hwm) -> None | (sum, count, drift, deferred, deferred)"},
    {NULL, NULL, 0, NULL},
};
