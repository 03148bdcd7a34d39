/*
 * capture.c - Capture: the engine thread's hot path of BusCaptureAdapter.capture_seq in C.
 *
 * Python twin (the specification): mmaplog/engine/capture.py, BusCaptureAdapter.capture_seq,
 * _encode_submit and _remember. One call looks the message's class up in the registry's dict,
 * checks and records the identity dedup window (under the adapter's own dedup lock), calls the
 * registration's encoder and headers extractor and copies the entry into the Channel
 * (Channel.submit_fields, channel.c) without a Python frame in between.
 *
 * Capture.capture(message, topic, headers, ts_init) answers, and Python finishes the rest:
 *   int > 0     the seq the entry was given (the identity, if any, is remembered);
 *   0           the identity was seen in the window: not captured;
 *   -1          the class is not registered: nothing was called (Python counts / warns);
 *   Exception   the encoder, headers or identity extractor raised it (Python raises
 *               CaptureEncodeError from it); the dedup lock is released;
 *   tuple       (payload_type, payload, headers, index_keys, identity): the channel refused
 *               the entry (full, or the writer not OPEN). Python submits it through
 *               EventStoreWriter.submit_fields (stall, halt, closed errors). When identity is
 *               not None THE DEDUP LOCK IS STILL HELD by this thread and Python releases it,
 *               so that check, submit and remember stay one critical section as in Python.
 * Any other error (a BaseException from a callable, or one Python raises outside its encode
 * stage) propagates as is, the lock released.
 *
 * Everything here runs with the GIL held: the callables are Python objects.
 */
#include "fields.h"
#include "native.h"

static PyObject *str_payload_type, *str_payload, *str_index_keys, *str_acquire, *str_release,
    *str_append, *str_popleft;
static PyObject *invalid_entry; /* mmaplog.errors.InvalidEntryError, imported by the first Capture */

/* A registration's fields (capture.py _Registration, a __slots__ class), read per capture
 * through a slot-offset cache (fields.h). Under the GIL. */
enum { REG_IDENTITY, REG_STRUCT_FAST, REG_PAYLOAD_TYPE, REG_ENCODER, REG_HEADERS, REG_NFIELDS };
static PyObject *reg_names[REG_NFIELDS];
static mml_fieldcache reg_cache;
#define REG_FIELD(reg, i) mml_field(&reg_cache, (reg), reg_names, REG_NFIELDS, (i))

typedef struct {
    PyObject_HEAD
    PyObject *entries;       /* dict: class -> _Registration (the registry's dict, shared) */
    mml_channel *channel;    /* the writer's channel */
    PyObject *empty_headers; /* Headers.empty(), for a registration without an extractor */
    PyObject *lock;          /* the adapter's _dedup_lock */
    PyObject *recent;        /* the adapter's deque of identities, oldest first */
    PyObject *recent_set;    /* the adapter's set of the same identities */
    Py_ssize_t window;       /* DEDUP_WINDOW */
} mml_capture;

static int capture_init(mml_capture *self, PyObject *args, PyObject *kwds) {
    PyObject *entries, *channel, *empty_headers, *lock, *recent, *recent_set;
    Py_ssize_t window;
    static char *kwlist[] = {"entries", "channel",    "empty_headers", "lock",
                             "recent",  "recent_set", "window",        NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!OOOO!n", kwlist, &PyDict_Type, &entries,
                                     &mml_ChannelType, &channel, &empty_headers, &lock, &recent,
                                     &PySet_Type, &recent_set, &window))
        return -1;
    if (invalid_entry == NULL) {
        PyObject *errors = PyImport_ImportModule("mmaplog.errors");
        if (errors == NULL) return -1;
        invalid_entry = PyObject_GetAttrString(errors, "InvalidEntryError");
        Py_DECREF(errors);
        if (invalid_entry == NULL) return -1;
    }
    if (window < 1) {
        PyErr_SetString(PyExc_ValueError, "window must be at least 1");
        return -1;
    }
    Py_XSETREF(self->entries, Py_NewRef(entries));
    Py_XSETREF(self->channel, (mml_channel *)Py_NewRef(channel));
    Py_XSETREF(self->empty_headers, Py_NewRef(empty_headers));
    Py_XSETREF(self->lock, Py_NewRef(lock));
    Py_XSETREF(self->recent, Py_NewRef(recent));
    Py_XSETREF(self->recent_set, Py_NewRef(recent_set));
    self->window = window;
    return 0;
}

static int capture_traverse(mml_capture *self, visitproc visit, void *arg) {
    Py_VISIT(self->entries);
    Py_VISIT(self->channel);
    Py_VISIT(self->empty_headers);
    Py_VISIT(self->lock);
    Py_VISIT(self->recent);
    Py_VISIT(self->recent_set);
    return 0;
}

static int capture_clear(mml_capture *self) {
    Py_CLEAR(self->entries);
    Py_CLEAR(self->channel);
    Py_CLEAR(self->empty_headers);
    Py_CLEAR(self->lock);
    Py_CLEAR(self->recent);
    Py_CLEAR(self->recent_set);
    return 0;
}

static void capture_dealloc(mml_capture *self) {
    PyObject_GC_UnTrack(self);
    capture_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The pending error, when it is an Exception, taken out and returned (a new reference) as the
 * encode stage's failure; anything else (KeyboardInterrupt, SystemExit) stays raised: NULL.
 * Python's `except Exception` in _encode_submit draws the same line. */
static PyObject *encode_failure(void) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) return NULL;
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* lock.release(), keeping an error already raised (as `with` does when the body raised). If
 * the release itself fails its error replaces the pending one and -1 is returned. */
static int release_lock(mml_capture *self) {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *pending = PyErr_GetRaisedException();
    PyObject *r = PyObject_CallMethodNoArgs(self->lock, str_release);
    if (r == NULL) {
        Py_XDECREF(pending);
        return -1;
    }
    Py_DECREF(r);
    PyErr_SetRaisedException(pending);
    return 0;
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = PyObject_CallMethodNoArgs(self->lock, str_release);
    if (r == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return -1;
    }
    Py_DECREF(r);
    PyErr_Restore(type, value, tb);
    return 0;
#endif
}

/* _remember: append `identity` to the window, forgetting the oldest one when it is full. The
 * caller holds the dedup lock. */
static int remember(mml_capture *self, PyObject *identity) {
    Py_ssize_t n = PyObject_Size(self->recent);
    if (n < 0) return -1;
    if (n >= self->window) {
        PyObject *old = PyObject_CallMethodNoArgs(self->recent, str_popleft);
        if (old == NULL) return -1;
        int rc = PySet_Discard(self->recent_set, old);
        Py_DECREF(old);
        if (rc < 0) return -1;
    }
    PyObject *r = PyObject_CallMethodOneArg(self->recent, str_append, identity);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return PySet_Add(self->recent_set, identity);
}

/* _encode_submit for one registration: see the answers at the top of the file. `identity` is
 * not NULL when the caller holds the dedup lock; it is remembered after a successful submit. */
static PyObject *encode_submit(mml_capture *self, PyObject *reg, PyObject *message,
                               PyObject *topic, PyObject *headers_arg, PyObject *ts_init,
                               PyObject *identity) {
    PyObject *fast = NULL, *encoded = NULL, *payload_type = NULL, *payload = NULL;
    PyObject *index_keys = NULL, *headers = NULL, *result = NULL;

    /* -- the encode stage: an Exception raised here is the encoder's ---------------------- */
    fast = REG_FIELD(reg, REG_STRUCT_FAST);
    if (fast == NULL) goto encode_failed;
    if (fast != Py_None) {
        /* register_struct's encoder unrolled: (msgspec encode, keys or None). The same calls
         * in the same order as its closure: encode(message), then tuple(keys(message)); the
         * registered tag, since EncodedPayload's own payload_type is None. */
        if (!PyTuple_Check(fast) || PyTuple_GET_SIZE(fast) != 2) {
            PyErr_SetString(PyExc_TypeError, "struct_fast must be (encode, keys)");
            goto encode_failed;
        }
        payload = PyObject_CallOneArg(PyTuple_GET_ITEM(fast, 0), message);
        if (payload == NULL) goto encode_failed;
        PyObject *keys_fn = PyTuple_GET_ITEM(fast, 1);
        if (keys_fn == Py_None) {
            index_keys = PyTuple_New(0);
        } else {
            PyObject *keys = PyObject_CallOneArg(keys_fn, message);
            if (keys == NULL) goto encode_failed;
            index_keys = PySequence_Tuple(keys);
            Py_DECREF(keys);
        }
        if (index_keys == NULL) goto encode_failed;
        payload_type = REG_FIELD(reg, REG_PAYLOAD_TYPE);
        if (payload_type == NULL) goto encode_failed;
    } else {
        PyObject *encoder = REG_FIELD(reg, REG_ENCODER);
        if (encoder == NULL) goto encode_failed;
        encoded = PyObject_CallOneArg(encoder, message);
        Py_DECREF(encoder);
        if (encoded == NULL) goto encode_failed;
        /* encoded.payload_type or reg.payload_type */
        PyObject *own = PyObject_GetAttr(encoded, str_payload_type);
        if (own == NULL) goto encode_failed;
        int truth = PyObject_IsTrue(own);
        if (truth < 0) {
            Py_DECREF(own);
            goto encode_failed;
        }
        if (truth) {
            payload_type = own;
        } else {
            Py_DECREF(own);
            payload_type = REG_FIELD(reg, REG_PAYLOAD_TYPE);
            if (payload_type == NULL) goto encode_failed;
        }
    }
    if (headers_arg == Py_None) {
        PyObject *extract = REG_FIELD(reg, REG_HEADERS);
        if (extract == NULL) goto encode_failed;
        if (extract == Py_None) {
            headers = Py_NewRef(self->empty_headers);
            Py_DECREF(extract);
        } else {
            headers = PyObject_CallOneArg(extract, message);
            Py_DECREF(extract);
            if (headers == NULL) goto encode_failed;
        }
    } else {
        headers = Py_NewRef(headers_arg);
    }

    /* -- the submit: errors from here on propagate as they are, as in Python --------------- */
    if (encoded != NULL) {
        /* _encode_submit reads these outside its encode stage */
        payload = PyObject_GetAttr(encoded, str_payload);
        if (payload == NULL) goto done;
        index_keys = PyObject_GetAttr(encoded, str_index_keys);
        if (index_keys == NULL) goto done;
    }
    PyObject *fields[6] = {topic, payload_type, payload, ts_init, headers, index_keys};
    PyObject *seq = mml_channel_submit_fields(self->channel, fields, 6);
    if (seq == NULL) {
        /* an entry the channel refuses at the call (index_keys.check_fields): the pure path's
         * CaptureEncodeError, the adapter still live */
        if (invalid_entry != NULL && PyErr_ExceptionMatches(invalid_entry))
            result = encode_failure();
        goto done;
    }
    long long n = PyLong_AsLongLong(seq); /* the seq, 0 (full) or -1 (not open) */
    if (n == -1 && PyErr_Occurred()) {
        Py_DECREF(seq);
        goto done;
    }
    if (n > 0) {
        if (identity != NULL && remember(self, identity) < 0) {
            Py_DECREF(seq);
            goto done;
        }
        result = seq;
    } else {
        Py_DECREF(seq);
        result = PyTuple_Pack(5, payload_type, payload, headers, index_keys,
                              identity != NULL ? identity : Py_None);
    }
    goto done;

encode_failed:
    result = encode_failure();
done:
    Py_XDECREF(fast);
    Py_XDECREF(encoded);
    Py_XDECREF(payload_type);
    Py_XDECREF(payload);
    Py_XDECREF(index_keys);
    Py_XDECREF(headers);
    return result;
}

/* capture(message, topic, headers, ts_init): capture_seq's hot path; see the top of the file. */
static PyObject *capture_capture(mml_capture *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "capture(message, topic, headers, ts_init)");
        return NULL;
    }
    if (self->entries == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Capture is not initialised");
        return NULL;
    }
    PyObject *message = args[0];
    /* exact class, as EncoderRegistry keys it: a type hashes by identity, so no error here
     * unless the dict itself fails */
    PyObject *reg = PyDict_GetItemWithError(self->entries, (PyObject *)Py_TYPE(message));
    if (reg == NULL) return PyErr_Occurred() ? NULL : PyLong_FromLong(-1);
    Py_INCREF(reg); /* the callables below may re-register the class */

    PyObject *result = NULL;
    PyObject *identity = NULL; /* not NULL: this call holds the dedup lock */
    PyObject *extract = REG_FIELD(reg, REG_IDENTITY);
    if (extract == NULL) goto done;
    if (extract != Py_None) {
        PyObject *id = PyObject_CallOneArg(extract, message);
        Py_DECREF(extract);
        if (id == NULL) {
            result = encode_failure();
            goto done;
        }
        if (id == Py_None) {
            Py_DECREF(id);
        } else {
            PyObject *got = PyObject_CallMethodNoArgs(self->lock, str_acquire);
            if (got == NULL) {
                Py_DECREF(id);
                goto done;
            }
            Py_DECREF(got);
            identity = id; /* the lock is held from here until `done` (or by Python) */
            int seen = PySet_Contains(self->recent_set, identity);
            if (seen != 0) { /* 1: a duplicate; -1: unhashable, raised as Python raises it */
                if (seen > 0) result = PyLong_FromLong(0);
                goto done;
            }
        }
    } else {
        Py_DECREF(extract);
    }
    result = encode_submit(self, reg, message, args[1], args[2], args[3], identity);

done:
    if (identity != NULL) {
        /* A refused entry (a tuple) leaves the lock to Python, which submits the entry and
         * remembers the identity before releasing it; every other answer releases it here. */
        if (result == NULL || !PyTuple_Check(result)) {
            if (release_lock(self) < 0) Py_CLEAR(result);
        }
        Py_DECREF(identity);
    }
    Py_DECREF(reg);
    return result;
}

static PyMethodDef capture_methods[] = {
    {"capture", (PyCFunction)(void (*)(void))capture_capture, METH_FASTCALL,
     "capture(message, topic, headers, ts_init) -> seq, 0 (duplicate), -1 (unregistered), the "
     "encoder's exception, or (payload_type, payload, headers, index_keys, identity) when the "
     "channel refused the entry (the dedup lock then stays held when identity is not None)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject mml_CaptureType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmaplog.storage.core._native.Capture",
    .tp_basicsize = sizeof(mml_capture),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "BusCaptureAdapter's hot path: registry lookup, dedup, encode, channel submit.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)capture_init,
    .tp_dealloc = (destructor)capture_dealloc,
    .tp_traverse = (traverseproc)capture_traverse,
    .tp_clear = (inquiry)capture_clear,
    .tp_methods = capture_methods,
};

int mml_capture_init_strings(void) {
    static const char *const reg_fields[REG_NFIELDS] = {
        [REG_IDENTITY] = "identity", [REG_STRUCT_FAST] = "struct_fast",
        [REG_PAYLOAD_TYPE] = "payload_type", [REG_ENCODER] = "encoder", [REG_HEADERS] = "headers"};
    if (mml_intern_names(reg_names, reg_fields, REG_NFIELDS) < 0) return -1;
    str_payload_type = PyUnicode_InternFromString("payload_type");
    str_payload = PyUnicode_InternFromString("payload");
    str_index_keys = PyUnicode_InternFromString("index_keys");
    str_acquire = PyUnicode_InternFromString("acquire");
    str_release = PyUnicode_InternFromString("release");
    str_append = PyUnicode_InternFromString("append");
    str_popleft = PyUnicode_InternFromString("popleft");
    return (str_payload_type && str_payload && str_index_keys && str_acquire && str_release &&
            str_append && str_popleft)
               ? 0
               : -1;
}
