/*
 * The worker pool (pool.c): runs a list of jobs on the caller and up to nthreads - 1 workers,
 * and the claim of the unit tasks of a batch of one. See pool.c for how and why.
 */
#ifndef FASTRNN_POOL_H
#define FASTRNN_POOL_H

#include "fastrnn.h"

/* The most threads a dispatch may use, the caller included: set_num_threads accepts 1..this.
 * Far above the cores of any machine fastrnn runs on, low enough that the pool's worker table is
 * a fixed array. */
#define FR_MAX_THREADS 1024

/* Makes the pool usable in this process (again after a fork). Call with the GIL held, which
 * serialises it, before fr_pool_run. */
void fr_pool_prepare(void);
/* Runs jobs[k] (fr_job_run) for k < njobs and returns when all are done; the first job is always
 * the caller's. Any number of threads may call it at once: one dispatches to the workers, and a
 * caller that finds a dispatch under way (or fr_pool_shutdown joining the workers) runs its own
 * jobs inline, in order, instead of waiting. Every job of every call runs exactly once, and no
 * call waits on another's jobs; jobs that cooperate (the unit tasks) complete on one thread. */
void fr_pool_run(int nthreads, int njobs, const fr_job *const *jobs);
/* Joins the workers (thread count changes), after the dispatch under way if any. */
void fr_pool_shutdown(void);

/* Monotonic seconds: the one clock of the pool and the unit tasks. */
double fr_now(void);
/* Unit tasks: 1 with the claimed task (*q) and step index (*idx), or 0: for part 0 once every
 * task of the T steps is complete, for part 1 also once solo is set. sync (4) ints. */
int fr_claim(int *sync, int T, int part, int *q, int *idx);
void fr_task_done(int *sync);

#endif
