/* The replay engine's hot loop (replay/engine.py: ReplayEngine._dispatch_native): pull an
 * entry, decode its payload with the decoder cached for its type, count it, hand (entry,
 * message) to the one handler. Everything off that path goes back to Python with the entry
 * it concerns: a type without a cached decoder, a decoder or a handler that raised, the
 * source raising, a stop request. Python then does for that entry what its own loop does, so
 * both paths count and report alike (tests/test_replay_native_dispatch.py). */
#include "native.h"

/* What `dispatch_entries` stopped on. */
enum {
    DISPATCH_LIMIT = 0,   /* `limit` entries done */
    DISPATCH_END = 1,     /* the source is exhausted */
    DISPATCH_SLOW = 2,    /* `entry` was pulled, not decoded: Python's loop does it all */
    DISPATCH_DECODE = 3,  /* decoding `entry` raised `exc`; it is not counted */
    DISPATCH_HANDLER = 4, /* the handler raised `exc` on `entry`, which was counted */
    DISPATCH_SOURCE = 5,  /* pulling the next entry raised `exc` */
    DISPATCH_STOP = 6,    /* the stop flag was set before the next entry was pulled */
    DISPATCH_SIGNAL = 7,  /* a signal handler raised `exc` before the next entry was pulled */
};

static PyObject *str_payload_type, *str_payload, *one;

/* The current exception, normalized, with its traceback attached (3.11 has no
 * PyErr_GetRaisedException). */
static PyObject *take_exception(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        value = Py_NewRef(Py_None);
    } else if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* dispatch_entries(source, limit, cache, handler, stop)
 *     -> (status, done, decoded, generic, entry, exc, first, last)
 * source: an iterator of entries; cache: {payload_type: (decode, kind, [count])}, kind 0
 * (typed) or 1 (generic) — anything else is left to Python; handler(entry, message);
 * stop: a buffer whose first byte, once non-zero, ends the loop before the next entry.
 * done counts the entries decoded, counted and handed to the handler (the one whose handler
 * raised included), first and last the first and last of them (None when done is 0);
 * decoded + generic == done. */
static PyObject *py_dispatch_entries(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *source, *cache, *handler, *stop_obj;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OnO!OO", &source, &limit, &PyDict_Type, &cache, &handler,
                          &stop_obj))
        return NULL;
    if (!PyIter_Check(source)) {
        PyErr_SetString(PyExc_TypeError, "source must be an iterator");
        return NULL;
    }
    if (str_payload_type == NULL) {
        str_payload_type = PyUnicode_InternFromString("payload_type");
        str_payload = PyUnicode_InternFromString("payload");
        one = PyLong_FromLong(1);
        if (str_payload_type == NULL || str_payload == NULL || one == NULL) return NULL;
    }
    Py_buffer stop;
    if (PyObject_GetBuffer(stop_obj, &stop, PyBUF_SIMPLE) < 0) return NULL;
    if (stop.len < 1) {
        PyBuffer_Release(&stop);
        PyErr_SetString(PyExc_ValueError, "stop must hold at least one byte");
        return NULL;
    }
    const volatile unsigned char *stop_flag = stop.buf;
    Py_ssize_t done = 0, decoded = 0, generic = 0;
    int status = DISPATCH_LIMIT;
    PyObject *entry = NULL, *exc = NULL, *first = NULL, *last = NULL;
    while (done < limit) {
        if (*stop_flag) {
            status = DISPATCH_STOP;
            break;
        }
        if ((done & 1023) == 1023 && PyErr_CheckSignals() < 0) {
            status = DISPATCH_SIGNAL;
            exc = take_exception();
            break;
        }
        entry = PyIter_Next(source);
        if (entry == NULL) {
            if (PyErr_Occurred()) {
                status = DISPATCH_SOURCE;
                exc = take_exception();
            } else {
                status = DISPATCH_END;
            }
            break;
        }
        PyObject *ptype = PyObject_GetAttr(entry, str_payload_type);
        if (ptype == NULL) {
            PyErr_Clear();
            status = DISPATCH_SLOW;
            break;
        }
        PyObject *found = PyDict_GetItemWithError(cache, ptype); /* borrowed */
        Py_DECREF(ptype);
        if (found == NULL) {
            PyErr_Clear();
            status = DISPATCH_SLOW;
            break;
        }
        if (!PyTuple_CheckExact(found) || PyTuple_GET_SIZE(found) != 3) {
            status = DISPATCH_SLOW;
            break;
        }
        PyObject *fn = PyTuple_GET_ITEM(found, 0), *kind_obj = PyTuple_GET_ITEM(found, 1),
                 *cell = PyTuple_GET_ITEM(found, 2);
        long kind = PyLong_CheckExact(kind_obj) ? PyLong_AsLong(kind_obj) : -1;
        if (fn == Py_None || (kind != 0 && kind != 1) || !PyList_CheckExact(cell) ||
            PyList_GET_SIZE(cell) != 1 || !PyLong_CheckExact(PyList_GET_ITEM(cell, 0))) {
            PyErr_Clear();
            status = DISPATCH_SLOW;
            break;
        }
        /* The tuple and its items outlive the calls below even if a handler empties the
         * cache: hold them. */
        Py_INCREF(found);
        PyObject *payload = PyObject_GetAttr(entry, str_payload);
        PyObject *message = payload == NULL ? NULL : PyObject_CallOneArg(fn, payload);
        Py_XDECREF(payload);
        if (message == NULL) {
            Py_DECREF(found);
            status = DISPATCH_DECODE;
            exc = take_exception();
            break;
        }
        /* Counted in one stretch without a call into Python, as the Python loop does. The
         * decoder ran Python code: the cell (held through `found`) is checked again first. */
        PyObject *count = NULL;
        if (PyList_CheckExact(cell) && PyList_GET_SIZE(cell) == 1)
            count = PyNumber_Add(PyList_GET_ITEM(cell, 0), one);
        else
            PyErr_SetString(PyExc_RuntimeError, "a decoder changed the replay's counters");
        int counted = count != NULL && PyList_SetItem(cell, 0, count) == 0; /* steals count */
        Py_DECREF(found);
        if (!counted) {
            Py_DECREF(message);
            Py_CLEAR(entry);
            break; /* raised below */
        }
        if (kind == 0)
            decoded++;
        else
            generic++;
        done++;
        if (first == NULL) first = Py_NewRef(entry);
        Py_XSETREF(last, Py_NewRef(entry));
        PyObject *call[2] = {entry, message};
        PyObject *result = PyObject_Vectorcall(handler, call, 2, NULL);
        Py_DECREF(message);
        if (result == NULL) {
            status = DISPATCH_HANDLER;
            exc = take_exception();
            break;
        }
        Py_DECREF(result);
        Py_CLEAR(entry);
    }
    PyBuffer_Release(&stop);
    PyObject *out = NULL;
    if (!PyErr_Occurred())
        out = Py_BuildValue("innnOOOO", status, done, decoded, generic,
                            entry == NULL ? Py_None : entry, exc == NULL ? Py_None : exc,
                            first == NULL ? Py_None : first, last == NULL ? Py_None : last);
    Py_XDECREF(entry);
    Py_XDECREF(exc);
    Py_XDECREF(first);
    Py_XDECREF(last);
    return out;
}

PyMethodDef mml_dispatch_methods[] = {
    {"dispatch_entries", py_dispatch_entries, METH_VARARGS,
     "dispatch_entries(source, limit, cache, handler, stop) -> (status, done, decoded, "
     "generic, entry, exc, first, last): the replay engine's decode-count-dispatch loop."},
    {NULL, NULL, 0, NULL},
};
