/*
 * module.c - mmaplog.storage.core._native: the module, its hashing functions and types.
 *
 * Python twins: xxhash's xxh3_64_intdigest / xxh3_128_digest (the hashes, proven equal in
 * tests/test_native_hash.py), the writer's queue (Channel, channel.c) and the framing loop
 * (FrameWriter, framewriter.c), the adapter's capture hot path (Capture, capture.c), the loops of
 * `mmaplog verify` (verify.c).
 */
#include "native.h"
#include "merkle.h"
#include "sha256.h"

int mml_channel_init_strings(void);
extern PyMethodDef mml_reader_methods[]; /* reader.c: the read and verify path */
extern PyMethodDef mml_hix_grow_methods[]; /* hix_grow.c: keys.hix's table placed again */
extern PyMethodDef mml_merkle_methods[]; /* merkle.c: SHA-256 leaves and nodes */
extern PyMethodDef mml_lookup_methods[]; /* lookup.c: a reader's lookup_all and seek_ts */
extern PyMethodDef mml_verify_methods[]; /* verify.c: the loops of `mmaplog verify` */
extern PyMethodDef mml_dispatch_methods[]; /* dispatch.c: the replay engine's loop */

/* The bytes of a buffer, hashed with the GIL released when they are many. */
#define RELEASE_GIL_ABOVE 4096

static PyObject *py_xxh3_64(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer data;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "y*|K", &data, &seed)) return NULL;
    uint64_t h;
    if (data.len > RELEASE_GIL_ABOVE) {
        Py_BEGIN_ALLOW_THREADS
        h = mml_xxh3_64(data.buf, (size_t)data.len, seed);
        Py_END_ALLOW_THREADS
    } else {
        h = mml_xxh3_64(data.buf, (size_t)data.len, seed);
    }
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLongLong(h);
}

static PyObject *py_xxh3_128(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer data;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "y*|K", &data, &seed)) return NULL;
    mml_u128 h;
    if (data.len > RELEASE_GIL_ABOVE) {
        Py_BEGIN_ALLOW_THREADS
        h = mml_xxh3_128(data.buf, (size_t)data.len, seed);
        Py_END_ALLOW_THREADS
    } else {
        h = mml_xxh3_128(data.buf, (size_t)data.len, seed);
    }
    PyBuffer_Release(&data);
    unsigned char out[16];
    mml_u128_canonical(h, out);
    return PyBytes_FromStringAndSize((const char *)out, 16);
}

/* xxh3_128 of several buffers as one stream (no concatenation), for tests of streaming. */
static PyObject *py_xxh3_128_parts(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *parts;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "O|K", &parts, &seed)) return NULL;
    PyObject *seq = PySequence_Fast(parts, "parts must be a sequence of buffers");
    if (seq == NULL) return NULL;
    mml_xxh3_state st;
    mml_xxh3_128_reset(&st, seed);
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        Py_buffer data;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &data, PyBUF_SIMPLE) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        mml_xxh3_update(&st, data.buf, (size_t)data.len);
        PyBuffer_Release(&data);
    }
    Py_DECREF(seq);
    unsigned char out[16];
    mml_u128_canonical(mml_xxh3_128_digest(&st), out);
    return PyBytes_FromStringAndSize((const char *)out, 16);
}

static PyMethodDef module_methods[] = {
    {"xxh3_64", py_xxh3_64, METH_VARARGS, "xxh3_64(data, seed=0) -> int"},
    {"xxh3_128", py_xxh3_128, METH_VARARGS,
     "xxh3_128(data, seed=0) -> 16 bytes (canonical, big-endian)"},
    {"xxh3_128_parts", py_xxh3_128_parts, METH_VARARGS,
     "xxh3_128_parts(parts, seed=0) -> the hash of the parts as one stream"},
    {"entry_hash", (PyCFunction)(void (*)(void))mml_py_entry_hash, METH_FASTCALL,
     "entry_hash(seq, ts_init, ts_publish, topic, payload_type, payload, headers) -> the "
     "16-byte canonical entry hash (entry_hash.py compute_entry_hash)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mmaplog.storage.core._native",
    .m_doc = "mmaplog's native core: xxh3, the submit channel, the batch framer, the checked "
               "read path and the Merkle leaves (SHA-256).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    mml_sha256_setup(0);
    if (mml_channel_init_strings() < 0 || mml_capture_init_strings() < 0) return NULL;
    if (PyType_Ready(&mml_ChannelType) < 0 || PyType_Ready(&mml_FrameWriterType) < 0 ||
        PyType_Ready(&mml_WallClockType) < 0 || PyType_Ready(&mml_CaptureType) < 0 ||
        PyType_Ready(&mml_TreeFollowerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) return NULL;
    if (PyModule_AddFunctions(m, mml_reader_methods) < 0) goto fail;
    if (PyModule_AddFunctions(m, mml_hix_grow_methods) < 0) goto fail;
    if (PyModule_AddFunctions(m, mml_merkle_methods) < 0) goto fail;
    if (PyModule_AddFunctions(m, mml_lookup_methods) < 0) goto fail;
    if (PyModule_AddFunctions(m, mml_verify_methods) < 0) goto fail;
    if (PyModule_AddFunctions(m, mml_dispatch_methods) < 0) goto fail;
    /* the code a checked pass returns for a record naming a symbol id it was not given */
    if (PyModule_AddIntConstant(m, "FRAME_SYMBOL", MML_FRAME_SYMBOL) < 0) goto fail;
    Py_INCREF(&mml_ChannelType);
    if (PyModule_AddObject(m, "Channel", (PyObject *)&mml_ChannelType) < 0) goto fail;
    Py_INCREF(&mml_FrameWriterType);
    if (PyModule_AddObject(m, "FrameWriter", (PyObject *)&mml_FrameWriterType) < 0) goto fail;
    Py_INCREF(&mml_WallClockType);
    if (PyModule_AddObject(m, "WallClock", (PyObject *)&mml_WallClockType) < 0) goto fail;
    Py_INCREF(&mml_TreeFollowerType);
    if (PyModule_AddObject(m, "TreeFollower", (PyObject *)&mml_TreeFollowerType) < 0) goto fail;
    Py_INCREF(&mml_CaptureType);
    if (PyModule_AddObject(m, "Capture", (PyObject *)&mml_CaptureType) < 0) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
