/*
 * real.h — the real functions behind the hooks.
 *
 * dds_real_sym() resolves a name in the objects loaded after ddshim
 * (dlsym(RTLD_NEXT)), and, for libraries that were dlopen()ed RTLD_LOCAL (libpq
 * or hiredis under a Python extension), in the first already-loaded library of
 * `fallback_libs` (dlopen(RTLD_NOLOAD)). It never allocates before dlsym is
 * safe, never exits, and returns NULL when nothing is found (the hook then fails
 * with ENOSYS, or passes through). Results are cached by the DDS_REAL macro in a
 * static pointer per hook: one load on the fast path.
 */
#ifndef DDS_REAL_H
#define DDS_REAL_H

#include <stddef.h>

/* Hooks are the only symbols the library exports (see exports.map). */
#define DDS_EXPORT __attribute__((visibility("default")))

/* Code a sanitizer's runtime may reach while it starts (it calls sigaction()
 * before it can track anything): when ddshim is built with ThreadSanitizer
 * and preloaded into a program that is not, such code must carry no
 * instrumentation. */
#if defined(__SANITIZE_THREAD__)
#define DDS_NO_TSAN __attribute__((no_sanitize("thread")))
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DDS_NO_TSAN __attribute__((no_sanitize("thread")))
#endif
#endif
#ifndef DDS_NO_TSAN
#define DDS_NO_TSAN
#endif

void *dds_real_sym(const char *name);
/* Same, also looking in the named libraries when RTLD_NEXT finds nothing.
 * libs: NULL-terminated list of sonames, e.g. {"libpq.so.5", NULL}. */
void *dds_real_sym_in(const char *name, const char *const *libs);

/* Declare and resolve `real_<fn>` with fn's own prototype. The cached
 * pointer is read and written atomically (relaxed: any thread resolving it
 * gets the same value), so concurrent first calls are well defined. */
#define DDS_REAL(fn)                                                            \
    static __typeof__(fn) *real_##fn##_cache;                                  \
    __typeof__(fn) *real_##fn = __atomic_load_n(&real_##fn##_cache, __ATOMIC_RELAXED); \
    if (__builtin_expect(real_##fn == NULL, 0)) {                              \
        real_##fn = (__typeof__(fn) *)dds_real_sym(#fn);                        \
        __atomic_store_n(&real_##fn##_cache, real_##fn, __ATOMIC_RELAXED);     \
    }

#define DDS_REAL_IN(fn, libs)                                                  \
    static __typeof__(fn) *real_##fn##_cache;                                  \
    __typeof__(fn) *real_##fn = __atomic_load_n(&real_##fn##_cache, __ATOMIC_RELAXED); \
    if (__builtin_expect(real_##fn == NULL, 0)) {                              \
        real_##fn = (__typeof__(fn) *)dds_real_sym_in(#fn, libs);               \
        __atomic_store_n(&real_##fn##_cache, real_##fn, __ATOMIC_RELAXED);     \
    }

/* 1 once the constructor has loaded the configuration and tracing is on for
 * this process (not setuid, DD_TRACE_ENABLED, not a vfork child...). Hooks pass
 * straight through while it is 0. */
extern int dds_active;
/* Called by hooks that are about to trace: makes sure the lazy parts (writer
 * start, sampler) are ready. Returns 1 when tracing may go ahead. */
int dds_ready(void);

#endif
