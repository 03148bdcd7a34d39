/*
 * lookup.c - a reader's point lookups, each in one call: lookup_all (keys.hix, then the
 * index.idx records of the seqs it returns) and seek_ts (a binary search over index.idx).
 *
 * Python twins, the reference: MmapBackend.lookup_all and MmapBackend.seek_ts
 * (mmaplog/storage/mmap_backend.py), through HashIndex.lookup_all (hash_index.py) and
 * record_check.py. The Python runs three syscalls and a dozen calls per lookup; here they are
 * one call that either answers or returns None. None means "the reference must answer": the
 * Python then runs its own path from the start, which raises the typed error (a damaged file)
 * or remaps (a file that grew, a table rebuilt under a new inode) and answers. So C answers
 * only where every check the Python runs has passed, and both cores give the same answers and
 * the same errors by construction; tests/test_lookup_differential.py holds them to it.
 *
 * The guards, in the Python's terms, all run before any mapped byte is read:
 *   index.idx  the file not shorter than the mapping (check_not_truncated: a read past a cut
 *              file's end would SIGBUS); the committed count (high_watermark) at most the
 *              records the file holds and the records mapped.
 *   keys.hix   the file not shorter than the mapping (check_not_truncated); not superseded by
 *              a rebuilt file (refresh_if_superseded). Every offset read from it is checked
 *              against the mapping by hix.c before it is followed.
 *   records    each seq returned checked on its own (check_seqs: v2 checksum, seq, ts_max).
 */
#include "native.h"

#include <sys/stat.h>

#define HIX_HEADER_SIZE 128u
#define HIX_SUPERSEDED 72u      /* header word: a table rebuild renamed a new file over this */
#define INDEX_COMMITTED 16u     /* index.idx header: the committed count */
#define SMALL_SEQS 64           /* postings held on the stack; more are allocated */
#define RELEASE_GIL_SEQS 4096   /* a chain this long is walked and checked without the GIL */

static inline uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Whole records in `len` bytes of index.idx (file or mapping). */
static inline uint64_t records_in(uint64_t len) {
    return len < MML_INDEX_HEADER_SIZE ? 0 : (len - MML_INDEX_HEADER_SIZE) / MML_INDEX_RECORD_SIZE;
}

/* MmapBackend.high_watermark, _guard_index and SeqIndex.mapping(hwm) for a reader: 1 and the
 * committed count when the file holds the whole mapping and the mapping every committed record,
 * else 0 (the Python raises, or remaps first).
 *
 * The count is read from the mapping's header, not with the Python's pread: once fstat says the
 * file still holds the mapping, a MAP_SHARED page and pread see the same page cache (Linux), and
 * one syscall is saved per lookup. The acquire fence orders the record loads after it, as the
 * writer published the count after the records. */
static int index_hwm(int fd, const unsigned char *map, size_t map_len, uint64_t *hwm) {
    struct stat st;
    if (map_len < MML_INDEX_HEADER_SIZE || fstat(fd, &st) < 0) return 0;
    uint64_t on_disk = records_in((uint64_t)st.st_size), mapped = records_in(map_len);
    if ((uint64_t)st.st_size < map_len) return 0; /* cut under the mapping: a read would SIGBUS */
    uint64_t count = get_u64(map + INDEX_COMMITTED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    /* claims more than it holds; committed past the mapping (the Python remaps) */
    if (count > on_disk || count > mapped) return 0;
    *hwm = count;
    return 1;
}

/* MmapBackend._readable_keys: the file still holds the whole mapping, and the mapping is of
 * the file the path names (not superseded). */
static int keys_current(int fd, const unsigned char *mm, size_t map_len) {
    struct stat st;
    if (map_len < HIX_HEADER_SIZE || fstat(fd, &st) < 0 || (uint64_t)st.st_size < map_len)
        return 0;
    return get_u64(mm + HIX_SUPERSEDED) == 0;
}

/* A file descriptor argument: -1 with an exception set when it is not one. */
static int as_fd(PyObject *obj) {
    long fd = PyLong_AsLong(obj);
    if (fd == -1 && PyErr_Occurred()) return -1;
    if (fd < 0 || fd > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "bad file descriptor");
        return -1;
    }
    return (int)fd;
}

/* A list of Python ints from seqs[0..n). */
static PyObject *int_list(const uint64_t *seqs, uint64_t n) {
    PyObject *out = PyList_New((Py_ssize_t)n);
    if (out == NULL) return NULL;
    for (uint64_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(seqs[i]);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, (Py_ssize_t)i, v);
    }
    return out;
}

/* How many of the ascending seqs[0..n) are <= max_seq (bisect_right). */
static uint64_t upto(const uint64_t *seqs, uint64_t n, uint64_t max_seq) {
    uint64_t lo = 0, hi = n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (seqs[mid] <= max_seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The arguments shared by both lookups: a view of keys.hix and the key. */
typedef struct {
    Py_buffer hix, key;
    int have_hix, have_key;
    mml_hix_view view;
    unsigned kind;
} key_args;

static void release_key_args(key_args *a) {
    if (a->have_key) PyBuffer_Release(&a->key);
    if (a->have_hix) PyBuffer_Release(&a->hix);
}

/* hix, slots, hs, kind, key: 0, or -1 with an exception set. A kind outside 1..255 is left to
 * mml_hix_find (it refers it to the Python, which raises ValueError). */
static int parse_key_args(PyObject *const *args, key_args *a) {
    memset(a, 0, sizeof *a);
    unsigned long long slots = PyLong_AsUnsignedLongLong(args[1]);
    unsigned long long hs = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred()) return -1;
    long kind = PyLong_AsLong(args[3]);
    if (kind == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear(); /* out of range: refused below, as any kind outside 1..255 */
    }
    if (PyObject_GetBuffer(args[0], &a->hix, PyBUF_SIMPLE) < 0) return -1;
    a->have_hix = 1;
    if (PyObject_GetBuffer(args[4], &a->key, PyBUF_SIMPLE) < 0) return -1;
    a->have_key = 1;
    a->view.mm = a->hix.buf;
    a->view.size = (uint64_t)a->hix.len;
    a->view.slots = slots;
    a->view.hs = hs;
    a->kind = kind < 1 || kind > 255 ? 0 : (unsigned)kind;
    return 0;
}

/* index.idx as a reader's lookup sees it: the mapping, the file (for the guard) and whether
 * its records carry their checksum. */
typedef struct {
    const Py_buffer *map;
    int fd;
    int checksummed;
} index_args;

/* The postings of (kind, key) at most max_seq. With `ix`, max_seq is instead the committed
 * count, read once the index guard passed, and the records of the seqs kept are checked.
 * Py_None when the reference must answer. */
static PyObject *postings_upto(const key_args *a, uint64_t max_seq, const index_args *ix) {
    uint64_t first = 0, count = 0, n = 0, small[SMALL_SEQS], *seqs = small;
    int found = mml_hix_find(&a->view, a->kind, a->key.buf, (size_t)a->key.len, &first, &count);
    if (found != MML_HIX_FOUND && found != MML_HIX_MISSING) Py_RETURN_NONE;
    if (found == MML_HIX_MISSING) count = 0;
    /* count * 8 fits the mapped heap (mml_hix_find checked it), so the allocation is bounded. */
    if (count > SMALL_SEQS) {
        seqs = PyMem_RawMalloc((size_t)count * sizeof *seqs);
        if (seqs == NULL) return PyErr_NoMemory();
    }
    /* The walk touches no Python object; the buffer exports pin both mappings meanwhile. */
    PyThreadState *released = count >= RELEASE_GIL_SEQS ? PyEval_SaveThread() : NULL;
    int ok = count == 0 || mml_hix_postings(&a->view, first, count, seqs) == MML_HIX_OK;
    if (ok && ix != NULL) {
        const unsigned char *map = ix->map->buf;
        size_t len = (size_t)ix->map->len;
        /* The records of scattered seqs are cache misses: start them all now, so that they
           load during the index guard's syscall (a prefetch never faults, guard or not). */
        for (uint64_t i = 0; i < count && i < SMALL_SEQS; i++)
            mml_prefetch_record(map, len, seqs[i]);
        /* Even a key without postings answers only when the index guard passes: the Python
           runs it for every lookup, and raises when it fails. */
        ok = index_hwm(ix->fd, map, len, &max_seq);
    }
    if (ok) n = upto(seqs, count, max_seq);
    for (uint64_t i = 0; ok && ix != NULL && i < n; i++)
        ok = mml_check_record_at(ix->map->buf, (size_t)ix->map->len, seqs[i],
                                 ix->checksummed) == 0;
    if (released != NULL) PyEval_RestoreThread(released);
    PyObject *out = ok ? int_list(seqs, n) : Py_NewRef(Py_None);
    if (seqs != small) PyMem_RawFree(seqs);
    return out;
}

/* hix_lookup_all(hix, slots, hs, kind, key, max_seq) -> list[int] | None
 * HashIndex.lookup_all over its mapping (max_seq None: no limit). */
static PyObject *py_hix_lookup_all(PyObject *Py_UNUSED(module), PyObject *const *args,
                                   Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "hix_lookup_all takes 6 arguments");
        return NULL;
    }
    uint64_t max_seq = UINT64_MAX;
    if (args[5] != Py_None) {
        max_seq = PyLong_AsUnsignedLongLong(args[5]);
        if (PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
            PyErr_Clear(); /* negative or past u64: the reference's bisect decides */
            Py_RETURN_NONE;
        }
    }
    key_args a;
    PyObject *out = NULL;
    if (parse_key_args(args, &a) == 0) out = postings_upto(&a, max_seq, NULL);
    release_key_args(&a);
    return out;
}

/* A view tuple's items: n of them, else -1 with a TypeError. */
static int view_items(PyObject *view, Py_ssize_t n, const char *what) {
    if (!PyTuple_CheckExact(view) || PyTuple_GET_SIZE(view) != n) {
        PyErr_Format(PyExc_TypeError, "%s must be a tuple of %zd", what, n);
        return -1;
    }
    return 0;
}

/* read_lookup_all((hix, hix_fd, slots, hs), kind, key, (index, index_fd, checksummed))
 *   -> list[int] | None
 * MmapBackend.lookup_all for a reader, after posting_key: the committed seqs carrying the key,
 * their records checked. The two tuples are HashIndex.read_view() and SeqIndex.read_view(). */
static PyObject *py_read_lookup_all(PyObject *Py_UNUSED(module), PyObject *const *args,
                                    Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "read_lookup_all takes 4 arguments");
        return NULL;
    }
    if (view_items(args[0], 4, "the keys.hix view") < 0 ||
        view_items(args[3], 3, "the index.idx view") < 0)
        return NULL;
    PyObject *hv = args[0], *iv = args[3];
    PyObject *sub[5] = {PyTuple_GET_ITEM(hv, 0), PyTuple_GET_ITEM(hv, 2),
                        PyTuple_GET_ITEM(hv, 3), args[1], args[2]};
    int hix_fd = as_fd(PyTuple_GET_ITEM(hv, 1));
    if (hix_fd < 0) return NULL;
    int index_fd = as_fd(PyTuple_GET_ITEM(iv, 1));
    if (index_fd < 0) return NULL;
    int checksummed = PyObject_IsTrue(PyTuple_GET_ITEM(iv, 2));
    if (checksummed < 0) return NULL;
    key_args a;
    Py_buffer index;
    index_args ix = {.map = &index, .fd = index_fd, .checksummed = checksummed};
    int have_index = 0;
    PyObject *out = NULL;
    if (parse_key_args(sub, &a) < 0) goto done;
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(iv, 0), &index, PyBUF_SIMPLE) < 0) goto done;
    have_index = 1;
    /* The probe's first slot starts loading now and arrives during the keys.hix guard's
       syscall (a prefetch never faults). */
    mml_hix_prefetch(&a.view, a.kind, a.key.buf, (size_t)a.key.len);
    /* keys.hix's guard, the walk, then index.idx's guard and the records (any failure
       refers, and the Python then runs its own order: the order here cannot show). */
    if (!keys_current(hix_fd, a.view.mm, (size_t)a.view.size)) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    out = postings_upto(&a, 0, &ix);
done:
    if (have_index) PyBuffer_Release(&index);
    release_key_args(&a);
    return out;
}

/* read_seek_ts((index, index_fd, checksummed), ts) -> int | None
 * MmapBackend.seek_ts for a reader of a version-2 index (records carry their checksum; a v1
 * index refers): the first seq whose ts_max >= ts, 0 when there is none. */
static PyObject *py_read_seek_ts(PyObject *Py_UNUSED(module), PyObject *const *args,
                                 Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "read_seek_ts takes 2 arguments");
        return NULL;
    }
    if (view_items(args[0], 3, "the index.idx view") < 0) return NULL;
    int fd = as_fd(PyTuple_GET_ITEM(args[0], 1));
    if (fd < 0) return NULL;
    int checksummed = PyObject_IsTrue(PyTuple_GET_ITEM(args[0], 2));
    if (checksummed < 0) return NULL;
    if (!checksummed) Py_RETURN_NONE; /* v1: checked against the frames, by the reference */
    uint64_t ts = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
        PyErr_Clear(); /* negative or past u64: the reference compares Python ints */
        Py_RETURN_NONE;
    }
    Py_buffer index;
    if (PyObject_GetBuffer(PyTuple_GET_ITEM(args[0], 0), &index, PyBUF_SIMPLE) < 0) return NULL;
    uint64_t hwm, bad = 0, pos = 0;
    int code, ok = index_hwm(fd, index.buf, (size_t)index.len, &hwm);
    if (ok) pos = mml_seek_ts_max(index.buf, (size_t)index.len, hwm, ts, 1, &bad, &code);
    PyBuffer_Release(&index);
    if (!ok || bad) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(pos < hwm ? pos + 1 : 0);
}

PyMethodDef mml_lookup_methods[] = {
    {"hix_lookup_all", (PyCFunction)(void (*)(void))py_hix_lookup_all, METH_FASTCALL,
     "hix_lookup_all(hix, slots, hs, kind, key, max_seq) -> list[int] | None (refer)"},
    {"read_lookup_all", (PyCFunction)(void (*)(void))py_read_lookup_all, METH_FASTCALL,
     "read_lookup_all((hix, hix_fd, slots, hs), kind, key, (index, index_fd, checksummed)) "
     "-> list[int] | None (refer)"},
    {"read_seek_ts", (PyCFunction)(void (*)(void))py_read_seek_ts, METH_FASTCALL,
     "read_seek_ts((index, index_fd, checksummed), ts) -> seq | 0 (past the end) | None "
     "(refer)"},
    {NULL, NULL, 0, NULL},
};
