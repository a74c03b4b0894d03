/*
 * The worker threads that run a layer's concurrent jobs (batch-row ranges and directions of a
 * time loop, the two unit tasks of a batch of one, blocks of the whole-sequence GEMMs).
 * The only C that creates threads and blocks on locks; the kernels never do (they only claim unit
 * tasks through fr_claim, below).
 *
 * Why not Python's ThreadPoolExecutor, which this replaced: every hand-off through it (queue,
 * future, two GIL round trips) cost about 20 us, and its worker started about 15 us after the
 * caller. A training step hands off three times, so that was 7% of a tiny LSTM step. Here a
 * dispatch publishes a generation number; a worker that finished a job less than fr_pool_spin_seconds
 * (plan.c) ago is still polling it and starts within a microsecond. Idle workers sleep on a
 * condition variable, so a quiet pool never holds a core (on a busy machine spinning threads
 * are what slows a step down several times over).
 *
 * Jobs are claimed one at a time by the caller and the workers alike, so any number of jobs
 * runs on any number of threads. The caller always takes part: jobs that wait on each other
 * (the unit tasks) are written so that one thread alone can finish them all. While one caller
 * dispatches, another (a second Python thread) runs its own jobs inline instead of waiting.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, sched_yield, pthread_atfork under -std=c99 */
#include <string.h>
#include <time.h>
#include "fastrnn.h"
#include "pool.h"

#define FR_POOL_MAX (FR_MAX_THREADS - 1) /* workers at most: the caller is the other thread */

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h> /* QueryPerformanceCounter */
#endif
#if defined(_MSC_VER)
#include <intrin.h> /* _mm_pause, __yield, the Interlocked functions (clang-cl too) */
#endif

/* A spin-wait hint to the core (x86 pause, Arm yield); nothing where none is known. */
static inline void fr_pool_pause(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) && defined(__GNUC__)
    __asm__ __volatile__("yield");
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
    _mm_pause();
#elif defined(_MSC_VER) && defined(_M_ARM64)
    __yield();
#endif
}

/* The atomics of the unit-task claim, which runs with or without POSIX threads: GCC's and
 * clang's __atomic builtins, or MSVC's Interlocked functions (full barriers, so at least as
 * strong as the orders asked for; long is 32 bits there, as int). */
#if defined(_MSC_VER) && !defined(__clang__)
static inline int fr_load_acquire(int *p) { return (int)_InterlockedOr((volatile long *)p, 0); }
static inline int fr_load_relaxed(int *p) { return *(volatile int *)p; }
static inline void fr_store_release(int *p, int v) { _InterlockedExchange((volatile long *)p, v); }
static inline void fr_add_release(int *p, int v) { _InterlockedExchangeAdd((volatile long *)p, v); }
static inline int fr_cas_acq_rel(int *p, int expect, int desired)
{
    return _InterlockedCompareExchange((volatile long *)p, desired, expect) == expect;
}
#else
static inline int fr_load_acquire(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline int fr_load_relaxed(int *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void fr_store_release(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void fr_add_release(int *p, int v) { __atomic_add_fetch(p, v, __ATOMIC_RELEASE); }
static inline int fr_cas_acq_rel(int *p, int expect, int desired)
{
    return __atomic_compare_exchange_n(p, &expect, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}
#endif

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#define FR_YIELD() sched_yield()

typedef struct {
    const fr_job *const *jobs; /* (njobs) */
    int njobs;
} fr_dispatch;

typedef struct {
    int ready;                    /* mutexes initialised in this process */
    pthread_mutex_t mu;           /* sleeping workers and a sleeping caller */
    pthread_cond_t wake, done;
    pthread_mutex_t dispatch;     /* one dispatch at a time */
    int nworkers;
    unsigned start_gen;           /* the generation current when the workers were created */
    pthread_t th[FR_POOL_MAX];
    /* gen << 32 | next job to claim. A claim is a compare-and-swap on the whole word, so a
     * worker still looking at an old dispatch can never take a job of a new one by mistake. */
    unsigned long long word;
    fr_dispatch slot[2];          /* dispatch g lives in slot g & 1: a late reader of slot g
                                     cannot see it rewritten before dispatch g + 2, which cannot
                                     begin while it holds a job of g */
    int pending;                  /* jobs of the current dispatch not finished */
    int sleepers;                 /* workers asleep on wake */
    int stop;
} fr_pool;


/* Claims and runs jobs of generation gen until none is left. */
static void fr_pool_work(fr_pool *p, unsigned gen)
{
    for (;;) {
        unsigned long long w = __atomic_load_n(&p->word, __ATOMIC_ACQUIRE);
        if ((unsigned)(w >> 32) != gen) return;
        const fr_dispatch *d = &p->slot[gen & 1];
        const unsigned k = (unsigned)w;
        /* atomic: a worker that read the word long ago may look at the slot while dispatch
         * gen + 2 rewrites it; its compare-and-swap then fails (ThreadSanitizer saw the plain
         * read race with the caller's write) */
        if (k >= (unsigned)__atomic_load_n(&d->njobs, __ATOMIC_RELAXED)) return;
        if (!__atomic_compare_exchange_n(&p->word, &w, w + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            continue;
        fr_job_run(d->jobs[k]);
        if (__atomic_sub_fetch(&p->pending, 1, __ATOMIC_ACQ_REL) == 0) {
            pthread_mutex_lock(&p->mu); /* the caller may be asleep on done */
            pthread_cond_broadcast(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *fr_pool_worker(void *arg)
{
    fr_pool *p = (fr_pool *)arg;
    /* not the word itself: the caller may already have published the dispatch it created this
     * worker for, which the worker must not mistake for one it has seen */
    unsigned seen = p->start_gen;
    for (;;) {
        double since = 0;
        int spins = 0;
        unsigned gen;
        while ((gen = (unsigned)(__atomic_load_n(&p->word, __ATOMIC_SEQ_CST) >> 32)) == seen) {
            if (__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) return NULL;
            if (++spins < 256) { fr_pool_pause(); continue; }
            spins = 0;
            const double now = fr_now();
            if (since == 0) { since = now; continue; }
            if (now - since < fr_pool_spin_seconds) continue;
            pthread_mutex_lock(&p->mu);
            /* seq_cst on sleepers here and on word in fr_pool_run: either the caller sees this
             * sleeper and signals, or this check sees the new generation */
            __atomic_add_fetch(&p->sleepers, 1, __ATOMIC_SEQ_CST);
            while ((unsigned)(__atomic_load_n(&p->word, __ATOMIC_SEQ_CST) >> 32) == seen
                   && !__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE))
                pthread_cond_wait(&p->wake, &p->mu);
            __atomic_sub_fetch(&p->sleepers, 1, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&p->mu);
            since = 0;
        }
        seen = gen;
        fr_pool_work(p, gen);
    }
}

static void fr_pool_stop(fr_pool *p)
{
    pthread_mutex_lock(&p->mu);
    __atomic_store_n(&p->stop, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nworkers; ++i) pthread_join(p->th[i], NULL);
    p->nworkers = 0;
    p->stop = 0;
}

static int fr_pool_forked; /* set in a child process by the atfork handler */
static void fr_pool_atfork_child(void) { fr_pool_forked = 1; }

/* Makes the pool usable in this process: after a fork only the forking thread exists, and the
 * locks may have been copied while held, so the child starts from scratch. Called with the GIL
 * held, which serialises it; on every dispatch, so it costs a load, not a getpid() call. */
static void pool_prepare(fr_pool *p)
{
    static int registered;
    if (p->ready && !fr_pool_forked) return;
    if (!registered) registered = pthread_atfork(NULL, NULL, fr_pool_atfork_child) == 0;
    fr_pool_forked = 0;
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->dispatch, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->ready = 1;
}

/* Runs jobs[k] for k < njobs on the caller and up to nthreads - 1 workers; returns when all
 * are done. The first job is always the caller's; the others are claimed in order. */
static void pool_run(fr_pool *p, int nthreads, int njobs, const fr_job *const *jobs)
{
    if (njobs == 1 || nthreads <= 1 || pthread_mutex_trylock(&p->dispatch) != 0) {
        for (int k = 0; k < njobs; ++k) fr_job_run(jobs[k]);
        return;
    }
    int want = nthreads - 1;
    if (want > FR_POOL_MAX) want = FR_POOL_MAX;
    if (p->nworkers != want) {
        if (p->nworkers) fr_pool_stop(p);
        p->start_gen = (unsigned)(__atomic_load_n(&p->word, __ATOMIC_RELAXED) >> 32);
        for (int i = 0; i < want; ++i) {
            if (pthread_create(&p->th[i], NULL, fr_pool_worker, p) != 0) break;
            p->nworkers = i + 1;
        }
    }
    /* atomic loads of word even here, where only this thread writes it: a late worker's failed
     * compare-and-swap counts as an access to it */
    const unsigned gen = (unsigned)(__atomic_load_n(&p->word, __ATOMIC_RELAXED) >> 32) + 1;
    fr_dispatch *d = &p->slot[gen & 1];
    d->jobs = jobs; /* read only by a thread holding a job of this dispatch: ordered by word */
    __atomic_store_n(&d->njobs, njobs, __ATOMIC_RELAXED);
    __atomic_store_n(&p->pending, njobs, __ATOMIC_RELAXED);
    /* Job 0 is claimed in the same store that publishes the dispatch: a polling worker would
     * otherwise often win it, and jobs that own a slice of the weights (the unit halves of a
     * cell step) would change cores from call to call, reading their slice from the other
     * core's cache instead of their own L2. */
    __atomic_store_n(&p->word, (unsigned long long)gen << 32 | 1u, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&p->sleepers, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    fr_job_run(jobs[0]);
    __atomic_sub_fetch(&p->pending, 1, __ATOMIC_ACQ_REL); /* only this thread waits on done */
    fr_pool_work(p, gen);
    double since = 0;
    for (int spins = 0; __atomic_load_n(&p->pending, __ATOMIC_ACQUIRE);) {
        if (++spins < 256) { fr_pool_pause(); continue; }
        spins = 0;
        const double now = fr_now();
        if (since == 0) since = now;
        else if (now - since > fr_pool_spin_seconds) {
            pthread_mutex_lock(&p->mu);
            while (__atomic_load_n(&p->pending, __ATOMIC_ACQUIRE)) pthread_cond_wait(&p->done, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
    }
    pthread_mutex_unlock(&p->dispatch);
}

/* Joins the workers (set_num_threads, interpreter exit). */
static void pool_shutdown(fr_pool *p)
{
    if (!p->ready || fr_pool_forked) return;
    pthread_mutex_lock(&p->dispatch);
    if (p->nworkers) fr_pool_stop(p);
    pthread_mutex_unlock(&p->dispatch);
}

#else /* no POSIX threads: jobs run one after another on the caller */
#define FR_YIELD() ((void)0)
typedef struct { int unused; } fr_pool;
static void pool_prepare(fr_pool *p) { (void)p; }
static void pool_run(fr_pool *p, int nthreads, int njobs, const fr_job *const *jobs)
{
    (void)p; (void)nthreads;
    for (int k = 0; k < njobs; ++k) fr_job_run(jobs[k]);
}
static void pool_shutdown(fr_pool *p) { (void)p; }
#endif


/* ---- the one clock -------------------------------------------------------------------------- */

double fr_now(void)
{
#if defined(_WIN32)
    LARGE_INTEGER count, freq;
    QueryPerformanceCounter(&count);
    QueryPerformanceFrequency(&freq);
    return (double)count.QuadPart / (double)freq.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

/* ---- unit tasks of a batch of one (fr_recur_units, fr_recur_backward_units) ------------------ */
/* Each step has two tasks; sync[0] counts completed tasks, sync[1 + q] the steps of task q
 * claimed so far, and sync[3] is the "solo" flag. A task of step s may be claimed once all tasks
 * of step s-1 are complete; a thread never holds a claim while it waits, so when the other thread
 * is descheduled this one claims both tasks and carries on alone. A thread that waits longer than
 * fr_solo_wait_seconds for the other's task to finish sets solo: the machine is oversubscribed,
 * and from then on part 0 runs every task (part 1 leaves after its current one). */

int fr_claim(int *sync, int T, int part, int *q, int *idx)
{
    double waiting_since = 0;
    for (int spins = 0;; ++spins) {
        const int step = fr_load_acquire(&sync[0]) / 2;
        if (step >= T) return 0;
        if (part != 0 && fr_load_acquire(&sync[3])) return 0;
        for (int k = 0; k < 2; ++k) {
            const int t = k ^ (part & 1); /* its own task first: that task's W_hh rows are in
                                             this core's cache */
            if (fr_load_relaxed(&sync[1 + t]) == step && fr_cas_acq_rel(&sync[1 + t], step, step + 1)) {
                *q = t;
                *idx = step;
                return 1;
            }
        }
        if (spins < 1000) {
            fr_pool_pause();
            continue;
        }
        const double now = fr_now();
        if (waiting_since == 0) waiting_since = now;
        else if (now - waiting_since > fr_solo_wait_seconds) fr_store_release(&sync[3], 1);
        FR_YIELD();
    }
}

void fr_task_done(int *sync) { fr_add_release(&sync[0], 1); }

/* ---- the process's pool --------------------------------------------------------------------- */

static fr_pool the_pool;
void fr_pool_prepare(void) { pool_prepare(&the_pool); }
void fr_pool_run(int nthreads, int njobs, const fr_job *const *jobs) { pool_run(&the_pool, nthreads, njobs, jobs); }
void fr_pool_shutdown(void) { pool_shutdown(&the_pool); }
