/*
 * channel.c - the submit channel between the engine thread and the writer thread.
 *
 * Python twin: the SimpleQueue of mmaplog/engine/writer.py. One producer at a time (the GIL
 * serialises producers: nothing in submit releases it) and one consumer (the writer thread).
 *
 * submit_fields() (and submit() for the writer's slow paths) copies an entry into a
 * preallocated slot and the bytes it carries (payload, the frame's index-key block, the
 * hash-index posting list) into a byte arena, then publishes the slot with a release store of
 * `head`. Nothing is allocated per entry: payloads larger than a quarter of the arena are the
 * exception and get their own buffer.
 *
 * mml_channel_wait() (no GIL) blocks until a batch is ready: at least one entry, then more until
 * max_batch entries or the latency window ends, as the Python loop does. The slots it hands
 * over stay the writer's until mml_channel_release(), so framing reads them without a copy.
 * FrameWriter.run (framewriter.c) is its only caller.
 */
#include "native.h"

#include "entry_stream.h"
#include "fields.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_EMPTY 1 /* the writer sleeps until the first entry arrives */
#define WAIT_FILL 2  /* the writer sleeps until the batch is full (or the window ends) */

/* Slot offsets of the fields read per entry (fields.h), one cache per kind of object, with the
 * names each reads (interned by mml_channel_init_strings, in the order FIELD's index uses);
 * all used under the GIL. */
static mml_fieldcache append_cache, entry_cache, headers_cache, key_cache, uuid_cache;
static const char *const append_fields[] = {"entry", "index_keys"};
static const char *const entry_fields[] = {"seq",          "ts_init", "ts_publish", "topic",
                                           "payload_type", "payload", "headers",    "entry_hash"};
static const char *const headers_fields[] = {"correlation_id", "causation_id"};
static const char *const key_fields[] = {"kind", "key"};
static const char *const uuid_fields[] = {"int"};
#define NFIELDS(kind) ((int)(sizeof kind##_fields / sizeof kind##_fields[0]))
static PyObject *append_names[NFIELDS(append)], *entry_names[NFIELDS(entry)],
    *headers_names[NFIELDS(headers)], *key_names[NFIELDS(key)], *uuid_names[NFIELDS(uuid)];
#define FIELD(kind, obj, i) mml_field(&kind##_cache, (obj), kind##_names, NFIELDS(kind), (i))

/* --- small helpers ----------------------------------------------------------------------- */

static uint64_t round_pow2(uint64_t v) {
    uint64_t p = 1;
    while (p < v) p <<= 1;
    return p;
}

static void deadline_after(struct timespec *ts, double seconds) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    if (seconds < 0) seconds = 0;
    time_t whole = (time_t)seconds;
    long nanos = (long)((seconds - (double)whole) * 1e9);
    ts->tv_sec += whole;
    ts->tv_nsec += nanos;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
}

static int before(const struct timespec *deadline) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec < deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec < deadline->tv_nsec);
}

/* A UUID object -> its 16 big-endian bytes, read from its `int` attribute. */
static int uuid_bytes(PyObject *uuid, unsigned char out[16]) {
    PyObject *value = FIELD(uuid, uuid, 0);
    if (value == NULL) return -1;
    if (!PyLong_Check(value)) {
        Py_DECREF(value);
        PyErr_SetString(PyExc_TypeError, "header id is not a uuid.UUID");
        return -1;
    }
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t n = PyLong_AsNativeBytes(
        value, out, 16, Py_ASNATIVEBYTES_BIG_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER);
    int rc = (n < 0 || n > 16) ? -1 : 0;
    if (n > 16) PyErr_SetString(PyExc_OverflowError, "uuid int does not fit 16 bytes");
#else
    int rc = _PyLong_AsByteArray((PyLongObject *)value, out, 16, 0, 0);
#endif
    Py_DECREF(value);
    return rc;
}

/* --- the pair table ------------------------------------------------------------------------ */

const mml_pair *mml_channel_pair(const mml_channel *ch, uint32_t index) {
    return &ch->chunks[index / MML_PAIR_CHUNK][index % MML_PAIR_CHUNK];
}

/* The pair index of (topic, payload_type), interning the names on first use. Returns -1 with
 * a Python error set when interning failed (the entry is then submitted as a bad entry). */
static long pair_index(mml_channel *ch, PyObject *topic, PyObject *ptype) {
    PyObject *inner = PyDict_GetItemWithError(ch->pair_ids, topic);
    if (inner != NULL) {
        PyObject *found = PyDict_GetItemWithError(inner, ptype);
        if (found != NULL) return PyLong_AsLong(found);
    }
    if (PyErr_Occurred()) return -1;
    if (ch->npairs >= MML_PAIR_CHUNK * MML_PAIR_CHUNKS) {
        PyErr_SetString(PyExc_OverflowError, "too many distinct (topic, payload_type) pairs");
        return -1;
    }
    PyObject *got = PyObject_CallFunctionObjArgs(ch->intern, topic, ptype, NULL);
    if (got == NULL) return -1;
    unsigned long topic_id, type_id;
    const char *names;
    Py_ssize_t names_len;
    if (!PyTuple_Check(got) || PyTuple_GET_SIZE(got) != 3 ||
        !PyBytes_Check(PyTuple_GET_ITEM(got, 2))) {
        Py_DECREF(got);
        PyErr_SetString(PyExc_TypeError, "intern must return (topic_id, type_id, names)");
        return -1;
    }
    topic_id = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(got, 0));
    type_id = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(got, 1));
    if (PyErr_Occurred() || topic_id > UINT32_MAX || type_id > UINT32_MAX) {
        Py_DECREF(got);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_OverflowError, "symbol id too large");
        return -1;
    }
    PyBytes_AsStringAndSize(PyTuple_GET_ITEM(got, 2), (char **)&names, &names_len);
    uint32_t index = ch->npairs;
    mml_pair **chunk = &ch->chunks[index / MML_PAIR_CHUNK];
    if (*chunk == NULL) {
        *chunk = calloc(MML_PAIR_CHUNK, sizeof(mml_pair));
        if (*chunk == NULL) {
            Py_DECREF(got);
            PyErr_NoMemory();
            return -1;
        }
    }
    mml_pair *pair = &(*chunk)[index % MML_PAIR_CHUNK];
    pair->names = malloc((size_t)names_len);
    if (pair->names == NULL) {
        Py_DECREF(got);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(pair->names, names, (size_t)names_len);
    pair->names_len = (uint32_t)names_len;
    pair->topic_id = (uint32_t)topic_id;
    pair->type_id = (uint32_t)type_id;
    Py_DECREF(got);
    /* Visible to the writer thread through the release store of `head` of the first entry
     * that names it. */
    ch->npairs = index + 1;
    if (inner == NULL) {
        inner = PyDict_New();
        if (inner == NULL) return -1;
        int rc = PyDict_SetItem(ch->pair_ids, topic, inner);
        Py_DECREF(inner); /* the outer dict holds it */
        if (rc < 0) return -1;
    }
    PyObject *key = PyLong_FromUnsignedLong(index);
    if (key == NULL) return -1;
    int rc = PyDict_SetItem(inner, ptype, key);
    Py_DECREF(key);
    if (rc < 0) return -1;
    return (long)index;
}

/* --- submit (engine thread, GIL held) ---------------------------------------------------- */

/* One index key, parsed: its kind, its UTF-8 text (the key block) and the bytes it is posted
 * under (the text, or the 16 UUID bytes for a correlation id). */
typedef struct {
    unsigned kind;
    const char *text;
    Py_ssize_t text_len;
    unsigned char posted[16]; /* for correlation ids */
    int posted_is_uuid;
} key_view;

#define MAX_KEYS 64
#define DROP_KEYS()                                  \
    do {                                             \
        Py_DECREF(key_objs);                         \
        if (views != few) PyMem_Free(views);         \
    } while (0)

/* Record a bad entry: the exception the pure path's writer would raise on meeting it. */
static int remember_error(mml_channel *ch, uint64_t seq, PyObject *error) {
    PyObject *key = PyLong_FromUnsignedLongLong(seq);
    if (key == NULL) return -1;
    int rc = PyDict_SetItem(ch->errors, key, error);
    Py_DECREF(key);
    return rc;
}

/* The current Python exception becomes the entry's error. */
static int remember_current(mml_channel *ch, uint64_t seq) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    int rc = value != NULL ? remember_error(ch, seq, value) : -1;
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return rc;
}

/* Reserve `need` contiguous arena bytes; NULL when the arena is full (backpressure). */
static unsigned char *arena_reserve(mml_channel *ch, size_t need, size_t *cost) {
    size_t used = atomic_load_explicit(&ch->arena_used, memory_order_acquire);
    size_t free_bytes = ch->arena_size - used;
    size_t head = ch->arena_head;
    unsigned char *at;
    if (head + need <= ch->arena_size) {
        if (need > free_bytes) return NULL;
        *cost = need;
        ch->arena_head = head + need;
        at = ch->arena + head;
    } else {
        size_t waste = ch->arena_size - head; /* skip the arena's end, start again at 0 */
        if (waste + need > free_bytes) return NULL;
        *cost = waste + need;
        ch->arena_head = need;
        at = ch->arena;
    }
    /* The writer gives the bytes back in release(), entry by entry, in the same order. */
    atomic_fetch_add_explicit(&ch->arena_used, *cost, memory_order_relaxed);
    return at;
}

/* Raise the Python side's error (index_keys.bad_key_error) for `obj` at once: -1. */
static int raise_entry_error(mml_channel *ch, const char *why, PyObject *obj) {
    PyObject *error = PyObject_CallFunction(ch->make_error, "sO", why, obj);
    if (error == NULL) return -1;
    PyErr_SetObject((PyObject *)Py_TYPE(error), error);
    Py_DECREF(error);
    return -1;
}

/* A topic or payload_type the symbol table can take: str, UTF-8, at most 4096 bytes. */
static int check_name(mml_channel *ch, PyObject *name) {
    Py_ssize_t n;
    if (PyUnicode_Check(name)) {
        if (PyUnicode_AsUTF8AndSize(name, &n) != NULL && n <= MML_MAX_SYMBOL_BYTES) return 0;
        PyErr_Clear();
    }
    return raise_entry_error(ch, "name", name);
}

/* Queue one entry under `seq`: 1 queued, 0 no room (nothing taken), -1 a Python error. */
static int submit_entry(mml_channel *ch, uint64_t seq, uint64_t ts_publish, PyObject *topic,
                        PyObject *ptype, PyObject *payload_obj, uint64_t ts_init,
                        PyObject *headers, PyObject *keys, PyObject *digest) {
    if (check_name(ch, topic) < 0 || check_name(ch, ptype) < 0) return -1;

    /* index keys: each checked as index_keys.check_fields checks it, refused here at the call
     * (queued, it would fail the writer and the session with it), and measured for the key
     * block and the posting list */
    key_view few[MAX_KEYS];
    key_view *views = few;
    PyObject *key_objs = PySequence_Fast(keys, "index_keys must be a sequence");
    if (key_objs == NULL) return -1;
    Py_ssize_t nkeys = PySequence_Fast_GET_SIZE(key_objs);
    if (nkeys > MAX_KEYS) { /* rare: more keys than the stack array holds */
        views = PyMem_Malloc((size_t)nkeys * sizeof(key_view));
        if (views == NULL) {
            Py_DECREF(key_objs);
            PyErr_NoMemory();
            return -1;
        }
    }
    size_t keys_len = 0, postings_len = 0;
    PyObject **items = PySequence_Fast_ITEMS(key_objs);
    for (Py_ssize_t i = 0; i < nkeys; i++) {
        PyObject *kind_obj = FIELD(key, items[i], 0);
        PyObject *text_obj = kind_obj != NULL ? FIELD(key, items[i], 1) : NULL;
        if (text_obj == NULL) {
            Py_XDECREF(kind_obj);
            DROP_KEYS();
            return -1;
        }
        long kind = PyLong_Check(kind_obj) && !PyBool_Check(kind_obj) ? PyLong_AsLong(kind_obj)
                                                                       : 0;
        if (kind == -1 && PyErr_Occurred()) PyErr_Clear();
        key_view *v = &views[i];
        v->kind = (unsigned)kind;
        v->posted_is_uuid = 0;
        int rc = 0;
        if (kind < 1 || kind > (long)MML_KIND_CORRELATION) {
            rc = raise_entry_error(ch, "valid-kind", kind_obj);
        } else if (!PyUnicode_Check(text_obj) ||
                   (v->text = PyUnicode_AsUTF8AndSize(text_obj, &v->text_len)) == NULL ||
                   (size_t)v->text_len > MML_MAX_KEY_BYTES) {
            PyErr_Clear();
            rc = raise_entry_error(ch, "key", text_obj);
        } else if (kind == (long)MML_KIND_CORRELATION) {
            /* stored as its 16 raw UUID bytes; posting_key raises for one that is no UUID */
            PyObject *stored =
                PyObject_CallFunctionObjArgs(ch->posting_key, kind_obj, text_obj, NULL);
            if (stored != NULL && PyBytes_Check(stored) && PyBytes_GET_SIZE(stored) == 16) {
                memcpy(v->posted, PyBytes_AS_STRING(stored), 16);
                v->posted_is_uuid = 1;
            } else {
                PyErr_Clear();
                rc = raise_entry_error(ch, "correlation", text_obj);
            }
            Py_XDECREF(stored);
        }
        Py_DECREF(kind_obj);
        Py_DECREF(text_obj); /* the UTF-8 buffer lives as long as the key object does */
        if (rc < 0) {
            DROP_KEYS();
            return -1;
        }
        keys_len += 3 + (size_t)v->text_len;
        postings_len += 3 + (v->posted_is_uuid ? 16 : (size_t)v->text_len);
    }

    uint64_t head = atomic_load_explicit(&ch->head, memory_order_relaxed);
    uint64_t taken = atomic_load_explicit(&ch->taken, memory_order_acquire);
    if (head - taken >= ch->capacity) { /* channel_capacity entries wait */
        DROP_KEYS();
        return 0;
    }
    Py_buffer payload;
    if (PyObject_GetBuffer(payload_obj, &payload, PyBUF_SIMPLE) < 0) {
        DROP_KEYS();
        return -1;
    }
    mml_slot slot;
    memset(&slot, 0, sizeof slot);
    slot.seq = seq;
    slot.ts_publish = ts_publish;
    slot.ts_init = ts_init;
    if ((uint64_t)payload.len > UINT32_MAX) {
        DROP_KEYS();
        PyBuffer_Release(&payload);
        PyErr_SetString(PyExc_OverflowError, "payload larger than 4 GiB");
        return -1;
    }
    slot.payload_len = (uint32_t)payload.len;
    if (digest != NULL && digest != Py_None) {
        if (!PyBytes_Check(digest) || PyBytes_GET_SIZE(digest) != 16) {
            DROP_KEYS();
            PyBuffer_Release(&payload);
            PyErr_SetString(PyExc_ValueError, "entry_hash must be 16 bytes");
            return -1;
        }
        memcpy(slot.digest, PyBytes_AS_STRING(digest), 16);
        slot.has_digest = 1;
    }

    /* headers: correlation and causation ids (None when absent) */
    PyObject *corr = FIELD(headers, headers, 0);
    PyObject *caus = corr != NULL ? FIELD(headers, headers, 1) : NULL;
    if (caus == NULL) {
        Py_XDECREF(corr);
        DROP_KEYS();
        PyBuffer_Release(&payload);
        return -1;
    }
    /* A header id that is no UUID is refused here, at the call: queued, it would fail the
     * writer and with it the session. */
    PyObject *bad_id = NULL;
    if (corr != Py_None) {
        slot.flags |= MML_FLAG_CORRELATION;
        if (uuid_bytes(corr, slot.corr) < 0) bad_id = corr;
    }
    if (bad_id == NULL && caus != Py_None) {
        slot.flags |= MML_FLAG_CAUSATION;
        if (uuid_bytes(caus, slot.caus) < 0) bad_id = caus;
    }
    if (bad_id != NULL) {
        PyErr_Clear();
        raise_entry_error(ch, "header", bad_id);
    }
    Py_DECREF(corr);
    Py_DECREF(caus);
    if (bad_id != NULL) {
        DROP_KEYS();
        goto fail;
    }
    int bad = 0; /* the entry is queued, but fails the writer when it reaches it */

    if (slot.flags & MML_FLAG_CORRELATION) postings_len += 3 + 16;
    if (keys_len > UINT16_MAX) { /* the frame stores keys_len as u16 */
        bad = 1;
        PyErr_SetString(PyExc_OverflowError, "index-key block larger than 65535 bytes");
        if (remember_current(ch, seq) < 0) {
            DROP_KEYS();
            goto fail;
        }
    }

    /* names */
    if (!bad) {
        long pair = pair_index(ch, topic, ptype);
        if (pair < 0) {
            bad = 1;
            if (remember_current(ch, seq) < 0) {
                DROP_KEYS();
                goto fail;
            }
        } else {
            slot.pair = (uint32_t)pair;
        }
    }

    /* copy the bytes into the arena (or an owned buffer for a big payload) */
    size_t need = bad ? 0 : (size_t)payload.len + keys_len + postings_len;
    size_t cost = 0;
    unsigned char *data = NULL;
    if (need > ch->arena_size / 4) {
        data = malloc(need);
        if (data == NULL) {
            DROP_KEYS();
            PyErr_NoMemory();
            goto fail;
        }
    } else if (need) {
        data = arena_reserve(ch, need, &cost);
        if (data == NULL) { /* the arena is full: backpressure, nothing was consumed */
            DROP_KEYS();
            PyBuffer_Release(&payload);
            return 0;
        }
    }
    if (!bad) {
        unsigned char *p = data;
        mml_copy(p, payload.buf, (size_t)payload.len);
        p += payload.len;
        for (Py_ssize_t i = 0; i < nkeys; i++) { /* the frame's key block */
            *p++ = (unsigned char)views[i].kind;
            mml_put_u16(p, (uint16_t)views[i].text_len);
            p += 2;
            mml_copy(p, views[i].text, (size_t)views[i].text_len);
            p += views[i].text_len;
        }
        for (Py_ssize_t i = 0; i < nkeys; i++) { /* postings, in the pure path's order */
            size_t n = views[i].posted_is_uuid ? 16 : (size_t)views[i].text_len;
            *p++ = (unsigned char)views[i].kind;
            mml_put_u16(p, (uint16_t)n);
            p += 2;
            mml_copy(p, views[i].posted_is_uuid ? (const char *)views[i].posted : views[i].text,
                     n);
            p += n;
        }
        if (slot.flags & MML_FLAG_CORRELATION) { /* the header's correlation id, raw */
            *p++ = MML_KIND_CORRELATION;
            mml_put_u16(p, 16);
            p += 2;
            memcpy(p, slot.corr, 16);
        }
        slot.keys_len = (uint32_t)keys_len;
        slot.postings_len = (uint32_t)postings_len;
    } else {
        slot.error = MML_SLOT_BAD;
        slot.flags = 0;
    }
    DROP_KEYS();
    PyBuffer_Release(&payload);
    slot.data = data;
    slot.arena_cost = cost;
    slot.owned = need > 0 && cost == 0;
    ch->slots[head & ch->mask] = slot;
    /* Publish: the writer's acquire load of head sees the slot and its bytes. */
    atomic_store_explicit(&ch->head, head + 1, memory_order_seq_cst);
    int waiting = atomic_load_explicit(&ch->waiting, memory_order_seq_cst);
    if (waiting == WAIT_EMPTY ||
        (waiting == WAIT_FILL && head + 1 >= atomic_load(&ch->fill_target))) {
        pthread_mutex_lock(&ch->lock);
        pthread_cond_signal(&ch->cond);
        pthread_mutex_unlock(&ch->lock);
    }
    ch->accepted = seq;
    return 1;

fail:
    PyBuffer_Release(&payload);
    return -1;
}

/* submit(seq, ts_publish, topic, payload_type, payload, ts_init, headers, index_keys) -> bool:
 * the writer's slow paths (a stalled producer, close's last entry) with the seq they chose. */
static PyObject *channel_submit(mml_channel *ch, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8 && nargs != 9) {
        PyErr_SetString(PyExc_TypeError,
                        "submit(seq, ts_publish, topic, payload_type, payload, ts_init, "
                        "headers, index_keys[, entry_hash])");
        return NULL;
    }
    uint64_t seq = PyLong_AsUnsignedLongLong(args[0]);
    uint64_t ts_publish = PyLong_AsUnsignedLongLong(args[1]);
    uint64_t ts_init = PyLong_AsUnsignedLongLong(args[5]);
    if (PyErr_Occurred()) return NULL;
    int rc = submit_entry(ch, seq, ts_publish, args[2], args[3], args[4], ts_init, args[6],
                          args[7], nargs == 9 ? args[8] : NULL);
    if (rc < 0) return NULL;
    return PyBool_FromLong(rc);
}

/* Queue item (an AppendEntry: .entry, .index_keys) as submit(...) would with the entry's own
 * seq, times and hash: 1 queued, 0 no room or its seq is not `expected`, -1 a Python error. */
static int submit_append_entry(mml_channel *ch, PyObject *item, uint64_t expected) {
    PyObject *entry = FIELD(append, item, 0);
    if (entry == NULL) return -1;
    PyObject *keys = FIELD(append, item, 1);
    PyObject *f[8] = {NULL}; /* seq ts_init ts_publish topic payload_type payload headers hash */
    int rc = -1;
    if (keys == NULL) goto done;
    for (int i = 0; i < 8; i++)
        if ((f[i] = FIELD(entry, entry, i)) == NULL) goto done;
    uint64_t seq = PyLong_AsUnsignedLongLong(f[0]);
    uint64_t ts_init = PyLong_AsUnsignedLongLong(f[1]);
    uint64_t ts_publish = PyLong_AsUnsignedLongLong(f[2]);
    if (PyErr_Occurred()) goto done;
    rc = 0;
    if (seq != expected) goto done; /* out of order: the caller raises OutOfOrderError */
    rc = submit_entry(ch, seq, ts_publish, f[3], f[4], f[5], ts_init, f[6], keys, f[7]);
done:
    for (int i = 0; i < 8; i++) Py_XDECREF(f[i]);
    Py_XDECREF(keys);
    Py_DECREF(entry);
    return rc;
}

/* submit_entries(items, start, first_seq) -> count: append_batch's loop - queue items[start:]
 * (a list of AppendEntry) until one does not fit or its seq is not first_seq + its position
 * (that one is not queued); returns how many were queued. */
static PyObject *channel_submit_entries(mml_channel *ch, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "submit_entries(items: list, start: int, first_seq: int)");
        return NULL;
    }
    PyObject *items = args[0];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    uint64_t expected = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    if (start < 0) start = 0;
    Py_ssize_t i = start;
    /* PyList_GET_SIZE each time round: attribute access on a user subclass could run code
     * that shrinks the list, and a shrunk list just ends the loop. */
    for (; i < PyList_GET_SIZE(items); i++, expected++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_INCREF(item);
        int rc = submit_append_entry(ch, item, expected);
        Py_DECREF(item);
        if (rc < 0) return NULL;
        if (rc == 0) break;
    }
    return PyLong_FromSsize_t(i - start);
}

/* entry_hash(seq, ts_init, ts_publish, topic, payload_type, payload, headers) -> 16 bytes:
 * compute_entry_hash (entry_hash.py) in one call - the canonical stream hashed by parts, the
 * header ids read through the slot caches. Any odd input raises (the Python twin then decides
 * the answer or the error). */
PyObject *mml_py_entry_hash(PyObject *Py_UNUSED(module), PyObject *const *args,
                            Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "entry_hash(seq, ts_init, ts_publish, topic, "
                                         "payload_type, payload, headers)");
        return NULL;
    }
    uint64_t seq = PyLong_AsUnsignedLongLong(args[0]);
    uint64_t ts_init = PyLong_AsUnsignedLongLong(args[1]);
    uint64_t ts_publish = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t topic_len, type_len;
    const char *topic = PyUnicode_AsUTF8AndSize(args[3], &topic_len);
    const char *ptype = topic != NULL ? PyUnicode_AsUTF8AndSize(args[4], &type_len) : NULL;
    if (ptype == NULL) return NULL;
    unsigned char ids[2][16];
    unsigned flags = 0;
    for (int i = 0; i < 2; i++) {
        PyObject *id = FIELD(headers, args[6], i);
        if (id == NULL) return NULL;
        int rc = id == Py_None ? 0 : uuid_bytes(id, ids[i]);
        if (id != Py_None) flags |= i == 0 ? MML_FLAG_CORRELATION : MML_FLAG_CAUSATION;
        Py_DECREF(id);
        if (rc < 0) return NULL;
    }
    Py_buffer payload;
    if (PyObject_GetBuffer(args[5], &payload, PyBUF_SIMPLE) < 0) return NULL;
    unsigned char head[MML_STREAM_HEAD], tail[MML_STREAM_TAIL_MAX], lens[3][8];
    mml_stream_head(head, seq, ts_init, ts_publish);
    mml_put_u64be(lens[0], (uint64_t)topic_len);
    mml_put_u64be(lens[1], (uint64_t)type_len);
    mml_put_u64be(lens[2], (uint64_t)payload.len);
    size_t tail_len = mml_stream_tail(tail, flags, ids[0], ids[1]);
    mml_part parts[8] = {{head, MML_STREAM_HEAD},   {lens[0], 8},      {topic, (size_t)topic_len},
                         {lens[1], 8},              {ptype, (size_t)type_len}, {lens[2], 8},
                         {payload.buf, (size_t)payload.len}, {tail, tail_len}};
    unsigned char out[16];
    mml_entry_hash_parts(parts, 8, out);
    PyBuffer_Release(&payload);
    return PyBytes_FromStringAndSize((const char *)out, 16);
}

/* The writer's clock: the native wall clock when it is one (no Python call), else now_ns(). */
static int clock_now(mml_channel *ch, uint64_t *now) {
    if (ch->wall != NULL) {
        *now = mml_wallclock_now(ch->wall);
        return 0;
    }
    PyObject *value = PyObject_CallNoArgs(ch->now_ns);
    if (value == NULL) return -1;
    *now = PyLong_AsUnsignedLongLong(value);
    Py_DECREF(value);
    return PyErr_Occurred() ? -1 : 0;
}

/* submit_fields(topic, payload_type, payload, ts_init, headers, index_keys) -> seq, 0 when the
 * channel is full, -1 when the writer does not take entries (closed, halted, failed): the
 * capture hot path, EventStoreWriter.submit_fields in one call. The seq is the next one, the
 * time the clock's; the GIL serialises producers (nothing here releases it). */
PyObject *mml_channel_submit_fields(mml_channel *ch, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "submit_fields(topic, payload_type, payload, ts_init, "
                                         "headers, index_keys)");
        return NULL;
    }
    if (!ch->open) return PyLong_FromLong(-1);
    uint64_t head = atomic_load_explicit(&ch->head, memory_order_relaxed);
    uint64_t taken = atomic_load_explicit(&ch->taken, memory_order_acquire);
    if (head - taken >= ch->capacity) return PyLong_FromLong(0);
    uint64_t now, ts_init, seq = ch->accepted + 1;
    if (clock_now(ch, &now) < 0) return NULL;
    if (args[3] == Py_None) {
        ts_init = now;
    } else {
        ts_init = PyLong_CheckExact(args[3]) ? PyLong_AsUnsignedLongLong(args[3]) : UINT64_MAX;
        if (PyErr_Occurred()) PyErr_Clear();
        if (ts_init > (uint64_t)INT64_MAX) {
            raise_entry_error(ch, "ts", args[3]);
            return NULL;
        }
    }
    int rc =
        submit_entry(ch, seq, now, args[0], args[1], args[2], ts_init, args[4], args[5], NULL);
    if (rc < 0) return NULL;
    return PyLong_FromUnsignedLongLong(rc ? seq : 0);
}

static PyObject *channel_accepted(mml_channel *ch, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromUnsignedLongLong(ch->accepted);
}

/* set_accepted(n): the writer's count of accepted entries (its starting high-watermark). */
static PyObject *channel_set_accepted(mml_channel *ch, PyObject *value) {
    uint64_t n = PyLong_AsUnsignedLongLong(value);
    if (PyErr_Occurred()) return NULL;
    ch->accepted = n;
    Py_RETURN_NONE;
}

/* set_open(flag): submit_fields takes entries only while the writer is OPEN. */
static PyObject *channel_set_open(mml_channel *ch, PyObject *flag) {
    int open = PyObject_IsTrue(flag);
    if (open < 0) return NULL;
    ch->open = open;
    Py_RETURN_NONE;
}

/* --- the writer's side ------------------------------------------------------------------- */

const mml_slot *mml_channel_slot(const mml_channel *ch, uint64_t index) {
    return &ch->slots[index & ch->mask];
}

uint64_t mml_channel_tail(mml_channel *ch) {
    return atomic_load_explicit(&ch->tail, memory_order_relaxed);
}

uint64_t mml_channel_taken(mml_channel *ch) {
    return atomic_load_explicit(&ch->taken, memory_order_relaxed);
}

/* Sleep on the condition until `ready()` or the deadline; the caller holds ch->lock. */
static int timed_wait(mml_channel *ch, const struct timespec *deadline) {
    if (deadline == NULL) return pthread_cond_wait(&ch->cond, &ch->lock);
    return pthread_cond_timedwait(&ch->cond, &ch->lock, deadline);
}

/* wait(max_batch, latency, timeout) -> n: take up to max_batch waiting entries.
 * Blocks (GIL released) until one entry waits, or `timeout` seconds pass (timeout < 0: no
 * limit), or wake() is called; then waits up to `latency` for the batch to fill. Returns the
 * number of entries handed to the writer (0: timeout or wake with nothing waiting). */
/* wait(max_batch, latency, timeout): take up to max_batch waiting entries for the writer (the
 * caller holds no GIL). Blocks until one entry waits, or `timeout` seconds pass (timeout < 0:
 * no limit), or wake() is called; then waits up to `latency` for the batch to fill. Returns the
 * number of entries handed over (0: timeout, or a wake with nothing waiting); *woken says
 * whether a wake was seen. */
uint64_t mml_channel_wait(mml_channel *ch, uint64_t max_batch, double latency, double timeout,
                          int *woken) {
    uint64_t taken = atomic_load_explicit(&ch->taken, memory_order_relaxed);
    uint64_t avail;
    struct timespec until;
    if (timeout >= 0) deadline_after(&until, timeout);
    avail = atomic_load_explicit(&ch->head, memory_order_acquire) - taken;
    if (avail == 0 && !atomic_load(&ch->wake)) {
        pthread_mutex_lock(&ch->lock);
        atomic_store(&ch->waiting, WAIT_EMPTY);
        for (;;) {
            avail = atomic_load(&ch->head) - taken;
            if (avail || atomic_load(&ch->wake)) break;
            if (timed_wait(ch, timeout >= 0 ? &until : NULL) == ETIMEDOUT) {
                avail = atomic_load(&ch->head) - taken;
                break;
            }
        }
        atomic_store(&ch->waiting, 0);
        pthread_mutex_unlock(&ch->lock);
    }
    if (avail && avail < max_batch && !atomic_load(&ch->wake) && latency > 0) {
        /* Group commit: give the batch the latency window to fill. */
        struct timespec window;
        deadline_after(&window, latency);
        pthread_mutex_lock(&ch->lock);
        atomic_store(&ch->fill_target, taken + max_batch);
        atomic_store(&ch->waiting, WAIT_FILL);
        for (;;) {
            avail = atomic_load(&ch->head) - taken;
            if (avail >= max_batch || atomic_load(&ch->wake) || !before(&window))
                break;
            if (timed_wait(ch, &window) == ETIMEDOUT) {
                avail = atomic_load(&ch->head) - taken;
                break;
            }
        }
        atomic_store(&ch->waiting, 0);
        pthread_mutex_unlock(&ch->lock);
    }
    *woken = atomic_exchange(&ch->wake, 0);
    if (avail > max_batch) avail = max_batch;
    atomic_store_explicit(&ch->taken, taken + avail, memory_order_release);
    return avail;
}

/* release: the taken batch was committed; its slots and bytes are free (no GIL needed). */
void mml_channel_release(mml_channel *ch) {
    uint64_t tail = atomic_load_explicit(&ch->tail, memory_order_relaxed);
    uint64_t taken = atomic_load_explicit(&ch->taken, memory_order_relaxed);
    size_t arena = 0;
    for (uint64_t i = tail; i < taken; i++) {
        mml_slot *slot = &ch->slots[i & ch->mask];
        if (slot->owned) free(slot->data); /* the buffer of a big payload */
        arena += slot->arena_cost;
        slot->data = NULL;
        slot->owned = 0;
    }
    /* Release: the producer may reuse these bytes and slots only after we are done. */
    atomic_fetch_sub_explicit(&ch->arena_used, arena, memory_order_release);
    atomic_store_explicit(&ch->tail, taken, memory_order_release);
}

/* wake(): a flush or a control request: the writer stops waiting for a fuller batch. */
static PyObject *channel_wake(mml_channel *ch, PyObject *Py_UNUSED(ignored)) {
    atomic_store(&ch->wake, 1);
    pthread_mutex_lock(&ch->lock);
    pthread_cond_signal(&ch->cond);
    pthread_mutex_unlock(&ch->lock);
    Py_RETURN_NONE;
}

/* has_room(): a submit would not wait (the anchor request obeys the same rule). */
static PyObject *channel_has_room(mml_channel *ch, PyObject *Py_UNUSED(ignored)) {
    uint64_t head = atomic_load(&ch->head), taken = atomic_load(&ch->taken);
    return PyBool_FromLong(head - taken < ch->capacity);
}

/* take_error(seq) -> the exception recorded for a bad entry (removed), or None. */
static PyObject *channel_take_error(mml_channel *ch, PyObject *seq) {
    PyObject *error = PyDict_GetItemWithError(ch->errors, seq);
    if (error == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    Py_INCREF(error);
    if (PyDict_DelItem(ch->errors, seq) < 0) {
        Py_DECREF(error);
        return NULL;
    }
    return error;
}

static PyObject *channel_get_capacity(mml_channel *ch, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(ch->capacity);
}

static PyObject *channel_get_arena_bytes(mml_channel *ch, void *Py_UNUSED(closure)) {
    return PyLong_FromSize_t(ch->arena_size);
}

static PyGetSetDef channel_getset[] = {
    {"capacity", (getter)channel_get_capacity, NULL, "entries that may wait", NULL},
    {"arena_bytes", (getter)channel_get_arena_bytes, NULL, "bytes of the copy arena", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *channel_counts(mml_channel *ch, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("KKK", (unsigned long long)atomic_load(&ch->head),
                         (unsigned long long)atomic_load(&ch->taken),
                         (unsigned long long)atomic_load(&ch->tail));
}

/* --- life cycle -------------------------------------------------------------------------- */

static int channel_init(mml_channel *ch, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"capacity", "max_batch", "arena_bytes", "intern", "posting_key",
                             "make_error", "clock", NULL};
    Py_ssize_t capacity, max_batch, arena_bytes;
    PyObject *intern, *posting_key, *make_error, *clock;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nnnOOOO", kwlist, &capacity, &max_batch,
                                     &arena_bytes, &intern, &posting_key, &make_error, &clock))
        return -1;
    if (ch->slots != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Channel is already initialised");
        return -1;
    }
    if (capacity < 1 || max_batch < 1 || arena_bytes < 4096) {
        PyErr_SetString(PyExc_ValueError, "capacity, max_batch >= 1 and arena_bytes >= 4096");
        return -1;
    }
    uint64_t nslots = round_pow2((uint64_t)capacity + (uint64_t)max_batch);
    ch->slots = calloc(nslots, sizeof(mml_slot));
    ch->arena = malloc((size_t)arena_bytes);
    if (ch->slots == NULL || ch->arena == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    ch->mask = nslots - 1;
    ch->capacity = (uint64_t)capacity;
    ch->arena_size = (size_t)arena_bytes;
    ch->pair_ids = PyDict_New();
    ch->errors = PyDict_New();
    if (ch->pair_ids == NULL || ch->errors == NULL) return -1;
    Py_INCREF(intern);
    ch->intern = intern;
    Py_INCREF(posting_key);
    ch->posting_key = posting_key;
    Py_INCREF(make_error);
    ch->make_error = make_error;
    /* The writer's clock: a native WallClock is read without calling into Python. */
    if (PyObject_TypeCheck(clock, &mml_WallClockType)) {
        Py_INCREF(clock);
        ch->wall = (mml_wallclock *)clock;
    } else {
        ch->now_ns = PyObject_GetAttrString(clock, "now_ns");
        if (ch->now_ns == NULL) return -1;
    }
    ch->open = 1;
    pthread_mutex_init(&ch->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&ch->cond, &attr);
    pthread_condattr_destroy(&attr);
    ch->closed = 1; /* "closed" here means: the mutex and cond exist and need destroying */
    return 0;
}

static void channel_dealloc(mml_channel *ch) {
    if (ch->slots != NULL) {
        uint64_t head = atomic_load(&ch->head);
        for (uint64_t i = atomic_load(&ch->tail); i < head; i++) {
            mml_slot *slot = &ch->slots[i & ch->mask];
            if (slot->owned) free(slot->data);
        }
        free(ch->slots);
    }
    free(ch->arena);
    for (uint32_t c = 0; c < MML_PAIR_CHUNKS && ch->chunks[c] != NULL; c++) {
        for (uint32_t i = 0; i < MML_PAIR_CHUNK; i++) free(ch->chunks[c][i].names);
        free(ch->chunks[c]);
    }
    Py_XDECREF(ch->pair_ids);
    Py_XDECREF(ch->errors);
    Py_XDECREF(ch->intern);
    Py_XDECREF(ch->posting_key);
    Py_XDECREF(ch->make_error);
    Py_XDECREF(ch->now_ns);
    Py_XDECREF((PyObject *)ch->wall);
    if (ch->closed) {
        pthread_mutex_destroy(&ch->lock);
        pthread_cond_destroy(&ch->cond);
    }
    Py_TYPE(ch)->tp_free((PyObject *)ch);
}

static PyMethodDef channel_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))channel_submit, METH_FASTCALL,
     "submit(seq, ts_publish, topic, payload_type, payload, ts_init, headers, index_keys) -> "
     "bool: copy one entry in; False when the channel is full (nothing taken)."},
    {"submit_entries", (PyCFunction)(void (*)(void))channel_submit_entries, METH_FASTCALL,
     "submit_entries(items, start, first_seq) -> how many of the AppendEntry list "
     "items[start:] were queued (they stop at the first that does not fit or is out of order)."},
    {"submit_fields", (PyCFunction)(void (*)(void))mml_channel_submit_fields, METH_FASTCALL,
     "submit_fields(topic, payload_type, payload, ts_init, headers, index_keys) -> seq (0: "
     "full, -1: not open)"},
    {"accepted", (PyCFunction)channel_accepted, METH_NOARGS, "accepted() -> last seq taken"},
    {"set_accepted", (PyCFunction)channel_set_accepted, METH_O, "set_accepted(n)"},
    {"set_open", (PyCFunction)channel_set_open, METH_O, "set_open(flag)"},
    {"wake", (PyCFunction)channel_wake, METH_NOARGS,
     "wake(): stop waiting for a fuller batch (flush or control request)."},
    {"has_room", (PyCFunction)channel_has_room, METH_NOARGS, "has_room() -> bool"},
    {"take_error", (PyCFunction)channel_take_error, METH_O,
     "take_error(seq) -> the exception of a bad entry, or None."},
    {"counts", (PyCFunction)channel_counts, METH_NOARGS, "counts() -> (head, taken, tail)"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject mml_ChannelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmaplog.storage.core._native.Channel",
    .tp_basicsize = sizeof(mml_channel),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The submit channel: preallocated slots and an arena between two threads.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)channel_init,
    .tp_dealloc = (destructor)channel_dealloc,
    .tp_methods = channel_methods,
    .tp_getset = channel_getset,
};

int mml_channel_init_strings(void) {
#define INTERN(kind) mml_intern_names(kind##_names, kind##_fields, NFIELDS(kind))
    return INTERN(append) < 0 || INTERN(entry) < 0 || INTERN(headers) < 0 || INTERN(key) < 0 ||
                   INTERN(uuid) < 0
               ? -1
               : 0;
#undef INTERN
}

/* --- WallClock: MonotonicWallClock in C ------------------------------------------------------
 * Python twin: mmaplog/engine/clock.py MonotonicWallClock. Wall-clock nanoseconds that never
 * repeat or go back: a reading at or before the last one gives the last + 1. A compare-and-swap
 * keeps it exact across threads without the GIL. */

uint64_t mml_wallclock_now(mml_wallclock *clock) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    uint64_t last = atomic_load_explicit(&clock->last, memory_order_relaxed);
    for (;;) {
        uint64_t next = now > last ? now : last + 1;
        if (atomic_compare_exchange_weak_explicit(&clock->last, &last, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return next;
    }
}

static PyObject *wallclock_now_ns(mml_wallclock *clock, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromUnsignedLongLong(mml_wallclock_now(clock));
}

static PyObject *wallclock_last(mml_wallclock *clock, PyObject *Py_UNUSED(ignored)) {
    return PyLong_FromUnsignedLongLong(atomic_load(&clock->last));
}

static PyMethodDef wallclock_methods[] = {
    {"now_ns", (PyCFunction)wallclock_now_ns, METH_NOARGS, "now_ns() -> int"},
    {"last", (PyCFunction)wallclock_last, METH_NOARGS, "last() -> the last reading given"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject mml_WallClockType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmaplog.storage.core._native.WallClock",
    .tp_basicsize = sizeof(mml_wallclock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Wall-clock nanoseconds that never repeat or go back (thread-safe).",
    .tp_new = PyType_GenericNew,
    .tp_methods = wallclock_methods,
};
