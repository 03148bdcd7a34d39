/*
 * framewriter.c - the writer thread's batch: frames, seq-index records, hash-index postings.
 *
 * Python twin: Framer.append in mmaplog/storage/frames.py (framing, the write order) and
 * HashIndex.add in mmaplog/storage/hash_index.py (postings, via hix.c). The batch goes in three
 * calls, each with the GIL released, so that Python keeps every decision that is not per
 * entry (creating segments, growing files, committing, syncing):
 *
 *   frame(channel, n)  build the frames and index records of the n taken entries in memory;
 *                      stops early, having written nothing, when the batch needs a segment the
 *                      caller has not opened yet or meets a bad entry;
 *   write()            pwrite the frames (each segment's first commit word last), the
 *                      end-of-segment markers, then the index records;
 *   postings()         add the batch's postings to keys.hix; stops (resumable) when the file
 *                      must grow first.
 *
 * Every length that sizes a copy here was produced by Channel.submit from Python objects in
 * this process, not read from a file; the only file-derived offsets (inside keys.hix) are
 * bounds-checked by hix.c.
 */
#include "native.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_SEGS 256
#define SMALL_HASH_INPUT 4096 /* hash streams up to this size are hashed in one shot */

static const unsigned char ENTRY_HASH_DOMAIN[16] = "mmaplog/entry/v1";

typedef struct {
    int fd;
    uint64_t size;
    uint32_t number;
} seg_ref;

typedef struct {
    int seg;      /* index into segs */
    uint64_t start; /* segment offset of the chunk's first frame */
    size_t off;   /* offset of the chunk in buf */
    size_t len;
} chunk_ref;

typedef struct {
    PyObject_HEAD
    seg_ref segs[MAX_SEGS]; /* segs[0] is the segment being written */
    int nsegs;
    uint64_t pos;           /* write position in segs[0] */
    uint64_t limit;         /* largest frame a segment holds */
    int index_fd;
    int checksums;          /* index.idx version 2: records carry their xxh3-64 */
    uint64_t ts_max;
    /* keys.hix, mapped by the Python HashIndex; the buffer export pins the mapping */
    mml_hix hix;
    Py_buffer hix_view;
    int has_hix;
    /* the staged batch */
    mml_channel *channel;   /* strong reference while a batch is staged */
    uint64_t tail, n;       /* channel slots [tail, tail + n) */
    unsigned char *buf;
    size_t buf_cap, buf_len;
    chunk_ref chunks[MAX_SEGS];
    int nchunks;
    unsigned char *records;
    size_t records_cap;
    int staged_seg;         /* segs index the batch ends in */
    uint64_t staged_pos, staged_ts_max;
    uint64_t post_slot;     /* postings() resumes here: slot ... */
    uint32_t post_off;      /* ... and byte offset in its posting list */
    int staged;             /* 0 none, 1 framed, 2 written */
} mml_framewriter;

/* --- helpers ----------------------------------------------------------------------------- */

static int reserve(unsigned char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t cap2 = *cap ? *cap : 1 << 16;
    while (cap2 < need) cap2 <<= 1;
    unsigned char *grown = realloc(*buf, cap2);
    if (grown == NULL) return -1;
    *buf = grown;
    *cap = cap2;
    return 0;
}

/* pwrite all of it; returns 0 or an errno. */
static int pwrite_all(int fd, const unsigned char *data, size_t len, uint64_t offset) {
    while (len) {
        ssize_t n = pwrite(fd, data, len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return EIO;
        data += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

/* The canonical entry hash (mmaplog/storage/entry_hash.py: hash_with_framing). */
static void entry_hash(const mml_slot *s, const mml_pair *pair, unsigned char out[16]) {
    unsigned char head[16 + 24];
    memcpy(head, ENTRY_HASH_DOMAIN, 16);
    mml_put_u64be(head + 16, s->seq);
    mml_put_u64be(head + 24, s->ts_init);
    mml_put_u64be(head + 32, s->ts_publish);
    unsigned char plen[8];
    mml_put_u64be(plen, s->payload_len);
    unsigned char tail[34];
    size_t ntail = 0;
    if (s->flags & MML_FLAG_CORRELATION) {
        tail[ntail++] = 1;
        memcpy(tail + ntail, s->corr, 16);
        ntail += 16;
    } else {
        tail[ntail++] = 0;
    }
    if (s->flags & MML_FLAG_CAUSATION) {
        tail[ntail++] = 1;
        memcpy(tail + ntail, s->caus, 16);
        ntail += 16;
    } else {
        tail[ntail++] = 0;
    }
    size_t total = sizeof head + pair->names_len + sizeof plen + s->payload_len + ntail;
    mml_u128 h;
    if (total <= SMALL_HASH_INPUT) {
        unsigned char stream[SMALL_HASH_INPUT];
        unsigned char *p = stream;
        memcpy(p, head, sizeof head);
        p += sizeof head;
        memcpy(p, pair->names, pair->names_len);
        p += pair->names_len;
        memcpy(p, plen, sizeof plen);
        p += sizeof plen;
        mml_copy(p, s->data, s->payload_len);
        p += s->payload_len;
        memcpy(p, tail, ntail);
        h = mml_xxh3_128(stream, total, 0);
    } else {
        mml_xxh3_state st;
        mml_xxh3_128_reset(&st, 0);
        mml_xxh3_update(&st, head, sizeof head);
        mml_xxh3_update(&st, pair->names, pair->names_len);
        mml_xxh3_update(&st, plen, sizeof plen);
        mml_xxh3_update(&st, s->data, s->payload_len); /* > SMALL_HASH_INPUT: never empty */
        mml_xxh3_update(&st, tail, ntail);
        h = mml_xxh3_128_digest(&st);
    }
    mml_u128_canonical(h, out);
}

/* One seq-index record (mmaplog/storage/seqindex.py INDEX_RECORD), format v2: the last 8
 * bytes are the xxh3-64 of the first 88. */
static void index_record(unsigned char *r, const mml_slot *s, const mml_pair *pair,
                         uint64_t ts_max, uint32_t segment, uint64_t pos, uint32_t length,
                         int checksums) {
    mml_put_u64(r, s->seq);
    mml_put_u64(r + 8, s->ts_init);
    mml_put_u64(r + 16, s->ts_publish);
    mml_put_u64(r + 24, ts_max);
    mml_put_u32(r + 32, segment);
    mml_put_u32(r + 36, (uint32_t)pos);
    mml_put_u32(r + 40, length);
    mml_put_u32(r + 44, pair->topic_id);
    mml_put_u32(r + 48, pair->type_id);
    mml_put_u32(r + 52, s->flags);
    if (s->flags & MML_FLAG_CORRELATION) memcpy(r + 56, s->corr, 16);
    else memset(r + 56, 0, 16);
    if (s->flags & MML_FLAG_CAUSATION) memcpy(r + 72, s->caus, 16);
    else memset(r + 72, 0, 16);
    mml_put_u64(r + MML_INDEX_RECORD_CHECKED,
                checksums ? mml_xxh3_64(r, MML_INDEX_RECORD_CHECKED, 0) : 0);
}

/* --- frame --------------------------------------------------------------------------------- */

enum {
    FRAME_OK = 0,
    FRAME_NEED_SEGMENT = 1,
    FRAME_BAD_ENTRY = 2,
    FRAME_TOO_LARGE = 3,
    FRAME_OUT_OF_ORDER = 4
};

typedef struct {
    int status;
    uint64_t seq, length;
} frame_result;

static frame_result frame_batch(mml_framewriter *fw) {
    frame_result res = {FRAME_OK, 0, 0};
    mml_channel *ch = fw->channel;
    int seg = 0;
    uint64_t pos = fw->pos;
    uint64_t ts_max = fw->ts_max;
    fw->buf_len = 0;
    fw->nchunks = 1;
    fw->chunks[0] = (chunk_ref){0, pos, 0, 0};
    uint64_t first = mml_channel_slot(ch, fw->tail)->seq;
    for (uint64_t i = 0; i < fw->n; i++) {
        const mml_slot *s = mml_channel_slot(ch, fw->tail + i);
        if (s->seq != first + i) { /* seqs are assigned in submit order: cannot happen */
            res.status = FRAME_OUT_OF_ORDER;
            res.seq = s->seq;
            return res;
        }
        if (s->error != MML_SLOT_OK) {
            res.status = FRAME_BAD_ENTRY;
            res.seq = s->seq;
            return res;
        }
        const mml_pair *pair = mml_channel_pair(ch, s->pair);
        uint64_t body = MML_FRAME_HEADER_SIZE + (uint64_t)s->payload_len + s->keys_len;
        uint64_t pad = (8 - (body & 7)) & 7;
        uint64_t length = body + pad + 8;
        if (length > fw->limit) {
            res.status = FRAME_TOO_LARGE;
            res.seq = s->seq;
            res.length = length;
            return res;
        }
        if (pos + length + 8 > fw->segs[seg].size) {
            /* Roll over: this segment ends with an end-of-segment marker (written later). */
            if (seg + 1 >= fw->nsegs) {
                res.status = FRAME_NEED_SEGMENT;
                return res;
            }
            seg++;
            pos = MML_SEGMENT_HEADER_SIZE;
            fw->chunks[fw->nchunks++] = (chunk_ref){seg, pos, fw->buf_len, 0};
        }
        if (reserve(&fw->buf, &fw->buf_cap, fw->buf_len + length) < 0 ||
            reserve(&fw->records, &fw->records_cap, (i + 1) * MML_INDEX_RECORD_SIZE) < 0) {
            res.status = -1; /* out of memory */
            return res;
        }
        unsigned char *f = fw->buf + fw->buf_len;
        mml_put_u32(f, (uint32_t)length);
        mml_put_u32(f + 4, MML_FRAME_MAGIC);
        mml_put_u64(f + 8, s->seq);
        mml_put_u64(f + 16, s->ts_init);
        mml_put_u64(f + 24, s->ts_publish);
        mml_put_u32(f + 32, pair->topic_id);
        mml_put_u32(f + 36, pair->type_id);
        mml_put_u32(f + 40, s->payload_len);
        mml_put_u16(f + 44, s->flags);
        mml_put_u16(f + 46, (uint16_t)s->keys_len);
        if (s->flags & MML_FLAG_CORRELATION) memcpy(f + 48, s->corr, 16);
        else memset(f + 48, 0, 16);
        if (s->flags & MML_FLAG_CAUSATION) memcpy(f + 64, s->caus, 16);
        else memset(f + 64, 0, 16);
        entry_hash(s, pair, f + 80);
        mml_copy(f + MML_FRAME_HEADER_SIZE, s->data, (size_t)s->payload_len + s->keys_len);
        memset(f + body, 0, pad);
        mml_put_u64(f + length - 8, mml_xxh3_64(f, length - 8, 0));
        if (s->ts_init > ts_max) ts_max = s->ts_init;
        index_record(fw->records + i * MML_INDEX_RECORD_SIZE, s, pair, ts_max,
                     fw->segs[seg].number, pos, (uint32_t)length, fw->checksums);
        fw->buf_len += length;
        fw->chunks[fw->nchunks - 1].len += length;
        pos += length;
    }
    fw->staged_seg = seg;
    fw->staged_pos = pos;
    fw->staged_ts_max = ts_max;
    res.seq = first; /* framed: (0, first seq, last seq) */
    res.length = first + fw->n - 1;
    return res;
}

/* frame(channel, first, n) -> (status, seq, length): stage the batch in memory. */
static PyObject *fw_frame(mml_framewriter *fw, PyObject *args) {
    PyObject *channel;
    unsigned long long n;
    if (!PyArg_ParseTuple(args, "O!K", &mml_ChannelType, &channel, &n)) return NULL;
    mml_channel *ch = (mml_channel *)channel;
    if (n == 0 || mml_channel_taken(ch) - mml_channel_tail(ch) != n) {
        PyErr_SetString(PyExc_ValueError, "frame(): n must be the batch wait() handed over");
        return NULL;
    }
    if (fw->nsegs < 1 || fw->index_fd < 0) {
        PyErr_SetString(PyExc_RuntimeError, "FrameWriter has no segment or index");
        return NULL;
    }
    Py_INCREF(channel);
    Py_XSETREF(fw->channel, ch);
    fw->tail = mml_channel_tail(ch);
    fw->n = n;
    fw->staged = 0;
    frame_result res;
    Py_BEGIN_ALLOW_THREADS
    res = frame_batch(fw);
    Py_END_ALLOW_THREADS
    if (res.status < 0) return PyErr_NoMemory();
    if (res.status == FRAME_OK) {
        fw->staged = 1;
        fw->post_slot = 0;
        fw->post_off = 0;
    }
    return Py_BuildValue("iKK", res.status, (unsigned long long)res.seq,
                         (unsigned long long)res.length);
}

/* --- write --------------------------------------------------------------------------------- */

/* write() -> [segment numbers written]: the staged frames, end markers and index records. */
static PyObject *fw_write(mml_framewriter *fw, PyObject *Py_UNUSED(ignored)) {
    if (fw->staged != 1) {
        PyErr_SetString(PyExc_RuntimeError, "write() needs a framed batch");
        return NULL;
    }
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int c = 0; c < fw->nchunks && !err; c++) {
        const chunk_ref *k = &fw->chunks[c];
        if (k->len == 0) continue;
        /* Body first, the first frame's commit word last: a crash in between leaves a frame
         * the recovery scan rejects, never a half-written one it accepts. */
        const seg_ref *s = &fw->segs[k->seg];
        err = pwrite_all(s->fd, fw->buf + k->off + 8, k->len - 8, k->start + 8);
        if (!err) err = pwrite_all(s->fd, fw->buf + k->off, 8, k->start);
    }
    for (int c = 0; c + 1 < fw->nchunks && !err; c++) {
        /* A segment we rolled away from ends with an explicit end-of-segment marker. */
        const chunk_ref *k = &fw->chunks[c];
        unsigned char eos[8];
        mml_put_u32(eos, 0);
        mml_put_u32(eos + 4, MML_EOS_MAGIC);
        err = pwrite_all(fw->segs[k->seg].fd, eos, 8, k->start + k->len);
    }
    if (!err) {
        const mml_slot *first = mml_channel_slot(fw->channel, fw->tail);
        uint64_t offset = MML_INDEX_HEADER_SIZE + (first->seq - 1) * MML_INDEX_RECORD_SIZE;
        err = pwrite_all(fw->index_fd, fw->records, fw->n * MML_INDEX_RECORD_SIZE, offset);
    }
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *written = PyList_New(0);
    if (written == NULL) return NULL;
    for (int c = 0; c < fw->nchunks; c++) {
        if (fw->chunks[c].len == 0) continue;
        PyObject *number = PyLong_FromUnsignedLong(fw->segs[fw->chunks[c].seg].number);
        if (number == NULL || PyList_Append(written, number) < 0) {
            Py_XDECREF(number);
            Py_DECREF(written);
            return NULL;
        }
        Py_DECREF(number);
    }
    /* The batch's end is the new write position; the segments before it are done. */
    int keep = fw->staged_seg;
    memmove(fw->segs, fw->segs + keep, (size_t)(fw->nsegs - keep) * sizeof(seg_ref));
    fw->nsegs -= keep;
    fw->pos = fw->staged_pos;
    fw->ts_max = fw->staged_ts_max;
    fw->staged = 2;
    return written;
}

/* --- postings ------------------------------------------------------------------------------ */

/* postings() -> (status, a, b): add the batch's postings to keys.hix.
 * (0, 0, 0) done; (1, 0, 0) the table must double; (2, need_end, 0) the file must grow to
 * need_end; (-1, offset, 0) keys.hix is corrupt there; (-2, seq, 0) a seq does not ascend;
 * (-3, seq, 0) a bad kind or key. After 1 or 2 the caller grows keys.hix, calls set_hix()
 * and postings() again: it resumes where it stopped. */
static PyObject *fw_postings(mml_framewriter *fw, PyObject *Py_UNUSED(ignored)) {
    if (fw->staged != 2 || !fw->has_hix) {
        PyErr_SetString(PyExc_RuntimeError, "postings() needs a written batch and keys.hix");
        return NULL;
    }
    int rc = MML_HIX_OK;
    uint64_t need_end = 0, detail = 0, at_seq = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; fw->post_slot < fw->n; fw->post_slot++, fw->post_off = 0) {
        const mml_slot *s = mml_channel_slot(fw->channel, fw->tail + fw->post_slot);
        if (s->postings_len == 0) continue; /* (and s->data may be NULL) */
        const unsigned char *list = s->data + s->payload_len + s->keys_len;
        while (fw->post_off < s->postings_len) {
            const unsigned char *p = list + fw->post_off;
            unsigned kind = p[0];
            uint16_t klen = mml_get_u16(p + 1);
            rc = mml_hix_add(&fw->hix, kind, p + 3, klen, s->seq, &need_end, &detail);
            if (rc != MML_HIX_OK) {
                at_seq = s->seq;
                goto stop;
            }
            fw->post_off += 3u + klen;
        }
    }
stop:
    Py_END_ALLOW_THREADS
    switch (rc) {
    case MML_HIX_OK:
        return Py_BuildValue("iKK", 0, 0ULL, 0ULL);
    case MML_HIX_NEED_TABLE:
        return Py_BuildValue("iKK", 1, 0ULL, 0ULL);
    case MML_HIX_NEED_HEAP:
        return Py_BuildValue("iKK", 2, (unsigned long long)need_end, 0ULL);
    case MML_HIX_CORRUPT:
        return Py_BuildValue("iKK", -1, (unsigned long long)detail, 0ULL);
    case MML_HIX_NOT_ASCENDING:
        return Py_BuildValue("iKK", -2, (unsigned long long)at_seq, 0ULL);
    default:
        return Py_BuildValue("iKK", -3, (unsigned long long)at_seq, 0ULL);
    }
}

/* done(): the batch is committed; drop the reference to the channel. */
static PyObject *fw_done(mml_framewriter *fw, PyObject *Py_UNUSED(ignored)) {
    fw->staged = 0;
    Py_CLEAR(fw->channel);
    Py_RETURN_NONE;
}

/* --- configuration ------------------------------------------------------------------------- */

/* set_segments([(fd, size, number), ...], pos): segs[0] is written from pos on; the rest are
 * prepared ahead, in order. */
static PyObject *fw_set_segments(mml_framewriter *fw, PyObject *args) {
    PyObject *list;
    unsigned long long pos;
    if (!PyArg_ParseTuple(args, "O!K", &PyList_Type, &list, &pos)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n < 1 || n > MAX_SEGS) {
        PyErr_Format(PyExc_ValueError, "between 1 and %d segments", MAX_SEGS);
        return NULL;
    }
    seg_ref segs[MAX_SEGS];
    for (Py_ssize_t i = 0; i < n; i++) {
        int fd;
        unsigned long long size;
        unsigned int number;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "iKI", &fd, &size, &number)) return NULL;
        segs[i] = (seg_ref){fd, size, number};
    }
    if (pos < MML_SEGMENT_HEADER_SIZE || pos > segs[0].size) {
        PyErr_SetString(PyExc_ValueError, "write position outside the segment");
        return NULL;
    }
    memcpy(fw->segs, segs, (size_t)n * sizeof(seg_ref));
    fw->nsegs = (int)n;
    fw->pos = pos;
    Py_RETURN_NONE;
}

/* set_hix(mm, slots, heap_start, heap_used, key_count, max_added, dirty) */
static PyObject *fw_set_hix(mml_framewriter *fw, PyObject *args) {
    PyObject *mm;
    unsigned long long slots, hs, heap_used, key_count, max_added;
    int dirty;
    if (!PyArg_ParseTuple(args, "OKKKKKp", &mm, &slots, &hs, &heap_used, &key_count,
                          &max_added, &dirty))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(mm, &view, PyBUF_WRITABLE) < 0) return NULL;
    if ((uint64_t)view.len < hs || slots == 0 || (slots & (slots - 1))) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "keys.hix geometry does not fit its mapping");
        return NULL;
    }
    if (fw->has_hix) PyBuffer_Release(&fw->hix_view);
    fw->hix_view = view;
    fw->has_hix = 1;
    fw->hix.mm = view.buf;
    fw->hix.size = (uint64_t)view.len;
    fw->hix.slots = slots;
    fw->hix.hs = hs;
    fw->hix.heap_used = heap_used;
    fw->hix.key_count = key_count;
    fw->hix.max_added = max_added;
    fw->hix.dirty = dirty;
    Py_RETURN_NONE;
}

/* set_hix_state(heap_used, key_count, max_added, dirty): the Python HashIndex changed its
 * writer copies (commit clears the dirty flag): the next postings must see that, or they
 * would not mark the file dirty before writing past indexed_through. */
static PyObject *fw_set_hix_state(mml_framewriter *fw, PyObject *args) {
    unsigned long long heap_used, key_count, max_added;
    int dirty;
    if (!PyArg_ParseTuple(args, "KKKp", &heap_used, &key_count, &max_added, &dirty)) return NULL;
    fw->hix.heap_used = heap_used;
    fw->hix.key_count = key_count;
    fw->hix.max_added = max_added;
    fw->hix.dirty = dirty;
    Py_RETURN_NONE;
}

/* hix_state() -> (heap_used, key_count, max_added, dirty): the writer copies, for HashIndex. */
static PyObject *fw_hix_state(mml_framewriter *fw, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("KKKO", (unsigned long long)fw->hix.heap_used,
                         (unsigned long long)fw->hix.key_count,
                         (unsigned long long)fw->hix.max_added,
                         fw->hix.dirty ? Py_True : Py_False);
}

/* release_hix(): drop the buffer export, so the Python side can replace or grow the map. */
static PyObject *fw_release_hix(mml_framewriter *fw, PyObject *Py_UNUSED(ignored)) {
    if (fw->has_hix) {
        PyBuffer_Release(&fw->hix_view);
        fw->has_hix = 0;
    }
    Py_RETURN_NONE;
}

static PyObject *fw_position(mml_framewriter *fw, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("IKK", fw->segs[0].number, (unsigned long long)fw->pos,
                         (unsigned long long)fw->ts_max);
}

static int fw_init(mml_framewriter *fw, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"index_fd", "limit", "ts_max", "checksums", NULL};
    int index_fd, checksums;
    unsigned long long limit, ts_max;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iKKp", kwlist, &index_fd, &limit, &ts_max,
                                     &checksums))
        return -1;
    fw->index_fd = index_fd;
    fw->checksums = checksums;
    fw->limit = limit;
    fw->ts_max = ts_max;
    return 0;
}

static void fw_dealloc(mml_framewriter *fw) {
    if (fw->has_hix) PyBuffer_Release(&fw->hix_view);
    Py_XDECREF(fw->channel);
    free(fw->buf);
    free(fw->records);
    Py_TYPE(fw)->tp_free((PyObject *)fw);
}

static PyObject *fw_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    mml_framewriter *fw = (mml_framewriter *)PyType_GenericNew(type, args, kwds);
    if (fw != NULL) fw->index_fd = -1;
    return (PyObject *)fw;
}

static PyMethodDef fw_methods[] = {
    {"frame", (PyCFunction)fw_frame, METH_VARARGS,
     "frame(channel, n) -> (status, a, b): 0 framed seqs a..b, 1 needs a segment, 2 bad "
     "entry at seq a, 3 entry at seq a needs b bytes, 4 seq a out of order."},
    {"write", (PyCFunction)fw_write, METH_NOARGS, "write() -> [segment numbers written]"},
    {"postings", (PyCFunction)fw_postings, METH_NOARGS, "postings() -> (status, a, b)"},
    {"done", (PyCFunction)fw_done, METH_NOARGS, "done(): the batch is committed."},
    {"set_segments", (PyCFunction)fw_set_segments, METH_VARARGS,
     "set_segments([(fd, size, number), ...], pos)"},
    {"set_hix", (PyCFunction)fw_set_hix, METH_VARARGS,
     "set_hix(mm, slots, heap_start, heap_used, key_count, max_added, dirty)"},
    {"set_hix_state", (PyCFunction)fw_set_hix_state, METH_VARARGS,
     "set_hix_state(heap_used, key_count, max_added, dirty)"},
    {"hix_state", (PyCFunction)fw_hix_state, METH_NOARGS,
     "hix_state() -> (heap_used, key_count, max_added, dirty)"},
    {"release_hix", (PyCFunction)fw_release_hix, METH_NOARGS, "release_hix()"},
    {"position", (PyCFunction)fw_position, METH_NOARGS,
     "position() -> (segment number, write position, ts_max)"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject mml_FrameWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmaplog.storage.core._native.FrameWriter",
    .tp_basicsize = sizeof(mml_framewriter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Frames a batch of channel entries into a run's files (see framewriter.c).",
    .tp_new = fw_new,
    .tp_init = (initproc)fw_init,
    .tp_dealloc = (destructor)fw_dealloc,
    .tp_methods = fw_methods,
};
