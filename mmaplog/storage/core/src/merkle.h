/*
 * merkle.h - the checkpointer's step (merkle.c), for the worker thread that runs it in the
 * background (follower.c).
 *
 * A job is prepared from merkle_follow's Python arguments with the GIL held, run without it
 * (on any thread), and turned into merkle_follow's result with the GIL held again.
 */
#ifndef MML_MERKLE_H
#define MML_MERKLE_H

#include "native.h"
#include "sha256.h"

typedef struct {
    mml_frames frames;  /* the run's index, segments and names (held buffers) */
    const mml_frames *fr;
    unsigned char stack[65][MML_SHA256_SIZE]; /* the frontier, largest subtree first */
    int depth;
    uint64_t size; /* leaves in the tree */
    uint64_t hwm;  /* follow up to this seq */
    uint64_t every;
    int fd;        /* merkle.tree, open for writing: the job's own dup, closed at release */
    unsigned char *leaves, *dense; /* a piece's leaves and nodes */
    unsigned char *passed;         /* frontier hashes at each multiple of every passed */
    size_t passed_len, passed_cap;
    _Atomic int *cancel; /* when set, stop early (checked every few entries); may be NULL */
    int err;  /* errno of a failed write or allocation */
    int code; /* the check the seq after size failed (MML_FRAME_OK: none did) */
} mml_follow_job;

/* merkle_follow's arguments into `job`; -1 with an exception set (release it anyway). */
int mml_follow_prepare(mml_follow_job *job, PyObject *args);
/* Seqs size + 1 ..= hwm: check, hash, fold, write. No GIL. */
void mml_follow_run(mml_follow_job *job);
/* (size, code, hashes, passed), or NULL with the OSError / MemoryError of a failed run. */
PyObject *mml_follow_result(const mml_follow_job *job);
void mml_follow_release(mml_follow_job *job);

extern PyTypeObject mml_TreeFollowerType;

#endif /* MML_MERKLE_H */
