/*
 * hix_grow.c - keys.hix's slot table placed again at twice the size, when it grows.
 *
 * Python twin: mmaplog/storage/hash_index_rebuild.py _place, the reference. Both must make the
 * same table byte for byte (both cores write byte-identical runs), so this is the same
 * round-based linear probing, not the usual insert-one-at-a-time:
 *
 *   round r: every entry not yet placed tries slot (home + r) mod slots, in the order the
 *   entries are taken from the old table (slot order); an entry finding the slot empty takes
 *   it, so of several landing on one empty slot the first wins; the rest try again in round
 *   r + 1.
 *
 * Placing in order within a round is what the vectorised version does: its "free" test sees
 * the table as the round began, and two entries of one round can only collide on the same
 * slot, where the first wins in both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "native.h"

#define SLOT 16 /* u64 hash (0: empty), u64 heap offset; little-endian */

/* hix_place(table, new_slots) -> (new table bytes, keys placed): `table` is the old slot
 * table (a multiple of 16 bytes), new_slots a power of two no smaller than its entries. */
static PyObject *py_hix_place(PyObject *Py_UNUSED(module), PyObject *args) {
    Py_buffer old;
    unsigned long long new_slots;
    if (!PyArg_ParseTuple(args, "y*K", &old, &new_slots)) return NULL;
    PyObject *result = NULL;
    uint64_t *pending = NULL;
    if (old.len % SLOT != 0 || new_slots == 0 || (new_slots & (new_slots - 1)) != 0 ||
        new_slots > (uint64_t)PY_SSIZE_T_MAX / SLOT) {
        PyErr_SetString(PyExc_ValueError, "hix_place: bad table size or slot count");
        goto done;
    }
    const unsigned char *src = old.buf;
    uint64_t old_slots = (uint64_t)old.len / SLOT, n = 0;
    for (uint64_t i = 0; i < old_slots; i++) n += mml_get_u64(src + i * SLOT) != 0;
    if (n > new_slots) {
        PyErr_SetString(PyExc_ValueError, "hix_place: more keys than slots");
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(new_slots * SLOT));
    pending = PyMem_Malloc((n ? n : 1) * sizeof(uint64_t)); /* old slot numbers, in order */
    if (result == NULL || pending == NULL) {
        if (pending == NULL) PyErr_NoMemory();
        Py_CLEAR(result);
        goto done;
    }
    unsigned char *table = (unsigned char *)PyBytes_AS_STRING(result);
    memset(table, 0, (size_t)(new_slots * SLOT));
    uint64_t left = 0;
    for (uint64_t i = 0; i < old_slots; i++)
        if (mml_get_u64(src + i * SLOT) != 0) pending[left++] = i;
    uint64_t mask = new_slots - 1;
    Py_BEGIN_ALLOW_THREADS
    for (uint64_t probe = 0; left > 0 && probe <= new_slots; probe++) {
        uint64_t kept = 0;
        for (uint64_t j = 0; j < left; j++) {
            const unsigned char *entry = src + pending[j] * SLOT;
            unsigned char *slot = table + ((mml_get_u64(entry) + probe) & mask) * SLOT;
            if (mml_get_u64(slot) == 0)
                memcpy(slot, entry, SLOT);
            else
                pending[kept++] = pending[j]; /* lost this round: the next slot next round */
        }
        left = kept;
    }
    Py_END_ALLOW_THREADS
    if (left > 0) { /* cannot happen below load 1 (n <= new_slots): every entry finds a slot */
        PyErr_SetString(PyExc_RuntimeError, "hash table placement did not converge");
        Py_CLEAR(result);
        goto done;
    }
    result = Py_BuildValue("NK", result, (unsigned long long)n); /* N: the tuple owns it */
done:
    PyMem_Free(pending);
    PyBuffer_Release(&old);
    return result;
}

PyMethodDef mml_hix_grow_methods[] = {
    {"hix_place", py_hix_place, METH_VARARGS,
     "hix_place(table, new_slots) -> (table bytes, keys): keys.hix's slots placed again "
     "(hash_index_rebuild.py _place)"},
    {NULL, NULL, 0, NULL},
};
