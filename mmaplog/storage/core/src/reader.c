/*
 * reader.c - the read side: seq-index records and frames checked in bulk, GIL released.
 *
 * Python twins (the reference, and what reports an error): mmaplog/storage/record_check.py
 * (a record on its own: checksum, seq, ts_max) and mmaplog/storage/verified_read.py (a record
 * and its frame, one seq at a time, in the order below). These loops only say *where* the
 * first failure is and which check failed; the Python side then re-checks that seq with the
 * reference, which raises the typed error, so both cores fail with the same error at the same
 * seq by construction.
 *
 * Checks, per seq, in this order (the codes are returned):
 *   record:  v2 checksum of bytes 0..88, seq field == seq, ts_max >= ts_init,
 *            topic and payload_type ids are known symbols
 *   frame:   its segment exists, the offset is aligned and inside the mapping, the commit word
 *            (magic, length >= 104, multiple of 8, inside the mapping), the frame checksum over
 *            every byte, the frame's seq, payload + keys fit the length, the record agrees with
 *            the frame (length, times, ids, flags, both UUIDs), the canonical entry hash.
 *
 * Every offset and length read from a file is checked against the size of the buffer it
 * indexes before it is used: a damaged file gives a code, never an out-of-bounds read. The
 * buffers are the caller's mappings, whose sizes the caller checked against fstat (a file cut
 * short under a mapping would SIGBUS, mmaplog/storage/segments.py: check_not_truncated).
 */
#include "native.h"

#include "entry_stream.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    RC_OK = MML_FRAME_OK,
    RC_RECORD_BOUNDS = 1,
    RC_RECORD_CHECKSUM = 2,
    RC_RECORD_SEQ = 3,
    RC_RECORD_TS_MAX = 4,
    RC_RECORD_SYMBOL = MML_FRAME_SYMBOL,
    RC_SEGMENT_MISSING = 6,
    RC_FRAME_BOUNDS = 7,
    RC_COMMIT_WORD = 8,
    RC_FRAME_CHECKSUM = 9,
    RC_FRAME_SEQ = 10,
    RC_FRAME_LENGTHS = 11,
    RC_DISAGREE = 12,
    RC_ENTRY_HASH = 13,
};

#define RELEASE_GIL_RECORDS 64 /* below this many records the GIL switch costs more */


static inline uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}
static inline uint64_t get_u64(const unsigned char *p) {
    return (uint64_t)get_u32(p) | ((uint64_t)get_u32(p + 4) << 32);
}

/* --- one record on its own (record_check.py: first_bad_record) ---------------------------- */

/* Record fields (layout.py INDEX_DTYPE). */
#define R_SEQ 0
#define R_TS_INIT 8
#define R_TS_PUBLISH 16
#define R_TS_MAX 24
#define R_SEGMENT 32
#define R_OFFSET 36
#define R_LENGTH 40
#define R_TOPIC 44
#define R_PTYPE 48
#define R_FLAGS 52
#define R_IDS 56 /* correlation_id then causation_id, 32 bytes, as in the frame */
#define R_CHECK 88

/* The record of `seq` in an index mapping, or NULL when the mapping does not hold it. */
static const unsigned char *record_at(const unsigned char *index, size_t index_len,
                                      uint64_t seq) {
    if (seq == 0) return NULL;
    uint64_t at = (uint64_t)MML_INDEX_HEADER_SIZE + (seq - 1) * (uint64_t)MML_INDEX_RECORD_SIZE;
    if ((seq - 1) > (UINT64_MAX - MML_INDEX_HEADER_SIZE) / MML_INDEX_RECORD_SIZE ||
        at + MML_INDEX_RECORD_SIZE > index_len)
        return NULL;
    return index + at;
}

static int check_record(const unsigned char *r, uint64_t seq, int checksummed) {
    if (checksummed && get_u64(r + R_CHECK) != mml_xxh3_64(r, MML_INDEX_RECORD_CHECKED, 0))
        return RC_RECORD_CHECKSUM;
    if (get_u64(r + R_SEQ) != seq) return RC_RECORD_SEQ;
    /* ts_max is the running max of ts_init: never below the record's own ts_init. */
    if (get_u64(r + R_TS_MAX) < get_u64(r + R_TS_INIT)) return RC_RECORD_TS_MAX;
    return RC_OK;
}

int mml_check_record_at(const unsigned char *index, size_t index_len, uint64_t seq,
                        int checksummed) {
    const unsigned char *r = record_at(index, index_len, seq);
    return r == NULL ? RC_RECORD_BOUNDS : check_record(r, seq, checksummed);
}

/* Prefetch the records the next `depth` steps of a lower-bound search of [lo, hi) that is
 * now comparing with mid may compare with. */
static void prefetch_steps(const unsigned char *index, size_t index_len, uint64_t lo,
                           uint64_t mid, uint64_t hi, int depth) {
    if (depth == 0) return;
    if (lo < mid) { /* ts_max(mid) >= ts: the search goes on in [lo, mid) */
        uint64_t m = lo + (mid - lo) / 2;
        mml_prefetch_record(index, index_len, m + 1);
        prefetch_steps(index, index_len, lo, m, mid, depth - 1);
    }
    if (mid + 1 < hi) { /* ts_max(mid) < ts: in [mid + 1, hi) */
        uint64_t m = mid + 1 + (hi - mid - 1) / 2;
        mml_prefetch_record(index, index_len, m + 1);
        prefetch_steps(index, index_len, mid + 1, m, hi, depth - 1);
    }
}

uint64_t mml_seek_ts_max(const unsigned char *index, size_t index_len, uint64_t count,
                         uint64_t ts, int checksummed, uint64_t *bad_seq, int *code) {
    uint64_t lo = 0, hi = count;
    *bad_seq = 0;
    *code = RC_OK;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        const unsigned char *r = record_at(index, index_len, mid + 1);
        /* Start loading the records the next two steps may compare with (2 + 4) while this
           one is checked: on a large run each is a cache and TLB miss, which a binary search
           otherwise takes one after another. */
        prefetch_steps(index, index_len, lo, mid, hi, 2);
        *code = r == NULL ? RC_RECORD_BOUNDS : check_record(r, mid + 1, checksummed);
        if (*code != RC_OK) {
            *bad_seq = mid + 1;
            break;
        }
        if (get_u64(r + R_TS_MAX) < ts)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A Python buffer argument, read-only. */
static int get_buffer(PyObject *obj, Py_buffer *view) {
    return PyObject_GetBuffer(obj, view, PyBUF_SIMPLE);
}

static PyObject *failure(Py_ssize_t index, int code) {
    return Py_BuildValue("(ni)", index, code);
}

/* check_records(index, first_seq, n, checksummed) -> None | (i, code)
 * Records first_seq..first_seq+n-1 of the index mapping, each on its own. */
static PyObject *py_check_records(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *index_obj;
    unsigned long long first;
    Py_ssize_t n;
    int checksummed;
    if (!PyArg_ParseTuple(args, "OKnp", &index_obj, &first, &n, &checksummed)) return NULL;
    Py_buffer index;
    if (get_buffer(index_obj, &index) < 0) return NULL;
    Py_ssize_t bad = -1;
    int code = RC_OK;
    const unsigned char *base = index.buf;
    size_t len = (size_t)index.len;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *r = record_at(base, len, first + (uint64_t)i);
        code = r == NULL ? RC_RECORD_BOUNDS : check_record(r, first + (uint64_t)i, checksummed);
        if (code != RC_OK) {
            bad = i;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&index);
    if (bad < 0) Py_RETURN_NONE;
    return failure(bad, code);
}

/* check_seqs(index, seqs, checksummed) -> None | (i, code): the records of scattered seqs
 * (lookup_all's postings), `seqs` a buffer of u64. */
static PyObject *py_check_seqs(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *index_obj, *seqs_obj;
    int checksummed;
    if (!PyArg_ParseTuple(args, "OOp", &index_obj, &seqs_obj, &checksummed)) return NULL;
    Py_buffer index, seqs;
    if (get_buffer(index_obj, &index) < 0) return NULL;
    if (get_buffer(seqs_obj, &seqs) < 0) {
        PyBuffer_Release(&index);
        return NULL;
    }
    Py_ssize_t n = seqs.len / 8, bad = -1;
    int code = RC_OK;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t seq = get_u64((const unsigned char *)seqs.buf + 8 * i);
        const unsigned char *r = record_at(index.buf, (size_t)index.len, seq);
        code = r == NULL ? RC_RECORD_BOUNDS : check_record(r, seq, checksummed);
        if (code != RC_OK) {
            bad = i;
            break;
        }
    }
    PyBuffer_Release(&seqs);
    PyBuffer_Release(&index);
    if (bad < 0) Py_RETURN_NONE;
    return failure(bad, code);
}

/* seek_time(index, count, ts, checksummed) -> (pos, bad_seq, code)
 * Reader.seek_time: the lower bound of `ts` over the records' ts_max (sorted by construction),
 * pos in 0..count. Every record the search compares with is checked first: a damaged ts_max
 * would steer the search, so it must not be trusted unchecked. bad_seq is 0 when all were
 * fine. */
static PyObject *py_seek_time(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *index_obj;
    unsigned long long count, ts;
    int checksummed;
    if (!PyArg_ParseTuple(args, "OKKp", &index_obj, &count, &ts, &checksummed)) return NULL;
    Py_buffer index;
    if (get_buffer(index_obj, &index) < 0) return NULL;
    uint64_t bad;
    int code;
    uint64_t lo = mml_seek_ts_max(index.buf, (size_t)index.len, count, ts, checksummed, &bad,
                                  &code);
    PyBuffer_Release(&index);
    return Py_BuildValue("(KKi)", (unsigned long long)lo, (unsigned long long)bad, code);
}

/* --- records and their frames (verified_read.py) ------------------------------------------- */

static Py_ssize_t find_segment(const mml_frames *fr, uint64_t number, Py_ssize_t hint) {
    if (hint >= 0 && hint < fr->nsegs && fr->segs[hint].number == number) return hint;
    Py_ssize_t lo = 0, hi = fr->nsegs; /* segs are sorted by number */
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (fr->segs[mid].number < number)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < fr->nsegs && fr->segs[lo].number == number ? lo : -1;
}

/* The canonical entry hash of a checked frame (entry_hash.py: hash_with_framing). */
static void frame_entry_hash(const unsigned char *f, const mml_name_ref *topic,
                             const mml_name_ref *ptype, uint32_t plen, unsigned char out[16]) {
    unsigned char head[MML_STREAM_HEAD], lenbe[8], tail[MML_STREAM_TAIL_MAX];
    mml_stream_head(head, get_u64(f + 8), get_u64(f + 16), get_u64(f + 24));
    mml_put_u64be(lenbe, plen);
    size_t ntail = mml_stream_tail(tail, mml_get_u16(f + 44), f + 48, f + 64);
    const mml_part parts[] = {
        {head, sizeof head}, {topic->bytes, topic->len}, {ptype->bytes, ptype->len},
        {lenbe, sizeof lenbe}, {f + MML_FRAME_HEADER_SIZE, plen}, {tail, ntail},
    };
    mml_entry_hash_parts(parts, 6, out);
}

int mml_check_frame(const mml_frames *fr, uint64_t seq, int entry_hash, Py_ssize_t *seg_hint,
                    const unsigned char **frame) {
    const unsigned char *r = record_at(fr->index, fr->index_len, seq);
    if (r == NULL) return RC_RECORD_BOUNDS;
    int code = check_record(r, seq, fr->checksummed);
    if (code != RC_OK) return code;
    uint32_t topic = get_u32(r + R_TOPIC), ptype = get_u32(r + R_PTYPE);
    if (topic == 0 || ptype == 0 || topic >= (uint64_t)fr->nnames ||
        ptype >= (uint64_t)fr->nnames)
        return RC_RECORD_SYMBOL;
    Py_ssize_t s = find_segment(fr, get_u32(r + R_SEGMENT), *seg_hint);
    if (s < 0 || fr->segs[s].buf == NULL) return RC_SEGMENT_MISSING;
    *seg_hint = s;
    const mml_seg_map *seg = &fr->segs[s];
    uint64_t off = get_u32(r + R_OFFSET);
    if ((off & 7) || off < MML_SEGMENT_HEADER_SIZE ||
        off + MML_FRAME_HEADER_SIZE + 8 > (uint64_t)seg->len)
        return RC_FRAME_BOUNDS;
    const unsigned char *f = seg->buf + off;
    uint32_t length = get_u32(f), magic = get_u32(f + 4);
    if (magic != MML_FRAME_MAGIC || length < MML_FRAME_HEADER_SIZE + 8 || (length & 7) ||
        off + length > (uint64_t)seg->len)
        return RC_COMMIT_WORD;
    if (get_u64(f + length - 8) != mml_xxh3_64(f, length - 8, 0)) return RC_FRAME_CHECKSUM;
    if (get_u64(f + 8) != seq) return RC_FRAME_SEQ;
    uint32_t plen = get_u32(f + 40);
    uint32_t klen = mml_get_u16(f + 46);
    if ((uint64_t)MML_FRAME_HEADER_SIZE + plen + klen + 8 > length) return RC_FRAME_LENGTHS;
    /* The record must say what the frame says: a record damaged into another valid record
     * (another topic id, say) would otherwise steer filters without anyone noticing. */
    if (get_u32(r + R_LENGTH) != length || get_u64(r + R_TS_INIT) != get_u64(f + 16) ||
        get_u64(r + R_TS_PUBLISH) != get_u64(f + 24) || topic != get_u32(f + 32) ||
        ptype != get_u32(f + 36) || get_u32(r + R_FLAGS) != mml_get_u16(f + 44) ||
        memcmp(r + R_IDS, f + 48, 32) != 0)
        return RC_DISAGREE;
    if (entry_hash) {
        unsigned char digest[16];
        frame_entry_hash(f, &fr->names[topic], &fr->names[ptype], plen, digest);
        if (memcmp(digest, f + 80, 16) != 0) return RC_ENTRY_HASH;
    }
    *frame = f;
    return RC_OK;
}

int mml_names_get(mml_names *names, PyObject *seq) {
    memset(names, 0, sizeof *names);
    if (seq == Py_None) return 0;
    names->tuple = PySequence_Tuple(seq);
    if (names->tuple == NULL) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(names->tuple);
    names->refs = PyMem_Calloc((size_t)n + 1, sizeof(mml_name_ref));
    if (names->refs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *name = PyTuple_GET_ITEM(names->tuple, k);
        if (!PyBytes_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be bytes");
            return -1;
        }
        names->refs[k].bytes = (const unsigned char *)PyBytes_AS_STRING(name);
        names->refs[k].len = (size_t)PyBytes_GET_SIZE(name);
    }
    names->n = n;
    return 0;
}

void mml_names_release(mml_names *names) {
    PyMem_Free(names->refs);
    Py_XDECREF(names->tuple);
    memset(names, 0, sizeof *names);
}

void mml_frames_release(mml_frames *fr) {
    for (Py_ssize_t k = 0; k < fr->got_segs; k++)
        if (fr->seg_store[k].buf != NULL) PyBuffer_Release(&fr->segbufs[k]);
    if (fr->have_index) PyBuffer_Release(&fr->index_buf);
    PyMem_Free(fr->segbufs);
    PyMem_Free(fr->seg_store);
    mml_names_release(&fr->name_set);
    memset(fr, 0, sizeof *fr);
}

int mml_frames_get(mml_frames *fr, PyObject *index_obj, int checksummed, PyObject *segs_obj,
                   PyObject *names_obj) {
    memset(fr, 0, sizeof *fr);
    if (!PyList_Check(segs_obj)) {
        PyErr_SetString(PyExc_TypeError, "segments must be a list");
        return -1;
    }
    if (mml_names_get(&fr->name_set, names_obj) < 0) return -1;
    Py_ssize_t nsegs = PyList_GET_SIZE(segs_obj);
    fr->segbufs = PyMem_Calloc((size_t)nsegs + 1, sizeof(Py_buffer));
    fr->seg_store = PyMem_Calloc((size_t)nsegs + 1, sizeof(mml_seg_map));
    if (fr->segbufs == NULL || fr->seg_store == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (get_buffer(index_obj, &fr->index_buf) < 0) return -1;
    fr->have_index = 1;
    for (Py_ssize_t k = 0; k < nsegs; k++) {
        PyObject *item = PyList_GET_ITEM(segs_obj, k);
        unsigned long long number;
        PyObject *buf;
        if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "KO", &number, &buf)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "segments must be (number, buffer) tuples");
            return -1;
        }
        if (k > 0 && number <= fr->seg_store[k - 1].number) {
            PyErr_SetString(PyExc_ValueError, "segments must be sorted by number");
            return -1;
        }
        fr->seg_store[k].number = number;
        if (buf != Py_None) {
            if (get_buffer(buf, &fr->segbufs[k]) < 0) return -1;
            fr->seg_store[k].buf = fr->segbufs[k].buf;
            fr->seg_store[k].len = (size_t)fr->segbufs[k].len;
        }
        fr->got_segs = k + 1;
    }
    fr->index = fr->index_buf.buf;
    fr->index_len = (size_t)fr->index_buf.len;
    fr->checksummed = checksummed;
    fr->segs = fr->seg_store;
    fr->nsegs = nsegs;
    fr->names = fr->name_set.refs;
    fr->nnames = fr->name_set.n;
    return 0;
}

/* verify_chunk(index, first_seq, n, checksummed, segments, names, entry_hashes,
 *              payload_at, payload_len, segment_of) -> None | (i, code)
 *
 * segments: [(number, buffer or None)] sorted by number, covering every segment the records
 * name (None: it does not exist); names: [bytes] the framed name of each symbol id (index 0
 * unused); payload_at / payload_len / segment_of: writable buffers of n int64, filled for the
 * seqs that passed (segment_of is the position in `segments`). */
static PyObject *py_verify_chunk(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *index_obj, *segs_obj, *names_obj, *at_obj, *len_obj, *segof_obj;
    unsigned long long first;
    Py_ssize_t n;
    int checksummed, entry_hashes;
    if (!PyArg_ParseTuple(args, "OKnpOOpOOO", &index_obj, &first, &n, &checksummed, &segs_obj,
                          &names_obj, &entry_hashes, &at_obj, &len_obj, &segof_obj))
        return NULL;
    PyObject *result = NULL;
    mml_frames fr;
    Py_buffer at, plen, segof;
    int have_at = 0, have_len = 0, have_segof = 0;
    if (mml_frames_get(&fr, index_obj, checksummed, segs_obj, names_obj) < 0) goto done;
    if (PyObject_GetBuffer(at_obj, &at, PyBUF_WRITABLE) < 0) goto done;
    have_at = 1;
    if (PyObject_GetBuffer(len_obj, &plen, PyBUF_WRITABLE) < 0) goto done;
    have_len = 1;
    if (PyObject_GetBuffer(segof_obj, &segof, PyBUF_WRITABLE) < 0) goto done;
    have_segof = 1;
    if (n < 0 || at.len < n * 8 || plen.len < n * 8 || segof.len < n * 8) {
        PyErr_SetString(PyExc_ValueError, "output buffers hold fewer than n int64");
        goto done;
    }
    int64_t *payload_at = at.buf, *payload_len = plen.buf, *segment_of = segof.buf;
    Py_ssize_t bad = -1;
    int code = RC_OK;
    Py_ssize_t hint = 0;
    PyThreadState *save = n >= RELEASE_GIL_RECORDS ? PyEval_SaveThread() : NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *f;
        code = mml_check_frame(&fr, first + (uint64_t)i, entry_hashes, &hint, &f);
        if (code != RC_OK) {
            bad = i;
            break;
        }
        payload_at[i] = (int64_t)(f + MML_FRAME_HEADER_SIZE - fr.segs[hint].buf);
        payload_len[i] = get_u32(f + 40);
        segment_of[i] = hint;
    }
    if (save != NULL) PyEval_RestoreThread(save);
    if (bad < 0) {
        Py_INCREF(Py_None);
        result = Py_None;
    } else {
        result = failure(bad, code);
    }
done:
    if (have_segof) PyBuffer_Release(&segof);
    if (have_len) PyBuffer_Release(&plen);
    if (have_at) PyBuffer_Release(&at);
    mml_frames_release(&fr);
    return result;
}

/* --- entries from a checked chunk (verified_read.py: chunk_entries) ------------------------ */

/* A uuid.UUID from 16 big-endian bytes, as index_keys.fast_uuid builds it: the immutable
 * class's own __setattr__ is bypassed (the bytes are always a valid UUID). */
static PyObject *str_int_attr, *str_is_safe_attr;

static PyObject *make_uuid(PyTypeObject *uuid_type, PyObject *safe, const unsigned char *raw) {
    PyObject *u = uuid_type->tp_alloc(uuid_type, 0);
    if (u == NULL) return NULL;
    PyObject *value = _PyLong_FromByteArray(raw, 16, 0, 0);
    if (value == NULL || PyObject_GenericSetAttr(u, str_int_attr, value) < 0 ||
        PyObject_GenericSetAttr(u, str_is_safe_attr, safe) < 0) {
        Py_XDECREF(value);
        Py_DECREF(u);
        return NULL;
    }
    Py_DECREF(value);
    /* Its fields (an int, a SafeUUID member) can never lead back to it: no cycle, so the
     * cyclic GC need not track it (as CPython untracks tuples of atomics). Scanning a run
     * creates millions of these; tracked, the collector's passes cost more than the scan. */
    PyObject_GC_UnTrack(u);
    return u;
}

/* The ids of one chunk repeat: an order's messages share its correlation id, and an id that
 * caused one entry often causes the next. A small table of the UUIDs built last, and the last
 * Headers built, let a repeated id or pair reuse its object. UUID and Headers are immutable,
 * so entries sharing one cannot tell (the scan of a demo run builds 40 % fewer objects). */
#define UUID_CACHE_SLOTS 32 /* a power of two */

typedef struct {
    unsigned char raw[16];
    PyObject *uuid; /* NULL: empty */
} uuid_slot;

typedef struct {
    uuid_slot uuids[UUID_CACHE_SLOTS];
    uint32_t flags; /* the id flags of `headers` */
    unsigned char ids[32];
    PyObject *headers; /* NULL: none yet */
} headers_cache;

static void headers_cache_clear(headers_cache *c) {
    for (int k = 0; k < UUID_CACHE_SLOTS; k++) Py_CLEAR(c->uuids[k].uuid);
    Py_CLEAR(c->headers);
}

static PyObject *cached_uuid(headers_cache *c, PyTypeObject *uuid_type, PyObject *safe,
                             const unsigned char *raw) {
    uint64_t hi = get_u64(raw), lo = get_u64(raw + 8);
    uint64_t mix = (hi ^ lo) * 0x9E3779B97F4A7C15ull;
    uuid_slot *slot = &c->uuids[mix >> (64 - 5)];
    if (slot->uuid != NULL && memcmp(slot->raw, raw, 16) == 0) return Py_NewRef(slot->uuid);
    PyObject *u = make_uuid(uuid_type, safe, raw);
    if (u == NULL) return NULL;
    Py_XSETREF(slot->uuid, Py_NewRef(u));
    memcpy(slot->raw, raw, 16);
    return u;
}

/* The Headers of a record whose flags name ids: the last one when its ids are the same. */
static PyObject *cached_headers(headers_cache *c, uint32_t flags, const unsigned char *ids,
                                PyObject *headers_type, PyTypeObject *uuid_type, PyObject *safe) {
    flags &= MML_FLAG_CORRELATION | MML_FLAG_CAUSATION;
    unsigned char used[32] = {0};
    if (flags & MML_FLAG_CORRELATION) memcpy(used, ids, 16);
    if (flags & MML_FLAG_CAUSATION) memcpy(used + 16, ids + 16, 16);
    if (c->headers != NULL && c->flags == flags && memcmp(c->ids, used, 32) == 0)
        return Py_NewRef(c->headers);
    PyObject *args[2] = {Py_None, Py_None};
    PyObject *headers = NULL;
    if (flags & MML_FLAG_CORRELATION) {
        args[0] = cached_uuid(c, uuid_type, safe, ids);
        if (args[0] == NULL) goto done;
    }
    if (flags & MML_FLAG_CAUSATION) {
        args[1] = cached_uuid(c, uuid_type, safe, ids + 16);
        if (args[1] == NULL) goto done;
    }
    headers = PyObject_Vectorcall(headers_type, args, 2, NULL);
    if (headers == NULL) goto done;
    /* Frozen, holding only untracked UUIDs: it can never be part of a cycle. */
    if (PyObject_GC_IsTracked(headers)) PyObject_GC_UnTrack(headers);
    Py_XSETREF(c->headers, Py_NewRef(headers));
    c->flags = flags;
    memcpy(c->ids, used, 32);
done:
    if (args[0] != Py_None) Py_XDECREF(args[0]);
    if (args[1] != Py_None) Py_XDECREF(args[1]);
    return headers;
}

/* build_entries(records, n, views, segment_of, payload_at, payload_len, names, copy,
 *               entry_type, headers_type, empty_headers, uuid_type, safe_unknown) -> [Entry]
 * records: the chunk's n seq-index records (96 bytes each, contiguous).
 * Only for rows verify_chunk passed: the records agree with their frames, every offset was
 * bounds-checked there (and is checked again here against the views' sizes). */
static PyObject *py_build_entries(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *index_obj, *views_obj, *segof_obj, *at_obj, *len_obj, *names, *entry_type,
        *headers_type, *empty_headers, *uuid_type, *safe;
    Py_ssize_t n;
    int copy;
    if (!PyArg_ParseTuple(args, "OnOOOOO!pOOOO!O", &index_obj, &n, &views_obj,
                          &segof_obj, &at_obj, &len_obj, &PyTuple_Type, &names, &copy,
                          &entry_type, &headers_type, &empty_headers, &PyType_Type, &uuid_type,
                          &safe))
        return NULL;
    if (!PyList_Check(views_obj)) {
        PyErr_SetString(PyExc_TypeError, "views must be a list");
        return NULL;
    }
    if (str_int_attr == NULL) {
        str_int_attr = PyUnicode_InternFromString("int");
        str_is_safe_attr = PyUnicode_InternFromString("is_safe");
        if (str_int_attr == NULL || str_is_safe_attr == NULL) return NULL;
    }
    Py_ssize_t nviews = PyList_GET_SIZE(views_obj), nnames = PyTuple_GET_SIZE(names);
    PyObject *out = NULL;
    Py_buffer index = {0}, segof = {0}, at = {0}, plen = {0};
    Py_buffer *vb = PyMem_Calloc((size_t)nviews + 1, sizeof(Py_buffer));
    Py_ssize_t got_views = 0;
    int ok = 0;
    headers_cache cache = {0};
    if (vb == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (get_buffer(index_obj, &index) < 0) goto done;
    if (get_buffer(segof_obj, &segof) < 0) goto done;
    if (get_buffer(at_obj, &at) < 0) goto done;
    if (get_buffer(len_obj, &plen) < 0) goto done;
    for (; got_views < nviews; got_views++)
        if (get_buffer(PyList_GET_ITEM(views_obj, got_views), &vb[got_views]) < 0) goto done;
    if (n < 0 || segof.len < n * 8 || at.len < n * 8 || plen.len < n * 8) {
        PyErr_SetString(PyExc_ValueError, "columns hold fewer than n rows");
        goto done;
    }
    out = PyList_New(n);
    if (out == NULL) goto done;
    const int64_t *segs = segof.buf, *ats = at.buf, *lens = plen.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *r = (size_t)(i + 1) * MML_INDEX_RECORD_SIZE <= (size_t)index.len
                                     ? (const unsigned char *)index.buf + i * MML_INDEX_RECORD_SIZE
                                     : NULL;
        int64_t s = segs[i], a = ats[i], l = lens[i];
        uint32_t topic = r ? get_u32(r + R_TOPIC) : 0, ptype = r ? get_u32(r + R_PTYPE) : 0;
        if (r == NULL || s < 0 || s >= nviews || a < 16 || l < 0 ||
            (uint64_t)a + (uint64_t)l > (uint64_t)vb[s].len || topic == 0 || ptype == 0 ||
            topic >= (uint64_t)nnames || ptype >= (uint64_t)nnames) {
            PyErr_SetString(PyExc_ValueError, "row outside the checked chunk");
            goto done;
        }
        const unsigned char *base = vb[s].buf;
        PyObject *item[8] = {NULL};
        item[0] = PyLong_FromUnsignedLongLong(get_u64(r + R_SEQ));
        item[1] = PyLong_FromUnsignedLongLong(get_u64(r + R_TS_INIT));
        item[2] = PyLong_FromUnsignedLongLong(get_u64(r + R_TS_PUBLISH));
        item[3] = Py_NewRef(PyTuple_GET_ITEM(names, topic));
        item[4] = Py_NewRef(PyTuple_GET_ITEM(names, ptype));
        if (copy)
            item[5] = PyBytes_FromStringAndSize((const char *)base + a, l);
        else
            item[5] = PySequence_GetSlice(PyList_GET_ITEM(views_obj, s), a, a + l);
        uint32_t flags = get_u32(r + R_FLAGS);
        if (flags & (MML_FLAG_CORRELATION | MML_FLAG_CAUSATION))
            item[6] = cached_headers(&cache, flags, r + R_IDS, headers_type,
                                     (PyTypeObject *)uuid_type, safe);
        else
            item[6] = Py_NewRef(empty_headers);
        item[7] = PyBytes_FromStringAndSize((const char *)base + a - 16, 16); /* entry hash */
        PyObject *entry = NULL;
        int complete = 1;
        for (int k = 0; k < 8; k++) complete &= item[k] != NULL;
        if (complete) entry = PyObject_Vectorcall(entry_type, item, 8, NULL);
        /* Entry and Headers are frozen and hold only values created here (ints, strs, bytes,
         * a memoryview of the segment's mapping, untracked UUIDs): nothing reachable from
         * them can refer back, so they are left out of the cyclic GC too. */
        if (entry != NULL && PyObject_GC_IsTracked(entry)) PyObject_GC_UnTrack(entry);
        for (int k = 0; k < 8; k++) Py_XDECREF(item[k]);
        if (entry == NULL) goto done;
        PyList_SET_ITEM(out, i, entry);
    }
    ok = 1;
done:
    headers_cache_clear(&cache);
    for (Py_ssize_t k = 0; k < got_views; k++) PyBuffer_Release(&vb[k]);
    PyMem_Free(vb);
    if (plen.obj) PyBuffer_Release(&plen);
    if (at.obj) PyBuffer_Release(&at);
    if (segof.obj) PyBuffer_Release(&segof);
    if (index.obj) PyBuffer_Release(&index);
    if (!ok) Py_CLEAR(out);
    return out;
}

/* --- the two syscalls of every point read ------------------------------------------------- */

/* file_size(fd) -> st_size: os.fstat without building a stat_result (the truncation guard
 * before every point read, segments.py / seqindex.py check_not_truncated). */
static PyObject *py_file_size(PyObject *Py_UNUSED(module), PyObject *arg) {
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    if (fd < 0 || fd > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "bad file descriptor");
        return NULL;
    }
    struct stat st;
    if (fstat((int)fd, &st) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLongLong((long long)st.st_size);
}

/* pread_u64(fd, offset) -> the little-endian u64 there, or None when the file ends first
 * (the committed count, read on every high_watermark). */
static PyObject *py_pread_u64(PyObject *Py_UNUSED(module), PyObject *args) {
    int fd;
    long long offset;
    if (!PyArg_ParseTuple(args, "iL", &fd, &offset)) return NULL;
    unsigned char raw[8];
    ssize_t got = pread(fd, raw, 8, (off_t)offset);
    if (got < 0) return PyErr_SetFromErrno(PyExc_OSError);
    if (got < 8) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(get_u64(raw));
}

PyMethodDef mml_reader_methods[] = {
    {"file_size", py_file_size, METH_O, "file_size(fd) -> st_size"},
    {"pread_u64", py_pread_u64, METH_VARARGS, "pread_u64(fd, offset) -> int | None"},
    {"build_entries", py_build_entries, METH_VARARGS,
     "build_entries(records, n, views, segment_of, payload_at, payload_len, names, "
     "copy, entry_type, headers_type, empty_headers, uuid_type, safe_unknown) -> [Entry]"},
    {"check_records", py_check_records, METH_VARARGS,
     "check_records(index, first_seq, n, checksummed) -> None | (i, code)"},
    {"check_seqs", py_check_seqs, METH_VARARGS,
     "check_seqs(index, seqs_u64, checksummed) -> None | (i, code)"},
    {"seek_time", py_seek_time, METH_VARARGS,
     "seek_time(index, count, ts, checksummed) -> (pos, bad_seq, code)"},
    {"verify_chunk", py_verify_chunk, METH_VARARGS,
     "verify_chunk(index, first_seq, n, checksummed, segments, names, entry_hashes, "
     "payload_at, payload_len, segment_of) -> None | (i, code)"},
    {NULL, NULL, 0, NULL},
};
