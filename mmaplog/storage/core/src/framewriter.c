/*
 * framewriter.c - the writer thread's batch: frames, seq-index records, hash-index postings.
 *
 * Python twin: Framer.append in mmaplog/storage/frames.py (framing, the write order),
 * HashIndex.add / commit in mmaplog/storage/hash_index.py (postings, via hix.c) and
 * MmapBackend.sync (durability). run() is the writer thread's loop with the GIL released:
 *
 *   take a batch   from the Channel (waiting as mml_channel_wait does);
 *   frame          build its frames and index records in memory (nothing written yet, so a
 *                  batch that needs a segment the caller has not opened can stop here);
 *   write          pwrite the frames (each segment's first commit word last), the
 *                  end-of-segment markers, then the index records;
 *   post           add its postings to keys.hix (resumable when the file must grow first);
 *   commit         keys.hix's indexed_through, then the seq index's committed count;
 *   sync           fdatasync when the durability mode says so;
 *
 * and on to the next batch that already waits. It returns to Python only for what Python
 * owns: creating segments, growing index.idx and keys.hix, serving requests, raising errors.
 *
 * Every length that sizes a copy here was produced by Channel.submit from Python objects in
 * this process, not read from a file; the only file-derived offsets (inside keys.hix) are
 * bounds-checked by hix.c.
 */
#include "native.h"

#include "entry_stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define MAX_SEGS 256


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
    int staged;             /* STAGED_*: how far the batch in progress got */
    /* run(): the writer loop's own state */
    int keys_fd, symbols_fd;     /* for syncs */
    uint64_t index_capacity;     /* bytes index.idx holds (Python grows it) */
    uint64_t min_free;           /* free-space floor checked before each batch */
    double index_sync_interval;  /* seconds between syncs of index.idx and keys.hix */
    struct timespec last_index_sync;
    uint64_t hwm, durable;       /* committed and synced high-watermarks */
    uint64_t syncs;              /* sync_batch calls: group commit is measured by it */
    uint32_t written[MAX_SEGS];  /* segments written since the caller last asked */
    int nwritten;
    uint32_t unsynced[MAX_SEGS]; /* fds of segments written since the last sync */
    int nunsynced;
} mml_framewriter;

/* The stage of the batch in progress; run() resumes a batch where a call left it. */
enum { STAGED_NONE = 0, STAGED_FRAMED = 1, STAGED_WRITTEN = 2, STAGED_POSTED = 3, STAGED_TAKEN = 4 };

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
    unsigned char head[MML_STREAM_HEAD], plen[8], tail[MML_STREAM_TAIL_MAX];
    mml_stream_head(head, s->seq, s->ts_init, s->ts_publish);
    mml_put_u64be(plen, s->payload_len);
    size_t ntail = mml_stream_tail(tail, s->flags, s->corr, s->caus);
    const mml_part parts[] = {
        {head, sizeof head}, {pair->names, pair->names_len}, {plen, sizeof plen},
        {s->data, s->payload_len}, {tail, ntail},
    };
    mml_entry_hash_parts(parts, 5, out);
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
        if (s->has_digest) /* append_batch: the caller's hash, written as given (pure path) */
            memcpy(f + 80, s->digest, 16);
        else
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

/* --- write --------------------------------------------------------------------------------- */

/* Remember a segment number in a small set (a batch touches one or two). */
static void note_segment(uint32_t *set, int *n, uint32_t number) {
    for (int i = 0; i < *n; i++)
        if (set[i] == number) return;
    if (*n < MAX_SEGS) set[(*n)++] = number;
}

/* Write the framed batch: frames (each chunk's first commit word last), end-of-segment markers,
 * then the index records. Returns 0 or an errno. GIL not needed. */
static int write_batch(mml_framewriter *fw) {
    int err = 0;
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
    if (err) return err;
    for (int c = 0; c < fw->nchunks; c++) {
        if (fw->chunks[c].len == 0) continue;
        uint32_t number = fw->segs[fw->chunks[c].seg].number;
        note_segment(fw->written, &fw->nwritten, number);
        /* by fd: a segment rolled away from leaves segs[] but must still be synced */
        note_segment(fw->unsynced, &fw->nunsynced, (uint32_t)fw->segs[fw->chunks[c].seg].fd);
    }
    /* The batch's end is the new write position; the segments before it are done. */
    int keep = fw->staged_seg;
    memmove(fw->segs, fw->segs + keep, (size_t)(fw->nsegs - keep) * sizeof(seg_ref));
    fw->nsegs -= keep;
    fw->pos = fw->staged_pos;
    fw->ts_max = fw->staged_ts_max;
    fw->staged = STAGED_WRITTEN;
    return 0;
}

static PyObject *take_written(mml_framewriter *fw) {
    PyObject *written = PyList_New(fw->nwritten);
    if (written == NULL) return NULL;
    for (int i = 0; i < fw->nwritten; i++) {
        PyObject *number = PyLong_FromUnsignedLong(fw->written[i]);
        if (number == NULL) {
            Py_DECREF(written);
            return NULL;
        }
        PyList_SET_ITEM(written, i, number);
    }
    fw->nwritten = 0;
    return written;
}

/* --- postings ------------------------------------------------------------------------------ */

/* postings() -> (status, a, b): add the batch's postings to keys.hix.
 * (0, 0, 0) done; (1, 0, 0) the table must double; (2, need_end, 0) the file must grow to
 * need_end; (-1, offset, 0) keys.hix is corrupt there; (-2, seq, 0) a seq does not ascend;
 * (-3, seq, 0) a bad kind or key. After 1 or 2 the caller grows keys.hix, calls set_hix()
 * and postings() again: it resumes where it stopped. */
/* Add the written batch's postings to keys.hix, resuming where the last call stopped.
 * Returns an MML_HIX_* code; *at_seq is the entry it stopped at. GIL not needed. */
static int post_batch(mml_framewriter *fw, uint64_t *need_end, uint64_t *detail,
                      uint64_t *at_seq) {
    /* In groups: gather the next POST_GROUP postings, prefetch what their adds will touch
     * (mml_hix_prefetch_adds), then add them in order. */
    enum { POST_GROUP = 32 };
    mml_hix_pending group[POST_GROUP];
    while (fw->post_slot < fw->n) {
        int n = 0;
        uint64_t ps = fw->post_slot, po = fw->post_off;
        while (n < POST_GROUP && ps < fw->n) {
            const mml_slot *s = mml_channel_slot(fw->channel, fw->tail + ps);
            if (po >= s->postings_len) { /* this entry's postings are done (or it has none,
                                            and s->data may be NULL) */
                ps++;
                po = 0;
                continue;
            }
            const unsigned char *p = s->data + s->payload_len + s->keys_len + po;
            mml_hix_pending *a = &group[n++];
            a->kind = p[0];
            a->klen = mml_get_u16(p + 1);
            a->key = p + 3;
            a->seq = s->seq;
            a->post_slot = ps;
            a->post_off = po;
            po += 3u + a->klen;
        }
        mml_hix_prefetch_adds(&fw->hix, group, n);
        for (int j = 0; j < n; j++) {
            mml_hix_pending *a = &group[j];
            fw->post_slot = a->post_slot; /* a stop resumes at this posting */
            fw->post_off = a->post_off;
            int rc = mml_hix_add_hashed(&fw->hix, a->kind, a->key, a->klen, a->h, a->seq,
                                        need_end, detail);
            if (rc != MML_HIX_OK) {
                *at_seq = a->seq;
                return rc;
            }
        }
        fw->post_slot = ps;
        fw->post_off = po;
    }
    fw->staged = STAGED_POSTED;
    return MML_HIX_OK;
}

/* --- run: the writer loop, many batches per call ------------------------------------------- */

enum {
    RUN_IDLE = 0,         /* nothing more waits right now (after at least one batch) */
    RUN_WOKEN = 1,        /* a flush or control request: the caller serves its requests */
    RUN_TIMEOUT = 2,      /* nothing arrived within `timeout` */
    RUN_NEED_SEGMENT = 3, /* the batch rolls past the segments opened: create the next */
    RUN_PREPARE = 4,      /* the write position passed half the segment: prepare the next */
    RUN_NEED_INDEX = 5,   /* index.idx must hold a bytes (the caller grows it) */
    RUN_NEED_TABLE = 6,   /* keys.hix: double the slot table */
    RUN_NEED_HEAP = 7,    /* keys.hix: grow the file to a bytes */
    RUN_BAD_ENTRY = 8,    /* entry a was refused at submit: raise its recorded error */
    RUN_TOO_LARGE = 9,    /* entry a needs b bytes, more than a segment holds */
    RUN_OUT_OF_ORDER = 10,
    RUN_IO_ERROR = 11,    /* errno a */
    RUN_HIX_CORRUPT = 12, /* keys.hix damaged at offset a */
    RUN_HIX_REFUSED = 13, /* keys.hix refused a posting of seq a */
    RUN_DISK_FLOOR = 14,  /* a bytes free, below the floor: the pure path's DiskError */
};

static double seconds_since(const struct timespec *then) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - then->tv_sec) + (double)(now.tv_nsec - then->tv_nsec) / 1e9;
}

/* The keys.hix header words HashIndex.commit writes (hash_index_format.py: indexed_through
 * at 56, dirty at 64). */
static void hix_commit(mml_hix *ix, uint64_t through) {
    mml_put_u64(ix->mm + 56, through);
    if (ix->dirty && ix->max_added <= through) {
        mml_put_u64(ix->mm + 64, 0);
        ix->dirty = 0;
    }
}

/* Durability for one batch (the pure path's MmapBackend.sync): every segment written since the
 * last sync, the symbol table, and index.idx + keys.hix at most every index_sync_interval. */
static int sync_batch(mml_framewriter *fw) {
    fw->syncs++;
    for (int i = 0; i < fw->nunsynced; i++)
        if (fdatasync((int)fw->unsynced[i]) < 0) return errno;
    fw->nunsynced = 0;
    if (fw->symbols_fd >= 0 && fdatasync(fw->symbols_fd) < 0) return errno;
    if (seconds_since(&fw->last_index_sync) >= fw->index_sync_interval) {
        if (fdatasync(fw->index_fd) < 0) return errno;
        if (fw->keys_fd >= 0 && fdatasync(fw->keys_fd) < 0) return errno;
        clock_gettime(CLOCK_MONOTONIC, &fw->last_index_sync);
    }
    return 0;
}

typedef struct {
    int event;
    uint64_t a, b;
} run_result;

/* How run() syncs (the durability modes that sync): */
enum {
    SYNC_NONE = 0,  /* NONE and INTERVAL: the caller syncs */
    SYNC_EACH = 1,  /* ALWAYS: every batch (of one) before the next is taken */
    SYNC_GROUP = 2, /* BATCH: group commit - the batches that waited while the last sync ran
                     * are committed together, then one fdatasync covers them all */
};

static run_result run_loop(mml_framewriter *fw, uint64_t max_batch, double latency,
                           double timeout, int max_batches, int sync_mode) {
    run_result res = {RUN_IDLE, 0, 0};
    mml_channel *ch = fw->channel;
    int batches = 0, woken = 0;
    for (;;) {
        if (fw->staged == STAGED_NONE) {
            if (woken) return (run_result){RUN_WOKEN, 0, 0};
            if (batches >= max_batches) return res;
            if (fw->min_free) {
                struct statvfs st;
                if (fstatvfs(fw->index_fd, &st) == 0) {
                    uint64_t free_bytes = (uint64_t)st.f_bavail * st.f_frsize;
                    if (free_bytes < fw->min_free) return (run_result){RUN_DISK_FLOOR, free_bytes, 0};
                }
            }
            uint64_t n;
            if (batches == 0) {
                n = mml_channel_wait(ch, max_batch, latency, timeout, &woken);
            } else {
                /* Later batches of one call take only what already waits, so the caller
                 * publishes promptly when the load is light. */
                if (atomic_load_explicit(&ch->head, memory_order_acquire) ==
                    mml_channel_taken(ch))
                    return res;
                n = mml_channel_wait(ch, max_batch, latency, 0.0, &woken);
            }
            if (n == 0) return (run_result){woken ? RUN_WOKEN : RUN_TIMEOUT, 0, 0};
            fw->tail = mml_channel_tail(ch);
            fw->n = n;
            fw->staged = STAGED_TAKEN;
        }
        if (fw->staged == STAGED_TAKEN) {
            frame_result fr = frame_batch(fw);
            if (fr.status == FRAME_NEED_SEGMENT) return (run_result){RUN_NEED_SEGMENT, 0, 0};
            if (fr.status == FRAME_BAD_ENTRY) return (run_result){RUN_BAD_ENTRY, fr.seq, 0};
            if (fr.status == FRAME_TOO_LARGE)
                return (run_result){RUN_TOO_LARGE, fr.seq, fr.length};
            if (fr.status == FRAME_OUT_OF_ORDER) return (run_result){RUN_OUT_OF_ORDER, fr.seq, 0};
            if (fr.status < 0) return (run_result){RUN_IO_ERROR, ENOMEM, 0};
            fw->staged = STAGED_FRAMED;
            fw->post_slot = 0;
            fw->post_off = 0;
        }
        uint64_t last = mml_channel_slot(ch, fw->tail + fw->n - 1)->seq;
        if (fw->staged == STAGED_FRAMED) {
            uint64_t need = MML_INDEX_HEADER_SIZE + last * MML_INDEX_RECORD_SIZE;
            if (need > fw->index_capacity) return (run_result){RUN_NEED_INDEX, need, 0};
            int err = write_batch(fw);
            if (err) return (run_result){RUN_IO_ERROR, (uint64_t)err, 0};
        }
        if (fw->staged == STAGED_WRITTEN) {
            uint64_t need_end = 0, detail = 0, at_seq = 0;
            int rc = post_batch(fw, &need_end, &detail, &at_seq);
            if (rc == MML_HIX_NEED_TABLE) return (run_result){RUN_NEED_TABLE, 0, 0};
            if (rc == MML_HIX_NEED_HEAP) return (run_result){RUN_NEED_HEAP, need_end, 0};
            if (rc == MML_HIX_CORRUPT) return (run_result){RUN_HIX_CORRUPT, detail, 0};
            if (rc != MML_HIX_OK) return (run_result){RUN_HIX_REFUSED, at_seq, 0};
        }
        /* STAGED_POSTED: commit. keys.hix first, the seq index's count last: the count is
         * what makes the batch visible (the pure path's order). */
        hix_commit(&fw->hix, last);
        unsigned char count[8];
        mml_put_u64(count, last);
        int err = pwrite_all(fw->index_fd, count, 8, 16);
        if (err) return (run_result){RUN_IO_ERROR, (uint64_t)err, 0};
        mml_channel_release(ch);
        fw->staged = STAGED_NONE;
        fw->hwm = last;
        if (sync_mode == SYNC_EACH) {
            err = sync_batch(fw);
            if (err) return (run_result){RUN_IO_ERROR, (uint64_t)err, 0};
            fw->durable = last;
        }
        batches++;
        if (fw->pos > fw->segs[0].size / 2 && fw->nsegs < 2)
            return (run_result){RUN_PREPARE, 0, 0};
    }
}

/* run(channel, max_batch, latency, timeout, max_batches, sync_mode) -> (event, a, b):
 * the writer thread's loop, GIL released: take a batch (waiting as mml_channel_wait does), frame,
 * write, post and commit it, sync as sync_mode says (SYNC_*), and go on with whatever already waits, up
 * to max_batches batches. Returns when the caller is needed (see RUN_*); a batch in progress
 * is kept and resumed by the next call. */
static PyObject *fw_run(mml_framewriter *fw, PyObject *args) {
    PyObject *channel;
    Py_ssize_t max_batch;
    double latency, timeout;
    int max_batches, sync_mode;
    if (!PyArg_ParseTuple(args, "O!nddii", &mml_ChannelType, &channel, &max_batch, &latency,
                          &timeout, &max_batches, &sync_mode))
        return NULL;
    if (fw->nsegs < 1 || fw->index_fd < 0 || !fw->has_hix) {
        PyErr_SetString(PyExc_RuntimeError, "FrameWriter needs segments, index and keys.hix");
        return NULL;
    }
    if (fw->channel != (mml_channel *)channel) {
        if (fw->staged != STAGED_NONE) {
            PyErr_SetString(PyExc_RuntimeError, "a batch of another channel is in progress");
            return NULL;
        }
        Py_INCREF(channel);
        Py_XSETREF(fw->channel, (mml_channel *)channel);
    }
    if (sync_mode < SYNC_NONE || sync_mode > SYNC_GROUP) {
        PyErr_Format(PyExc_ValueError, "sync_mode must be 0, 1 or 2, not %d", sync_mode);
        return NULL;
    }
    run_result res;
    Py_BEGIN_ALLOW_THREADS
    res = run_loop(fw, max_batch < 1 ? 1 : (uint64_t)max_batch, latency, timeout,
                   max_batches < 1 ? 1 : max_batches, sync_mode);
    /* Group commit: one fdatasync for every batch committed since the last one, before
     * returning to Python, whatever the reason (an I/O error already failed the writer). */
    if (sync_mode == SYNC_GROUP && fw->durable < fw->hwm && res.event != RUN_IO_ERROR) {
        int err = sync_batch(fw);
        if (err == 0)
            fw->durable = fw->hwm;
        else if (res.event < RUN_BAD_ENTRY)
            res = (run_result){RUN_IO_ERROR, (uint64_t)err, 0};
    }
    Py_END_ALLOW_THREADS
    return Py_BuildValue("iKK", res.event, (unsigned long long)res.a, (unsigned long long)res.b);
}

/* progress() -> (hwm, durable, segment number, write position, ts_max, [segments written]) */
static PyObject *fw_progress(mml_framewriter *fw, PyObject *Py_UNUSED(ignored)) {
    PyObject *written = take_written(fw);
    if (written == NULL) return NULL;
    return Py_BuildValue("KKIKKN", (unsigned long long)fw->hwm, (unsigned long long)fw->durable,
                         fw->segs[0].number, (unsigned long long)fw->pos,
                         (unsigned long long)fw->ts_max, written);
}

/* syncs() -> how many times run() synced (each: the segments written, symbols, maybe indexes) */
static PyObject *fw_syncs(mml_framewriter *fw, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromUnsignedLongLong(fw->syncs);
}

/* configure(index_capacity, keys_fd, symbols_fd, min_free, index_sync_interval, hwm) */
static PyObject *fw_configure(mml_framewriter *fw, PyObject *args) {
    unsigned long long capacity, min_free, hwm;
    int keys_fd, symbols_fd;
    double interval;
    if (!PyArg_ParseTuple(args, "KiiKdK", &capacity, &keys_fd, &symbols_fd, &min_free, &interval,
                          &hwm))
        return NULL;
    fw->index_capacity = capacity;
    fw->keys_fd = keys_fd;
    fw->symbols_fd = symbols_fd;
    fw->min_free = min_free;
    fw->index_sync_interval = interval;
    fw->hwm = hwm;
    if (fw->durable < hwm && fw->durable == 0) fw->durable = hwm;
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
    if (fw != NULL) {
        fw->index_fd = fw->keys_fd = fw->symbols_fd = -1;
        fw->index_sync_interval = 1.0;
        clock_gettime(CLOCK_MONOTONIC, &fw->last_index_sync);
    }
    return (PyObject *)fw;
}

static PyMethodDef fw_methods[] = {
    {"run", (PyCFunction)fw_run, METH_VARARGS,
     "run(channel, max_batch, latency, timeout, max_batches, sync_mode) -> (event, a, b)"},
    {"syncs", (PyCFunction)fw_syncs, METH_NOARGS, "syncs() -> fdatasync rounds run() made"},
    {"progress", (PyCFunction)fw_progress, METH_NOARGS,
     "progress() -> (hwm, durable, segment, position, ts_max, [segments written])"},
    {"configure", (PyCFunction)fw_configure, METH_VARARGS,
     "configure(index_capacity, keys_fd, symbols_fd, min_free, index_sync_interval, hwm)"},
    {"set_segments", (PyCFunction)fw_set_segments, METH_VARARGS,
     "set_segments([(fd, size, number), ...], pos)"},
    {"set_hix", (PyCFunction)fw_set_hix, METH_VARARGS,
     "set_hix(mm, slots, heap_start, heap_used, key_count, max_added, dirty)"},
    {"hix_state", (PyCFunction)fw_hix_state, METH_NOARGS,
     "hix_state() -> (heap_used, key_count, max_added, dirty)"},
    {"release_hix", (PyCFunction)fw_release_hix, METH_NOARGS, "release_hix()"},
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
