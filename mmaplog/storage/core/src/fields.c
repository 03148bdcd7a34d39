/*
 * fields.c - slot attribute reads with a per-type offset cache (see fields.h).
 */
#include "fields.h"

#include <structmember.h>

/* Point the cache at obj's type: the slot offset of each name that is a plain object member
 * the generic attribute lookup would use, else -1. */
static void resolve(mml_fieldcache *cache, PyTypeObject *type, PyObject *const *names,
                    int nnames) {
    Py_INCREF(type);
    Py_XSETREF(cache->type, type);
    /* A type with its own attribute hook may answer differently from the slot. */
    int generic = type->tp_getattro == PyObject_GenericGetAttr;
    for (int i = 0; i < nnames && i < MML_FIELDS_MAX; i++) {
        cache->offset[i] = -1;
        if (!generic) continue;
        PyObject *descr = _PyType_Lookup(type, names[i]); /* borrowed; sets no exception */
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) continue;
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READ_RESTRICTED)) continue;
        if (member->offset < (Py_ssize_t)sizeof(PyObject) ||
            member->offset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize)
            continue; /* not inside the instance: never read it directly */
        cache->offset[i] = member->offset;
    }
}

PyObject *mml_field(mml_fieldcache *cache, PyObject *obj, PyObject *const *names, int nnames,
                    int i) {
    PyTypeObject *type = Py_TYPE(obj);
    if (cache->type != type) resolve(cache, type, names, nnames);
    Py_ssize_t off = i < MML_FIELDS_MAX ? cache->offset[i] : -1;
    if (off >= 0) {
        PyObject *value = *(PyObject **)((char *)obj + off);
        if (value != NULL) {
            Py_INCREF(value);
            return value;
        }
    }
    return PyObject_GetAttr(obj, names[i]); /* the same answer, the slow way (or the error) */
}

int mml_intern_names(PyObject **out, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if ((out[i] = PyUnicode_InternFromString(names[i])) == NULL) return -1;
    return 0;
}
