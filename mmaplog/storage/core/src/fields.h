/*
 * fields.h - read an object's plain slot attributes without the attribute protocol.
 *
 * msgspec Structs (Entry, Headers, IndexKey ...) and uuid.UUID keep their fields in slots,
 * exposed as member descriptors. Reading one through PyObject_GetAttr walks the type's MRO
 * and calls the descriptor: ~20 ns, a dozen times per entry on the bulk append path. A
 * field cache resolves each name's slot offset once per type and then reads the slot
 * directly. It falls back to PyObject_GetAttr whenever that would not give the same answer:
 * another type (a subclass may override a field with a property), a name that is not a plain
 * object member, or an empty slot (which raises AttributeError through the fallback).
 */
#ifndef MML_FIELDS_H
#define MML_FIELDS_H

#include <Python.h>

#define MML_FIELDS_MAX 8

typedef struct {
    PyTypeObject *type;                 /* the type the offsets are for (strong); NULL: none */
    Py_ssize_t offset[MML_FIELDS_MAX];  /* of each name; -1: use PyObject_GetAttr */
} mml_fieldcache;

/* Intern the n C strings `names` into `out` (the name arrays the caches read with): 0, or -1
 * with an exception set. */
int mml_intern_names(PyObject **out, const char *const *names, int n);

/* A new reference to attribute names[i] of obj (names: interned str, at most MML_FIELDS_MAX,
 * the same array on every call with this cache), or NULL with an exception set. */
PyObject *mml_field(mml_fieldcache *cache, PyObject *obj, PyObject *const *names, int nnames,
                    int i);

#endif
