/*
 * follower.c - TreeFollower: the checkpointer's step (merkle_follow, merkle.c) on a worker
 * thread of its own, at the lowest CPU priority the OS gives without privileges.
 *
 * Why a thread of its own: the step is ~0.45 us of CPU per entry (SHA-256 mostly), and on a
 * machine whose cores the engine and writer threads keep busy, any CPU it takes is taken from
 * capture. At SCHED_IDLE it runs only on a core nothing else wants, and a waking engine or
 * writer thread preempts it at once; under a saturating capture the tree then lags and catches
 * up when capture leaves a core free. That priority cannot be given to the Python
 * checkpointer thread itself: it takes the GIL between steps, and a starved GIL holder would
 * stall the engine thread (priority inversion), and an unprivileged thread that has gone
 * SCHED_IDLE can never come back. The worker never touches Python objects or the GIL: the
 * checkpointer thread (normal priority) prepares a job with the GIL held, waits for it with the
 * GIL released, and builds the result.
 *
 *   TreeFollower(idle=True)   start the worker; idle=False keeps the process's priority
 *   .priority                 "idle" (SCHED_IDLE), "nice" (nice 19) or "normal": what it got
 *   .native_id                the worker's thread id (Linux; 0 elsewhere)
 *   .run(...)                 merkle_follow's arguments and result, done on the worker
 *   .cancel()                 the current and every later run stop early (within 64 entries),
 *                             returning what they did: for a prompt stop
 *   .close()                  cancel, then join the worker
 *
 * After fork() the child has the object but not the worker: run() refuses, close() and
 * dealloc do not wait for it. The worker faults pages of the run's mappings in at idle
 * priority; on kernels without per-VMA locks a preempted fault holds mmap_lock for reading,
 * which a writer's mmap or munmap would wait behind (6.4 and later take VMA locks instead).
 */
#include "merkle.h"

#include <errno.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

enum { JOB_NONE, JOB_QUEUED, JOB_DONE };
enum { PRIO_UNKNOWN = -1, PRIO_NORMAL = 0, PRIO_NICE = 1, PRIO_IDLE = 2 };

typedef struct {
    PyObject_HEAD
    pthread_t thread;
    int started;
    int sync_ready; /* lock and conds initialised */
    pthread_mutex_t lock;
    pthread_cond_t wake; /* the worker: a job is queued, or closing */
    pthread_cond_t done; /* the runner: the job is done; __init__: the priority is known */
    mml_follow_job *job;
    int state;    /* JOB_* */
    int closing;
    int busy;     /* a run is in progress (checked with the GIL held) */
    int want_idle;
    int priority; /* PRIO_* */
    long native_id; /* the worker's thread id in the OS (Linux), else 0 */
    pid_t pid;      /* the process that started the worker (a fork's child has no worker) */
    _Atomic int cancel;
} mml_follower;

/* A child of fork() inherits the object but not the worker thread, and maybe a lock held by
 * it at the fork: nothing here may wait for that thread or touch those locks. */
static int forked(const mml_follower *self) {
    return self->started && self->pid != getpid();
}

/* The calling thread at the lowest priority it can take: SCHED_IDLE, else nice 19 (both per
 * thread on Linux only; elsewhere setpriority would lower the whole process, so nothing). */
static int lower_own_priority(void) {
#if defined(__linux__)
#if defined(SCHED_IDLE)
    struct sched_param param = {0};
    if (sched_setscheduler(0, SCHED_IDLE, &param) == 0) return PRIO_IDLE;
#endif
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19) == 0) return PRIO_NICE;
#endif
    return PRIO_NORMAL;
}

static void *worker_main(void *arg) {
    mml_follower *self = arg;
    int got = self->want_idle ? lower_own_priority() : PRIO_NORMAL;
    pthread_mutex_lock(&self->lock);
#if defined(__linux__)
    self->native_id = (long)syscall(SYS_gettid);
#endif
    self->priority = got;
    pthread_cond_broadcast(&self->done);
    for (;;) {
        while (self->state != JOB_QUEUED && !self->closing)
            pthread_cond_wait(&self->wake, &self->lock);
        if (self->state != JOB_QUEUED) break; /* closing, nothing queued */
        mml_follow_job *job = self->job;
        pthread_mutex_unlock(&self->lock);
        mml_follow_run(job);
        pthread_mutex_lock(&self->lock);
        self->state = JOB_DONE;
        pthread_cond_broadcast(&self->done);
    }
    pthread_mutex_unlock(&self->lock);
    return NULL;
}

static int follower_init(PyObject *op, PyObject *args, PyObject *kwds) {
    mml_follower *self = (mml_follower *)op;
    static char *kwlist[] = {"idle", NULL};
    int idle = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p", kwlist, &idle)) return -1;
    if (self->started || self->closing) {
        PyErr_SetString(PyExc_RuntimeError, "TreeFollower is already started or closed");
        return -1;
    }
    if (!self->sync_ready) {
        if (pthread_mutex_init(&self->lock, NULL) != 0) goto fail;
        if (pthread_cond_init(&self->wake, NULL) != 0) {
            pthread_mutex_destroy(&self->lock);
            goto fail;
        }
        if (pthread_cond_init(&self->done, NULL) != 0) {
            pthread_cond_destroy(&self->wake);
            pthread_mutex_destroy(&self->lock);
            goto fail;
        }
        self->sync_ready = 1;
    }
    self->want_idle = idle;
    self->priority = PRIO_UNKNOWN;
    int rc = pthread_create(&self->thread, NULL, worker_main, self);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->started = 1;
    self->pid = getpid();
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    while (self->priority == PRIO_UNKNOWN) pthread_cond_wait(&self->done, &self->lock);
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    return 0;
fail:
    PyErr_SetString(PyExc_OSError, "TreeFollower: no mutex or condition variable");
    return -1;
}

/* Cancel, then join the worker. Marked stopped while the GIL is still held, so a run or a
 * second close on another thread sees it at once; a run already queued is finished (cancelled
 * within 64 entries) before the worker leaves, and its runner gets it back. */
static void follower_stop(mml_follower *self) {
    if (!self->started) return;
    atomic_store(&self->cancel, 1);
    self->started = 0;
    if (self->pid != getpid()) return; /* a fork's child: the worker is not ours to join */
    pthread_t thread = self->thread;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    self->closing = 1;
    pthread_cond_broadcast(&self->wake);
    pthread_mutex_unlock(&self->lock);
    pthread_join(thread, NULL);
    Py_END_ALLOW_THREADS
}

static PyObject *follower_run(PyObject *op, PyObject *args) {
    mml_follower *self = (mml_follower *)op;
    if (forked(self)) {
        PyErr_SetString(PyExc_RuntimeError, "TreeFollower was started in another process");
        return NULL;
    }
    if (!self->started || self->closing) {
        PyErr_SetString(PyExc_ValueError, "TreeFollower is closed");
        return NULL;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "TreeFollower: a run is already in progress");
        return NULL;
    }
    self->busy = 1; /* before prepare, which may run Python code and let another thread in */
    mml_follow_job job;
    PyObject *result = NULL;
    if (mml_follow_prepare(&job, args) == 0) {
        job.cancel = &self->cancel;
        int queued = 0;
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&self->lock);
        if (!self->closing) { /* a close that won the race: the worker may be gone */
            queued = 1;
            self->job = &job;
            self->state = JOB_QUEUED;
            pthread_cond_signal(&self->wake);
            while (self->state != JOB_DONE) pthread_cond_wait(&self->done, &self->lock);
            self->state = JOB_NONE;
            self->job = NULL;
        }
        pthread_mutex_unlock(&self->lock);
        Py_END_ALLOW_THREADS
        if (queued)
            result = mml_follow_result(&job);
        else
            PyErr_SetString(PyExc_ValueError, "TreeFollower is closed");
    }
    self->busy = 0;
    mml_follow_release(&job);
    return result;
}

static PyObject *follower_cancel(PyObject *op, PyObject *Py_UNUSED(arg)) {
    atomic_store(&((mml_follower *)op)->cancel, 1);
    Py_RETURN_NONE;
}

static PyObject *follower_close(PyObject *op, PyObject *Py_UNUSED(arg)) {
    mml_follower *self = (mml_follower *)op;
    if (self->busy && !forked(self)) {
        PyErr_SetString(PyExc_RuntimeError, "TreeFollower: close while a run is in progress");
        return NULL;
    }
    follower_stop(self);
    Py_RETURN_NONE;
}

static PyObject *follower_priority(PyObject *op, void *Py_UNUSED(closure)) {
    switch (((mml_follower *)op)->priority) {
    case PRIO_IDLE:
        return PyUnicode_FromString("idle");
    case PRIO_NICE:
        return PyUnicode_FromString("nice");
    default:
        return PyUnicode_FromString("normal");
    }
}

static PyObject *follower_native_id(PyObject *op, void *Py_UNUSED(closure)) {
    return PyLong_FromLong(((mml_follower *)op)->native_id);
}

static void follower_dealloc(PyObject *op) {
    mml_follower *self = (mml_follower *)op;
    /* A run holds a reference to self, so none is in progress here. */
    int child = forked(self);
    follower_stop(self);
    if (self->sync_ready && !child) { /* a fork's child may hold them locked: leave them */
        pthread_cond_destroy(&self->done);
        pthread_cond_destroy(&self->wake);
        pthread_mutex_destroy(&self->lock);
    }
    Py_TYPE(op)->tp_free(op);
}

static PyMethodDef follower_methods[] = {
    {"run", follower_run, METH_VARARGS,
     "run(index, checksummed, segments, names, hashes, size, hwm, every, tree_fd) -> "
     "(size, code, hashes, passed): merkle_follow, done on the worker thread"},
    {"cancel", follower_cancel, METH_NOARGS,
     "cancel(): the current and every later run stop early, returning what they did"},
    {"close", follower_close, METH_NOARGS, "close(): cancel, then join the worker thread"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef follower_getset[] = {
    {"priority", follower_priority, NULL, "'idle', 'nice' or 'normal': what the worker got",
     NULL},
    {"native_id", follower_native_id, NULL, "the worker's thread id in the OS (0: not known)",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject mml_TreeFollowerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmaplog.storage.core._native.TreeFollower",
    .tp_basicsize = sizeof(mml_follower),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "TreeFollower(idle=True): merkle_follow on a low-priority worker thread",
    .tp_new = PyType_GenericNew,
    .tp_init = follower_init,
    .tp_dealloc = follower_dealloc,
    .tp_methods = follower_methods,
    .tp_getset = follower_getset,
};
