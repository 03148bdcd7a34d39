/*
 * merkle.c - the Merkle checkpointer's per-entry work in C, with the GIL released:
 *
 *   merkle_leaves(_at) the RFC 9162 leaf of every entry of a batch: SHA-256(0x00 || the
 *                     entry's canonical stream), the stream of mmaplog/storage/entry_hash.py
 *   frontier_append   a batch of leaves appended to the compact frontier, the perfect nodes
 *                     it completed coalesced into runs of consecutive tree-file slots
 *   merkle_extend     the checkpointer's catch-up in one call: a batch's leaves, appended to
 *                     the frontier, the nodes they complete written to merkle.tree
 *   merkle_follow     the checkpointer's step in one call: records and frames checked (as
 *                     verify_chunk checks them), leaves hashed from the frames, appended to
 *                     the frontier, nodes written to merkle.tree, frontiers kept at each
 *                     checkpoint size
 *   tree_level        the next level of a full tree (MemoryTree)
 *
 * Python twins, the reference (MMAPLOG_PURE=1): tree_keeper.leaf_batches, Frontier.append and
 * MemoryTree in mmaplog/integrity; tests/test_native_merkle.py proves them equal.
 */
#include "native.h"

#include "entry_stream.h"
#include "merkle.h"
#include "sha256.h"

#include <errno.h>
#include <unistd.h>

#define REC_SEQ 0
#define REC_TS_INIT 8
#define REC_TS_PUBLISH 16
#define REC_TOPIC 44
#define REC_PTYPE 48
#define REC_FLAGS 52
#define REC_CORR 56
#define REC_CAUS 72

static inline uint64_t rd_le64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v; /* the index is little-endian, as are the hosts the core builds for */
}

static inline uint32_t rd_le32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline void wr_be64(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

static PyObject *py_sha256(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    unsigned char out[MML_SHA256_SIZE];
    Py_BEGIN_ALLOW_THREADS
    mml_sha256(data.buf, (size_t)data.len, out);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, MML_SHA256_SIZE);
}

static PyObject *py_sha256_impl(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(arg)) {
    return PyUnicode_FromString(mml_sha256_impl());
}

static PyObject *py_sha256_select(PyObject *Py_UNUSED(module), PyObject *arg) {
    int scalar = PyObject_IsTrue(arg);
    if (scalar < 0) return NULL;
    mml_sha256_setup(scalar);
    return PyUnicode_FromString(mml_sha256_impl());
}

typedef struct {
    const unsigned char *p;
    size_t len;
} span;

/* What an entry's leaf covers, wherever it is read from (a record and its payload, or a frame). */
typedef struct {
    uint64_t seq, ts_init, ts_publish;
    const unsigned char *topic, *ptype; /* framed names */
    size_t topic_len, ptype_len;
    const unsigned char *payload;
    size_t payload_len;
    unsigned flags;
    const unsigned char *corr, *caus; /* 16 raw bytes each */
} leaf_fields;

/* SHA-256(0x00 || the entry's canonical stream): its RFC 9162 leaf. */
static void leaf_hash(const leaf_fields *e, unsigned char *out) {
    static const unsigned char leaf_prefix = 0x00;
    unsigned char head[MML_STREAM_HEAD], plen[8], tail[MML_STREAM_TAIL_MAX];
    mml_stream_head(head, e->seq, e->ts_init, e->ts_publish);
    wr_be64(plen, (uint64_t)e->payload_len);
    size_t tail_len = mml_stream_tail(tail, e->flags, e->corr, e->caus);
    mml_sha256_ctx ctx;
    mml_sha256_init(&ctx);
    mml_sha256_update(&ctx, &leaf_prefix, 1);
    mml_sha256_update(&ctx, head, sizeof head);
    mml_sha256_update(&ctx, e->topic, e->topic_len);
    mml_sha256_update(&ctx, e->ptype, e->ptype_len);
    mml_sha256_update(&ctx, plen, 8);
    mml_sha256_update(&ctx, e->payload, e->payload_len);
    mml_sha256_update(&ctx, tail, tail_len);
    mml_sha256_final(&ctx, out);
}

/* The leaves of n entries: records (n * 96 bytes), payload i at pay[i] (pay_len[i] bytes),
 * the framed names by symbol id (ids checked by the caller). Runs without the GIL. */
static void hash_leaves(const unsigned char *recs, size_t n, const mml_name_ref *names,
                        const span *pay, unsigned char *out) {
    for (size_t i = 0; i < n; i++) {
        const unsigned char *r = recs + i * MML_INDEX_RECORD_SIZE;
        const mml_name_ref *topic = &names[rd_le32(r + REC_TOPIC)];
        const mml_name_ref *ptype = &names[rd_le32(r + REC_PTYPE)];
        const leaf_fields e = {
            .seq = rd_le64(r + REC_SEQ),
            .ts_init = rd_le64(r + REC_TS_INIT),
            .ts_publish = rd_le64(r + REC_TS_PUBLISH),
            .topic = topic->bytes,
            .topic_len = topic->len,
            .ptype = ptype->bytes,
            .ptype_len = ptype->len,
            .payload = pay[i].p,
            .payload_len = pay[i].len,
            .flags = rd_le32(r + REC_FLAGS),
            .corr = r + REC_CORR,
            .caus = r + REC_CAUS,
        };
        leaf_hash(&e, out + i * MML_SHA256_SIZE);
    }
}

/* The records buffer and the framed names, checked: whole records, every symbol id named. */
typedef struct {
    Py_buffer rec;
    mml_names names;
    Py_ssize_t n;
} leaf_input;

static void leaf_input_release(leaf_input *in) {
    mml_names_release(&in->names);
    if (in->rec.obj != NULL) PyBuffer_Release(&in->rec);
}

static int leaf_input_get(leaf_input *in, PyObject *records_obj, PyObject *framed_obj) {
    memset(in, 0, sizeof *in);
    if (PyObject_GetBuffer(records_obj, &in->rec, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (in->rec.len % MML_INDEX_RECORD_SIZE) {
        PyErr_SetString(PyExc_ValueError, "records must be whole 96-byte index records");
        return -1;
    }
    in->n = in->rec.len / MML_INDEX_RECORD_SIZE;
    if (mml_names_get(&in->names, framed_obj) < 0) return -1;
    Py_ssize_t n_names = in->names.n;
    const unsigned char *recs = in->rec.buf;
    for (Py_ssize_t i = 0; i < in->n; i++) {
        const unsigned char *r = recs + (size_t)i * MML_INDEX_RECORD_SIZE;
        if (rd_le32(r + REC_TOPIC) >= (uint64_t)n_names ||
            rd_le32(r + REC_PTYPE) >= (uint64_t)n_names) {
            PyErr_Format(PyExc_ValueError, "record %zd names a symbol id without a name", i);
            return -1;
        }
    }
    return 0;
}

static PyObject *leaves_of(leaf_input *in, const span *pay) {
    PyObject *result = PyBytes_FromStringAndSize(NULL, in->n * MML_SHA256_SIZE);
    if (result == NULL) return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    hash_leaves(in->rec.buf, (size_t)in->n, in->names.refs, pay, out);
    Py_END_ALLOW_THREADS
    return result;
}

/* merkle_leaves(records, payloads, framed) -> n * 32 bytes.
 * records: the batch's seq-index records (n * 96 bytes, C-contiguous); payloads: n buffers;
 * framed: the framed name (u64be length + UTF-8) of every symbol id, a sequence of bytes. */
static PyObject *py_merkle_leaves(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *records_obj, *payloads_obj, *framed_obj;
    if (!PyArg_ParseTuple(args, "OOO", &records_obj, &payloads_obj, &framed_obj)) return NULL;
    leaf_input in;
    PyObject *result = NULL, *pays = NULL;
    Py_buffer *bufs = NULL;
    span *pay = NULL;
    Py_ssize_t got = 0;
    if (leaf_input_get(&in, records_obj, framed_obj) < 0) goto done;
    pays = PySequence_Fast(payloads_obj, "payloads must be a sequence of buffers");
    if (pays == NULL) goto done;
    if (PySequence_Fast_GET_SIZE(pays) != in.n) {
        PyErr_SetString(PyExc_ValueError, "one payload per record");
        goto done;
    }
    bufs = PyMem_Calloc((size_t)in.n + 1, sizeof *bufs);
    pay = PyMem_Calloc((size_t)in.n + 1, sizeof *pay);
    if (bufs == NULL || pay == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < in.n; i++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(pays, i), &bufs[i], PyBUF_SIMPLE) < 0)
            goto done;
        got++;
        pay[i].p = bufs[i].buf;
        pay[i].len = (size_t)bufs[i].len;
    }
    result = leaves_of(&in, pay);
done:
    for (Py_ssize_t i = 0; i < got; i++) PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    PyMem_Free(pay);
    Py_XDECREF(pays);
    leaf_input_release(&in);
    return result;
}

/* Where the payloads of a batch are: payload i at views[segment_of[i]][payload_at[i]:
 * +payload_len[i]] (int64 columns), every span checked against its view. */
typedef struct {
    Py_buffer cols[3];
    int have_cols;
    PyObject *views; /* PySequence_Fast */
    Py_buffer *vbufs;
    Py_ssize_t got;
    span *pay;
} payload_input;

static void payload_input_release(payload_input *in) {
    for (Py_ssize_t i = 0; i < in->got; i++) PyBuffer_Release(&in->vbufs[i]);
    for (int k = 0; k < in->have_cols; k++) PyBuffer_Release(&in->cols[k]);
    PyMem_Free(in->vbufs);
    PyMem_Free(in->pay);
    Py_XDECREF(in->views);
}

static int payload_input_get(payload_input *in, Py_ssize_t n, PyObject *views_obj,
                             PyObject *seg_obj, PyObject *at_obj, PyObject *len_obj) {
    memset(in, 0, sizeof *in);
    PyObject *col_objs[3] = {seg_obj, at_obj, len_obj};
    for (; in->have_cols < 3; in->have_cols++) {
        Py_buffer *col = &in->cols[in->have_cols];
        if (PyObject_GetBuffer(col_objs[in->have_cols], col, PyBUF_C_CONTIGUOUS) < 0) return -1;
        if (col->len != n * 8) {
            in->have_cols++;
            PyErr_SetString(PyExc_ValueError, "one int64 per record in each column");
            return -1;
        }
    }
    in->views = PySequence_Fast(views_obj, "views must be a sequence of buffers");
    if (in->views == NULL) return -1;
    Py_ssize_t n_views = PySequence_Fast_GET_SIZE(in->views);
    in->vbufs = PyMem_Calloc((size_t)n_views + 1, sizeof *in->vbufs);
    in->pay = PyMem_Calloc((size_t)n + 1, sizeof *in->pay);
    if (in->vbufs == NULL || in->pay == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (; in->got < n_views; in->got++)
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(in->views, in->got),
                               &in->vbufs[in->got], PyBUF_SIMPLE) < 0)
            return -1;
    const int64_t *seg = in->cols[0].buf, *at = in->cols[1].buf, *len = in->cols[2].buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* The columns came from the frames: every span must lie inside its view. */
        if (seg[i] < 0 || seg[i] >= n_views || at[i] < 0 || len[i] < 0 ||
            at[i] > in->vbufs[seg[i]].len || len[i] > in->vbufs[seg[i]].len - at[i]) {
            PyErr_Format(PyExc_ValueError, "payload of record %zd is outside its view", i);
            return -1;
        }
        in->pay[i].p = (const unsigned char *)in->vbufs[seg[i]].buf + at[i];
        in->pay[i].len = (size_t)len[i];
    }
    return 0;
}

/* merkle_leaves_at(records, views, segment_of, payload_at, payload_len, framed): the same
 * leaves with payload i at views[segment_of[i]][payload_at[i]:+payload_len[i]] (int64
 * columns), so a batch needs no memoryview per entry. */
static PyObject *py_merkle_leaves_at(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *records_obj, *views_obj, *seg_obj, *at_obj, *len_obj, *framed_obj;
    if (!PyArg_ParseTuple(args, "OOOOOO", &records_obj, &views_obj, &seg_obj, &at_obj, &len_obj,
                          &framed_obj))
        return NULL;
    leaf_input in;
    payload_input pin;
    memset(&pin, 0, sizeof pin);
    PyObject *result = NULL;
    if (leaf_input_get(&in, records_obj, framed_obj) < 0) goto done;
    if (payload_input_get(&pin, in.n, views_obj, seg_obj, at_obj, len_obj) < 0) goto done;
    result = leaves_of(&in, pin.pay);
done:
    payload_input_release(&pin);
    leaf_input_release(&in);
    return result;
}

typedef struct {
    uint64_t slot;
    uint64_t at; /* digest offset in the node buffer */
} node_ref;

static int cmp_slot(const void *a, const void *b) {
    uint64_t x = ((const node_ref *)a)->slot, y = ((const node_ref *)b)->slot;
    return (x > y) - (x < y);
}

/* frontier_append(hashes, size, leaves) -> (new hashes, [(first slot, digests), ...]).
 * hashes: the frontier of a tree of size leaves (popcount(size) * 32 bytes, largest subtree
 * first); leaves: n * 32 bytes. The runs hold every perfect node the leaves completed, the
 * leaves included, at their in-order slots (merkle_files.flat_index), consecutive slots
 * joined. */
static PyObject *py_frontier_append(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer hb, lb;
    unsigned long long size;
    if (!PyArg_ParseTuple(args, "y*Ky*", &hb, &size, &lb)) return NULL;
    PyObject *result = NULL;
    unsigned char *nodes = NULL;
    node_ref *refs = NULL;
    int depth = __builtin_popcountll(size);
    if (hb.len != (Py_ssize_t)depth * MML_SHA256_SIZE || lb.len % MML_SHA256_SIZE) {
        PyErr_SetString(PyExc_ValueError, "frontier hashes or leaves of the wrong length");
        goto done;
    }
    size_t n = (size_t)lb.len / MML_SHA256_SIZE;
    unsigned char stack[65][MML_SHA256_SIZE];
    memcpy(stack, hb.buf, (size_t)hb.len);
    size_t max_nodes = 2 * n + 64;
    nodes = PyMem_Malloc(max_nodes * MML_SHA256_SIZE);
    refs = PyMem_Malloc(max_nodes * sizeof *refs);
    if (nodes == NULL || refs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t count = 0;
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *leaf = lb.buf;
    for (size_t i = 0; i < n; i++, leaf += MML_SHA256_SIZE) {
        uint64_t index = size;
        unsigned char digest[MML_SHA256_SIZE];
        memcpy(digest, leaf, MML_SHA256_SIZE);
        int level = 0;
        for (;;) {
            refs[count].slot = (index >> level << (level + 1)) + ((uint64_t)1 << level) - 1;
            refs[count].at = count * MML_SHA256_SIZE;
            memcpy(nodes + count * MML_SHA256_SIZE, digest, MML_SHA256_SIZE);
            count++;
            if (!(size >> level & 1)) break;
            /* the lowest frontier subtree has this level: fold it in */
            depth--;
            mml_sha256_node(stack[depth], digest, digest);
            level++;
        }
        memcpy(stack[depth++], digest, MML_SHA256_SIZE);
        size++;
    }
    qsort(refs, count, sizeof *refs, cmp_slot);
    Py_END_ALLOW_THREADS
    PyObject *runs = PyList_New(0);
    if (runs == NULL) goto done;
    size_t i = 0;
    while (i < count) {
        size_t j = i + 1;
        while (j < count && refs[j].slot == refs[j - 1].slot + 1) j++;
        PyObject *data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((j - i) * MML_SHA256_SIZE));
        if (data == NULL) {
            Py_DECREF(runs);
            goto done;
        }
        unsigned char *dst = (unsigned char *)PyBytes_AS_STRING(data);
        for (size_t k = i; k < j; k++)
            memcpy(dst + (k - i) * MML_SHA256_SIZE, nodes + refs[k].at, MML_SHA256_SIZE);
        PyObject *run = Py_BuildValue("(KN)", (unsigned long long)refs[i].slot, data);
        if (run == NULL || PyList_Append(runs, run) < 0) {
            Py_XDECREF(run);
            Py_DECREF(runs);
            goto done;
        }
        Py_DECREF(run);
        i = j;
    }
    result = Py_BuildValue("(y#N)", (const char *)stack, (Py_ssize_t)depth * MML_SHA256_SIZE,
                           runs);
done:
    PyMem_Free(nodes);
    PyMem_Free(refs);
    PyBuffer_Release(&hb);
    PyBuffer_Release(&lb);
    return result;
}

/* --- the checkpointer's catch-up: leaves, frontier and tree file in one call --------------- */

#define TREE_HEADER_SIZE 64u /* merkle_files.TREE_HEADER_SIZE */
/* Far more leaves than a run holds, and small enough that every slot offset fits an off_t. */
#define MAX_TREE_LEAVES ((uint64_t)1 << 56)

/* A perfect node completed before the chunk's own slots: at most one per level. */
typedef struct {
    uint64_t slot;
    unsigned char digest[MML_SHA256_SIZE];
} far_node;

/* Append n leaves to the frontier `stack` (depth roots, largest first) of a tree of `size`
 * leaves, as Frontier.append does one by one. The perfect node of level L that leaf i
 * completes sits at slot 2i + 1 - 2^L (merkle_files.flat_index of (L, (i + 1) / 2^L - 1)), so
 * every node these leaves complete, the leaves included, goes to `dense` (the 2n - 1 slots
 * from 2 * size on: nothing before these leaves could fill them) unless its slot is before
 * 2 * size; those go to `far`, at most one per level (64). Returns how many went to `far`. */
static size_t fold_leaves(unsigned char (*stack)[MML_SHA256_SIZE], int *depth, uint64_t size,
                          const unsigned char *leaves, size_t n, unsigned char *dense,
                          far_node *far) {
    const uint64_t base = 2 * size;
    size_t nfar = 0;
    for (size_t i = 0; i < n; i++, size++) {
        unsigned char digest[MML_SHA256_SIZE];
        memcpy(digest, leaves + i * MML_SHA256_SIZE, MML_SHA256_SIZE);
        memcpy(dense + (2 * size - base) * MML_SHA256_SIZE, digest, MML_SHA256_SIZE);
        /* the frontier has a subtree of every level whose bit is set in size: fold them in */
        for (int level = 0; size >> level & 1;) {
            (*depth)--;
            mml_sha256_node(stack[*depth], digest, digest);
            level++;
            uint64_t slot = 2 * size + 1 - ((uint64_t)1 << level);
            if (slot >= base) {
                memcpy(dense + (slot - base) * MML_SHA256_SIZE, digest, MML_SHA256_SIZE);
            } else {
                far[nfar].slot = slot;
                memcpy(far[nfar].digest, digest, MML_SHA256_SIZE);
                nfar++;
            }
        }
        memcpy(stack[(*depth)++], digest, MML_SHA256_SIZE);
    }
    return nfar;
}

/* pwrite every byte (a short write is retried); 0 or an errno. */
static int write_at(int fd, const unsigned char *data, size_t len, uint64_t offset) {
    while (len > 0) {
        ssize_t done = pwrite(fd, data, len, (off_t)offset);
        if (done < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        data += done;
        len -= (size_t)done;
        offset += (uint64_t)done;
    }
    return 0;
}

/* merkle_extend(records, views, segment_of, payload_at, payload_len, framed, hashes, size,
 *               tree_fd) -> the new frontier's hashes (its size is size + n)
 *
 * TreeKeeper.catch_up for one checked batch, in one call with the GIL released: the leaves
 * (merkle_leaves_at's arguments), appended to the frontier of `size` leaves (`hashes`, as in
 * frontier_append), and every node they complete written to merkle.tree (`tree_fd`). The
 * reference is Frontier.append_block + TreeFile.write_runs; the file ends up byte-identical:
 * the chunk's own slots go out in one pwrite, those of right-edge nodes not complete yet as
 * zeros (what a file with a hole there reads as, and what the format says they hold), then
 * the few far nodes one by one. On an OSError the frontier is unchanged (the caller keeps the
 * old one); a partly written tree file past it is cut when the tree is next resumed. */
static PyObject *py_merkle_extend(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *records_obj, *views_obj, *seg_obj, *at_obj, *len_obj, *framed_obj;
    Py_buffer hb;
    unsigned long long size;
    int fd;
    if (!PyArg_ParseTuple(args, "OOOOOOy*Ki", &records_obj, &views_obj, &seg_obj, &at_obj,
                          &len_obj, &framed_obj, &hb, &size, &fd))
        return NULL;
    leaf_input in;
    payload_input pin;
    memset(&in, 0, sizeof in);
    memset(&pin, 0, sizeof pin);
    PyObject *result = NULL;
    unsigned char *leaves = NULL, *dense = NULL;
    int depth = __builtin_popcountll(size);
    if (hb.len != (Py_ssize_t)depth * MML_SHA256_SIZE || fd < 0) {
        PyErr_SetString(PyExc_ValueError, "frontier hashes of the wrong length, or no tree fd");
        goto done;
    }
    if (leaf_input_get(&in, records_obj, framed_obj) < 0) goto done;
    if (payload_input_get(&pin, in.n, views_obj, seg_obj, at_obj, len_obj) < 0) goto done;
    size_t n = (size_t)in.n;
    if (size > MAX_TREE_LEAVES || n > MAX_TREE_LEAVES - size) {
        PyErr_SetString(PyExc_ValueError, "tree size out of range");
        goto done;
    }
    if (n == 0) {
        result = PyBytes_FromStringAndSize(hb.buf, hb.len);
        goto done;
    }
    leaves = PyMem_Malloc(n * MML_SHA256_SIZE);
    dense = PyMem_Calloc(2 * n - 1, MML_SHA256_SIZE);
    if (leaves == NULL || dense == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    unsigned char stack[65][MML_SHA256_SIZE];
    far_node far[64];
    memcpy(stack, hb.buf, (size_t)hb.len);
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    hash_leaves(in.rec.buf, n, in.names.refs, pin.pay, leaves);
    size_t nfar = fold_leaves(stack, &depth, size, leaves, n, dense, far);
    err = write_at(fd, dense, (2 * n - 1) * MML_SHA256_SIZE,
                   TREE_HEADER_SIZE + (uint64_t)MML_SHA256_SIZE * 2 * size);
    for (size_t k = 0; k < nfar && err == 0; k++)
        err = write_at(fd, far[k].digest, MML_SHA256_SIZE,
                       TREE_HEADER_SIZE + (uint64_t)MML_SHA256_SIZE * far[k].slot);
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    result = PyBytes_FromStringAndSize((const char *)stack, (Py_ssize_t)depth * MML_SHA256_SIZE);
done:
    PyMem_Free(leaves);
    PyMem_Free(dense);
    payload_input_release(&pin);
    leaf_input_release(&in);
    PyBuffer_Release(&hb);
    return result;
}

/* The leaf of a checked frame: its fields, not the record's (they agree, mml_check_frame). */
static void frame_leaf(const unsigned char *f, const mml_name_ref *names, unsigned char *out) {
    const mml_name_ref *topic = &names[rd_le32(f + 32)], *ptype = &names[rd_le32(f + 36)];
    const leaf_fields e = {
        .seq = rd_le64(f + 8),
        .ts_init = rd_le64(f + 16),
        .ts_publish = rd_le64(f + 24),
        .topic = topic->bytes,
        .topic_len = topic->len,
        .ptype = ptype->bytes,
        .ptype_len = ptype->len,
        .payload = f + MML_FRAME_HEADER_SIZE,
        .payload_len = rd_le32(f + 40),
        .flags = mml_get_u16(f + 44),
        .corr = f + 48,
        .caus = f + 64,
    };
    leaf_hash(&e, out);
}

#define FOLLOW_PIECE 4096u /* leaves hashed, folded and written per step */
#define CANCEL_EVERY 64u   /* entries between two looks at the cancel flag */

/* Keep a copy of the frontier (size a multiple of every). */
static int keep_frontier(mml_follow_job *job) {
    size_t need = (size_t)job->depth * MML_SHA256_SIZE;
    if (job->passed_len + need > job->passed_cap) {
        size_t cap = job->passed_cap ? 2 * job->passed_cap : 64 * MML_SHA256_SIZE;
        while (cap < job->passed_len + need) cap *= 2;
        unsigned char *grown = PyMem_RawRealloc(job->passed, cap);
        if (grown == NULL) return ENOMEM;
        job->passed = grown, job->passed_cap = cap;
    }
    memcpy(job->passed + job->passed_len, job->stack, need);
    job->passed_len += need;
    return 0;
}

static int cancelled(const mml_follow_job *job) {
    return job->cancel != NULL && atomic_load_explicit(job->cancel, memory_order_relaxed);
}

void mml_follow_run(mml_follow_job *job) {
    Py_ssize_t hint = 0;
    while (job->size < job->hwm && job->code == MML_FRAME_OK && job->err == 0 && !cancelled(job)) {
        uint64_t n = job->hwm - job->size;
        if (n > FOLLOW_PIECE) n = FOLLOW_PIECE;
        if (job->every && n > job->every - job->size % job->every)
            n = job->every - job->size % job->every; /* end the piece at the next multiple */
        uint64_t done = 0;
        for (; done < n; done++) {
            const unsigned char *f;
            if (done % CANCEL_EVERY == CANCEL_EVERY - 1 && cancelled(job)) break;
            job->code = mml_check_frame(job->fr, job->size + done + 1, 0, &hint, &f);
            if (job->code != MML_FRAME_OK) break;
            frame_leaf(f, job->fr->names, job->leaves + done * MML_SHA256_SIZE);
        }
        if (done == 0) break;
        far_node far[64];
        size_t nfar = fold_leaves(job->stack, &job->depth, job->size, job->leaves, done,
                                  job->dense, far);
        uint64_t base = TREE_HEADER_SIZE + (uint64_t)MML_SHA256_SIZE * 2 * job->size;
        job->err = write_at(job->fd, job->dense, (2 * done - 1) * MML_SHA256_SIZE, base);
        for (size_t k = 0; k < nfar && job->err == 0; k++)
            job->err = write_at(job->fd, far[k].digest, MML_SHA256_SIZE,
                                TREE_HEADER_SIZE + (uint64_t)MML_SHA256_SIZE * far[k].slot);
        if (job->err) break; /* the caller keeps its frontier: these nodes are cut on resume */
        job->size += done;
        if (job->every && job->size % job->every == 0) job->err = keep_frontier(job);
        /* slots of right-edge nodes not complete yet must be zeros in the next piece's write */
        memset(job->dense, 0, (2 * done - 1) * MML_SHA256_SIZE);
    }
}

int mml_follow_prepare(mml_follow_job *job, PyObject *args) {
    memset(job, 0, sizeof *job);
    job->fd = -1;
    PyObject *index_obj, *segs_obj, *names_obj;
    Py_buffer hb;
    unsigned long long size, hwm, every;
    int checksummed, fd;
    if (!PyArg_ParseTuple(args, "OpOOy*KKKi", &index_obj, &checksummed, &segs_obj, &names_obj,
                          &hb, &size, &hwm, &every, &fd))
        return -1;
    int depth = __builtin_popcountll(size), rc = -1;
    if (hb.len != (Py_ssize_t)depth * MML_SHA256_SIZE || fd < 0) {
        PyErr_SetString(PyExc_ValueError, "frontier hashes of the wrong length, or no tree fd");
        goto done;
    }
    if (size > MAX_TREE_LEAVES || hwm > MAX_TREE_LEAVES) {
        PyErr_SetString(PyExc_ValueError, "tree size out of range");
        goto done;
    }
    if (mml_frames_get(&job->frames, index_obj, checksummed, segs_obj, names_obj) < 0) goto done;
    memcpy(job->stack, hb.buf, (size_t)hb.len);
    job->fr = &job->frames;
    job->depth = depth;
    job->size = size;
    job->hwm = hwm;
    job->every = every;
    /* A descriptor of the job's own: the caller closing merkle.tree meanwhile (or the number
     * being reused for another file) cannot redirect the job's writes. */
    job->fd = dup(fd);
    if (job->fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    job->leaves = PyMem_RawMalloc(FOLLOW_PIECE * MML_SHA256_SIZE);
    job->dense = PyMem_RawCalloc(2 * FOLLOW_PIECE - 1, MML_SHA256_SIZE);
    if (job->leaves == NULL || job->dense == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    rc = 0;
done:
    PyBuffer_Release(&hb);
    return rc;
}

PyObject *mml_follow_result(const mml_follow_job *job) {
    if (job->err) {
        errno = job->err;
        return PyErr_SetFromErrno(job->err == ENOMEM ? PyExc_MemoryError : PyExc_OSError);
    }
    return Py_BuildValue("(Kiy#y#)", (unsigned long long)job->size, job->code,
                         (const char *)job->stack, (Py_ssize_t)job->depth * MML_SHA256_SIZE,
                         (const char *)(job->passed ? job->passed : (unsigned char *)""),
                         (Py_ssize_t)job->passed_len);
}

void mml_follow_release(mml_follow_job *job) {
    PyMem_RawFree(job->leaves);
    PyMem_RawFree(job->dense);
    PyMem_RawFree(job->passed);
    mml_frames_release(&job->frames);
    if (job->fd >= 0) close(job->fd);
    job->leaves = job->dense = job->passed = NULL;
    job->fd = -1;
}

/* merkle_follow(index, checksummed, segments, names, hashes, size, hwm, every, tree_fd)
 *     -> (size, code, hashes, passed)
 *
 * The checkpointer's step in one call with the GIL released: seqs size + 1 ..= hwm, each
 * record and frame checked as verify_chunk checks them (index, segments and names are its
 * arguments; no xxh3 entry hash: the leaf covers the same stream with SHA-256), its leaf
 * hashed from the frame while it is in cache, appended to the frontier of `size` leaves
 * (`hashes`, as in merkle_extend) and every node written to merkle.tree (`tree_fd`). Returns
 * the new size and frontier hashes; code is 0, or the check the seq after the new size failed
 * (reader.c's codes; the caller words it with the reference); passed holds the frontier hashes
 * at each multiple of `every` (0: none) passed, concatenated (each size's popcount * 32
 * bytes). An OSError (a failed write) leaves the caller's frontier as it was; nodes written
 * past it are cut when the tree is next resumed. TreeFollower.run does the same on a worker
 * thread of its own (follower.c). */
static PyObject *py_merkle_follow(PyObject *Py_UNUSED(module), PyObject *args) {
    mml_follow_job job;
    PyObject *result = NULL;
    if (mml_follow_prepare(&job, args) == 0) {
        Py_BEGIN_ALLOW_THREADS
        mml_follow_run(&job);
        Py_END_ALLOW_THREADS
        result = mml_follow_result(&job);
    }
    mml_follow_release(&job);
    return result;
}

/* tree_level(level) -> the level above: SHA-256(0x01 || l || r) of every whole pair. */
static PyObject *py_tree_level(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer lb;
    if (!PyArg_ParseTuple(args, "y*", &lb)) return NULL;
    size_t pairs = (size_t)lb.len / (2 * MML_SHA256_SIZE);
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(pairs * MML_SHA256_SIZE));
    if (result != NULL) {
        unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
        const unsigned char *in = lb.buf;
        Py_BEGIN_ALLOW_THREADS
        for (size_t k = 0; k < pairs; k++)
            mml_sha256_node(in + 2 * k * MML_SHA256_SIZE, in + (2 * k + 1) * MML_SHA256_SIZE,
                            out + k * MML_SHA256_SIZE);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&lb);
    return result;
}

PyMethodDef mml_merkle_methods[] = {
    {"sha256", py_sha256, METH_VARARGS, "sha256(data) -> 32 bytes"},
    {"sha256_impl", py_sha256_impl, METH_NOARGS, "sha256_impl() -> 'sha-ni' | 'scalar'"},
    {"sha256_select", py_sha256_select, METH_O,
     "sha256_select(force_scalar) -> the implementation now in use (for tests)"},
    {"merkle_leaves", py_merkle_leaves, METH_VARARGS,
     "merkle_leaves(records, payloads, framed) -> n * 32 bytes of leaf hashes"},
    {"merkle_leaves_at", py_merkle_leaves_at, METH_VARARGS,
     "merkle_leaves_at(records, views, segment_of, payload_at, payload_len, framed) -> "
     "n * 32 bytes of leaf hashes"},
    {"frontier_append", py_frontier_append, METH_VARARGS,
     "frontier_append(hashes, size, leaves) -> (hashes, [(slot, digests), ...])"},
    {"merkle_extend", py_merkle_extend, METH_VARARGS,
     "merkle_extend(records, views, segment_of, payload_at, payload_len, framed, hashes, size, "
     "tree_fd) -> the new frontier's hashes (leaves, frontier and merkle.tree in one call)"},
    {"merkle_follow", py_merkle_follow, METH_VARARGS,
     "merkle_follow(index, checksummed, segments, names, hashes, size, hwm, every, tree_fd) -> "
     "(size, code, hashes, passed): frames checked, leaves, frontier and merkle.tree in one call"},
    {"tree_level", py_tree_level, METH_VARARGS, "tree_level(level) -> the level above"},
    {NULL, NULL, 0, NULL},
};
