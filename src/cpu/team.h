/* When the CPU ops enter OpenMP (internal to the CPU backend: src/cpu and its glue in
 * src/model/backend.c).
 *
 * libgomp makes futex syscalls for every parallel region, even one of a single thread (a team of
 * one still ends on a barrier that wakes all waiters; a nested region makes two), and an
 * `if (0)` or `num_threads(1)` clause still enters it. `mnemo eval`'s workers run the ops on one
 * thread each inside the worker region: ~1,500 futex calls a probe (docs/perf.md, "Parallel
 * regions of one thread"). So every op decides its team once per call (mn_team) and runs its
 * work through MN_RUN_TEAM, which calls the work directly, without OpenMP, for a team of one. */
#ifndef MN_CPU_TEAM_H
#define MN_CPU_TEAM_H

#include <omp.h>
#include <stddef.h>

/* Below this many elements an elementwise op runs on the calling thread: waking the OpenMP
 * team costs more than the loop (inference turns, bias rows). */
#define MN_PAR_MIN_ELEMS 32768

/* The threads an op of `work` units (elements, rows, panels: the op says) should run on, given
 * the caller's `threads`: 1 when threads is 1, when the work is below `min_work` (waking a team
 * costs more than it saves), or inside an active parallel region (a nested region would get one
 * thread anyway); else threads. Which thread does which unit never changes an op's bits. */
static inline int mn_team(int threads, double work, double min_work) {
    return threads > 1 && work >= min_work && !omp_in_parallel() ? threads : 1;
}

/* Calls fn(args..., t, nt) for each thread t of an OpenMP team of nt threads when `team` > 1,
 * else fn(args..., 0, 1) once on the calling thread without entering OpenMP. The one place the
 * CPU ops open a parallel region; fn splits its units with mn_share. */
#define MN_RUN_TEAM(team, fn, ...)                                                 \
    do {                                                                           \
        const int mn_team_threads_ = (team);                                       \
        if (mn_team_threads_ > 1) {                                                \
            _Pragma("omp parallel num_threads(mn_team_threads_)")                  \
            fn(__VA_ARGS__, omp_get_thread_num(), omp_get_num_threads());          \
        } else {                                                                   \
            fn(__VA_ARGS__, 0, 1);                                                 \
        }                                                                          \
    } while (0)

/* Thread t of nt's units [*i0, *i1) of n: contiguous shares in thread order (as
 * schedule(static)), each a multiple of `align` units but the last. */
static inline void mn_share(size_t n, size_t align, int t, int nt, size_t *i0, size_t *i1) {
    size_t per = (n + (size_t)nt - 1) / (size_t)nt;
    per = (per + align - 1) / align * align;
    size_t a = per * (size_t)t;
    *i0 = a < n ? a : n;
    *i1 = n - *i0 < per ? n : *i0 + per;
}

#endif
