/*
 * lock.h — a lock of one word: one atomic exchange to take, one store to
 * give back. For locks held only briefly and never across a system call
 * (a trace's list and counters, a connection's parser, a map's shape): a
 * second thread spins a little, then yields in case the holder was
 * preempted. pthread_mutex_lock/unlock cost ~55 instructions per pair in a
 * multi-threaded process; this costs a handful. Not recursive; a fork child
 * of a process where another thread held one must reset it (as a mutex).
 */
#ifndef DDS_LOCK_H
#define DDS_LOCK_H

#include <sched.h>

static inline int dds_spin_trylock(int *w)
{
    return __atomic_load_n(w, __ATOMIC_RELAXED) == 0 && __atomic_exchange_n(w, 1, __ATOMIC_ACQUIRE) == 0;
}

static inline void dds_spin_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline void dds_spin_lock(int *w)
{
    for (unsigned n = 0; !dds_spin_trylock(w); n++) {
        if (n < 100)
            dds_spin_relax();
        else
            sched_yield();
    }
}

static inline void dds_spin_unlock(int *w)
{
    __atomic_store_n(w, 0, __ATOMIC_RELEASE);
}

#endif
