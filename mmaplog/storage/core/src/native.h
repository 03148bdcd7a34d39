/*
 * native.h - shared structs of mmaplog's native core.
 *
 * The core has two halves that meet in one object, the Channel:
 *
 *   engine thread (GIL held)               writer thread (FrameWriter.run, GIL released)
 *   Channel.submit_fields: copy one entry  mml_channel_wait: take a batch; frame, write and
 *   into a preallocated slot + arena       post it into segments, index.idx and keys.hix,
 *   bytes, publish it with a release       commit and sync it; mml_channel_release: give the
 *   store.                                 slots back; on to the next batch.
 *
 * The Python twin of every loop here is the readable specification:
 * mmaplog/engine/writer.py (the queue), mmaplog/storage/frames.py (framing),
 * mmaplog/storage/hash_index.py (postings). Both write byte-identical runs.
 */
#ifndef MML_NATIVE_H
#define MML_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "hix.h"
#include "xxh3.h"

/* --- on-disk constants (mmaplog/storage/layout.py) --------------------------------------- */
#define MML_SEGMENT_HEADER_SIZE 64u
#define MML_FRAME_HEADER_SIZE 96u
#define MML_FRAME_MAGIC 0x31464C4Du /* "MLF1" */
#define MML_EOS_MAGIC 0x534F454Du   /* "MEOS" */
#define MML_INDEX_HEADER_SIZE 64u
#define MML_INDEX_RECORD_SIZE 96u
#define MML_INDEX_RECORD_CHECKED 88u /* v2: xxh3-64 of these bytes sits in the last 8 */
#define MML_FLAG_CORRELATION 1u
#define MML_FLAG_CAUSATION 2u
#define MML_MAX_KEY_BYTES 1024u
#define MML_MAX_SYMBOL_BYTES 4096u /* layout.MAX_SYMBOL_BYTES */
#define MML_KIND_CORRELATION 5u

/* --- the pair table: (topic, payload_type) -> symbol ids and their hashed form ----------- */
/* Chunked so that the writer thread can read entries while the engine thread appends: a
 * chunk, once published, never moves. */
#define MML_PAIR_CHUNK 256u
#define MML_PAIR_CHUNKS 4096u /* at most 1 Mi distinct (topic, payload_type) pairs */

typedef struct {
    uint32_t topic_id;
    uint32_t type_id;
    uint32_t names_len; /* u64be(len) + topic + u64be(len) + payload_type */
    unsigned char *names;
} mml_pair;

/* --- one queued entry ---------------------------------------------------------------------- */
/* Slot errors: set by submit on the engine thread, raised by the writer thread when it meets
 * the entry, so a bad entry fails the writer exactly where the pure path would. */
enum { MML_SLOT_OK = 0, MML_SLOT_BAD = 1 };

typedef struct {
    uint64_t seq;
    uint64_t ts_publish;
    uint64_t ts_init;
    uint32_t pair;         /* index into the pair table */
    uint32_t payload_len;
    uint32_t keys_len;     /* bytes of the frame's index-key block */
    uint32_t postings_len; /* bytes of the posting list: (u8 kind, u16 len, bytes)* */
    uint16_t flags;        /* FLAG_CORRELATION | FLAG_CAUSATION */
    uint16_t error;        /* MML_SLOT_* */
    uint32_t owned;        /* data is a buffer of its own (a big payload), freed on release */
    unsigned char *data;   /* payload, key block, posting list (arena or owned) */
    size_t arena_cost;     /* arena bytes this entry holds, wrap waste included */
    unsigned char corr[16];
    unsigned char caus[16];
    unsigned char digest[16]; /* the entry hash the caller gave (has_digest), else computed */
    uint32_t has_digest;
} mml_slot;

typedef struct {
    PyObject_HEAD
    _Atomic uint64_t last; /* the last reading handed out */
} mml_wallclock;

uint64_t mml_wallclock_now(mml_wallclock *clock);

typedef struct {
    PyObject_HEAD
    /* ring of slots: [tail, taken) belong to the writer's current batch, [taken, head) wait */
    mml_slot *slots;
    uint64_t mask;         /* slot count - 1 (a power of two) */
    uint64_t capacity;     /* at most this many entries wait (channel_capacity) */
    _Atomic uint64_t head; /* next slot the producer fills (published with release) */
    _Atomic uint64_t taken; /* slots handed to the writer (producer's room check) */
    _Atomic uint64_t tail; /* slots released by the writer */
    /* arena: a byte ring for entry data, allocated in producer order */
    unsigned char *arena;
    size_t arena_size;
    size_t arena_head;             /* producer's next free byte */
    _Atomic size_t arena_tail;     /* start of the oldest unreleased entry's bytes */
    _Atomic size_t arena_used;     /* bytes between tail and head, wrap waste included */
    /* pairs */
    mml_pair *chunks[MML_PAIR_CHUNKS];
    uint32_t npairs;
    PyObject *pair_ids;    /* dict: topic str -> dict: payload_type str -> int pair index */
    PyObject *intern;      /* callable (topic, payload_type) -> (topic_id, type_id, names) */
    PyObject *posting_key; /* callable (kind, key) -> 16 bytes, ValueError when not a UUID */
    PyObject *errors;      /* dict: seq -> the exception a bad entry fails the writer with */
    PyObject *make_error;  /* callable (why, key) -> BackendError, as the pure path words it */
    /* waking the writer */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    _Atomic int waiting;   /* the writer sleeps on cond (WAIT_EMPTY or WAIT_FILL) */
    _Atomic uint64_t fill_target; /* WAIT_FILL: wake the writer when head reaches this */
    _Atomic int wake;      /* flush or control request: stop waiting for a fuller batch */
    int closed;
    /* the producer side (GIL held): EventStoreWriter.submit_fields in C */
    uint64_t accepted;     /* the last seq taken (the writer's _accepted) */
    int open;              /* the writer is OPEN: submit_fields takes entries */
    mml_wallclock *wall;   /* the writer's clock when it is a native WallClock ... */
    PyObject *now_ns;      /* ... else its bound now_ns method */
} mml_channel;

extern PyTypeObject mml_ChannelType;
extern PyTypeObject mml_FrameWriterType;
extern PyTypeObject mml_WallClockType;

/* channel.c, for framewriter.c */
const mml_pair *mml_channel_pair(const mml_channel *ch, uint32_t index);
const mml_slot *mml_channel_slot(const mml_channel *ch, uint64_t index);
uint64_t mml_channel_tail(mml_channel *ch);
uint64_t mml_channel_taken(mml_channel *ch);
uint64_t mml_channel_wait(mml_channel *ch, uint64_t max_batch, double latency, double timeout,
                          int *woken);
void mml_channel_release(mml_channel *ch);
/* channel.c, for capture.c: Channel.submit_fields (6 args) -> seq, 0 (full), -1 (not open) */
PyObject *mml_channel_submit_fields(mml_channel *ch, PyObject *const *args, Py_ssize_t nargs);

extern PyTypeObject mml_CaptureType; /* capture.c */
int mml_capture_init_strings(void);

/* reader.c, for lookup.c: index.idx records checked on their own (record_check.py).
 * mml_check_record_at: 0, or the first check the record of `seq` fails (a reader.c RC_ code;
 * a record outside the buffer is one). mml_seek_ts_max: the lower bound of `ts` over the
 * ts_max of records 1..count, every record compared with checked first; *bad_seq is the seq
 * whose record failed (0: none did) and *code its check. */
int mml_check_record_at(const unsigned char *index, size_t index_len, uint64_t seq,
                        int checksummed);
uint64_t mml_seek_ts_max(const unsigned char *index, size_t index_len, uint64_t count,
                         uint64_t ts, int checksummed, uint64_t *bad_seq, int *code);

/* reader.c, for merkle.c: a run's records and frames checked seq by seq (verified_read.py), on
 * the caller's mappings. mml_frames_get takes them from Python arguments: the index mapping, the
 * segments [(number, buffer or None)] sorted by number, the framed name of every symbol id
 * (index 0 unused); -1 with an exception set on bad arguments. mml_frames_release is safe
 * after a failed get. mml_check_frame: 0 with *frame at the checked frame of `seq` (and
 * *seg_hint its index in segs), or the first check it fails (reader.c's RC_ codes), in the
 * reference's order; entry_hash: check the canonical entry hash too. No GIL needed. */
typedef struct {
    uint64_t number;
    const unsigned char *buf; /* NULL: the segment does not exist */
    size_t len;
} mml_seg_map;

typedef struct {
    const unsigned char *bytes;
    size_t len;
} mml_name_ref;

/* The framed name of every symbol id (index 0 unused), from a Python sequence of bytes (None:
 * no names): a tuple of its own, so the bytes stay alive while the GIL is released whatever
 * happens to the caller's list, and spans into it. mml_names_get: -1 with an exception (a
 * TypeError "names must be bytes" for an item that is not); mml_names_release is safe after
 * a failed get. */
typedef struct {
    PyObject *tuple;
    mml_name_ref *refs;
    Py_ssize_t n;
} mml_names;

int mml_names_get(mml_names *names, PyObject *seq);
void mml_names_release(mml_names *names);

typedef struct {
    const unsigned char *index;
    size_t index_len;
    int checksummed;
    const mml_seg_map *segs;
    Py_ssize_t nsegs;
    const mml_name_ref *names; /* framed names by symbol id; id 0 is not a symbol */
    Py_ssize_t nnames;
    /* what mml_frames_get holds */
    Py_buffer index_buf;
    int have_index;
    Py_buffer *segbufs;
    mml_seg_map *seg_store;
    Py_ssize_t got_segs;
    mml_names name_set;
} mml_frames;

#define MML_FRAME_OK 0
#define MML_FRAME_SYMBOL 5 /* a record names a symbol id the names do not hold */

int mml_frames_get(mml_frames *fr, PyObject *index, int checksummed, PyObject *segments,
                   PyObject *names);
void mml_frames_release(mml_frames *fr);
int mml_check_frame(const mml_frames *fr, uint64_t seq, int entry_hash, Py_ssize_t *seg_hint,
                    const unsigned char **frame);

/* A hint to start loading the index.idx record of `seq` (its 96 bytes span two or three cache
 * lines); nothing when the buffer does not hold it. Never faults: prefetches do not. */
static inline void mml_prefetch_record(const unsigned char *index, size_t index_len,
                                       uint64_t seq) {
#if defined(__GNUC__) || defined(__clang__)
    if (index_len < MML_INDEX_HEADER_SIZE || seq == 0 ||
        seq - 1 >= (index_len - MML_INDEX_HEADER_SIZE) / MML_INDEX_RECORD_SIZE)
        return;
    const unsigned char *r = index + MML_INDEX_HEADER_SIZE + (seq - 1) * MML_INDEX_RECORD_SIZE;
    __builtin_prefetch(r);
    __builtin_prefetch(r + 64);
    __builtin_prefetch(r + MML_INDEX_RECORD_SIZE - 1);
#else
    (void)index, (void)index_len, (void)seq;
#endif
}

/* little-endian stores / loads (the format is little-endian; x86-64 is too, but say so) */
static inline void mml_put_u16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static inline void mml_put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void mml_put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static inline void mml_put_u64be(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (56 - 8 * i));
}
/* memcpy that accepts a NULL pointer for zero bytes (an empty payload has no buffer). */
static inline void mml_copy(void *dst, const void *src, size_t n) {
    if (n) memcpy(dst, src, n);
}
static inline uint16_t mml_get_u16(const unsigned char *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint64_t mml_get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* entry_hash(seq, ts_init, ts_publish, topic, payload_type, payload, headers) (channel.c) */
PyObject *mml_py_entry_hash(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif /* MML_NATIVE_H */
