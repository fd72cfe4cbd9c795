/* See real.h. dlsym() may allocate (dlerror state), and an interposed
 * allocator may call back into a hooked function while we are inside dlsym:
 * a per-thread flag makes such a nested lookup return NULL, and the hooks then
 * fall back to the raw system call instead of recursing or deadlocking. */
#define _GNU_SOURCE
#include "real.h"

#include <dlfcn.h>
#include <stddef.h>

static __thread int resolving __attribute__((tls_model("initial-exec")));

DDS_NO_TSAN void *dds_real_sym_in(const char *name, const char *const *libs)
{
    if (resolving)
        return NULL;
    resolving = 1;
    void *p = dlsym(RTLD_NEXT, name);
    for (int i = 0; p == NULL && libs && libs[i]; i++) {
        /* A library dlopen()ed RTLD_LOCAL (psycopg2's libpq) is invisible to
         * RTLD_NEXT; ask for it by name, without loading it if absent. */
        void *h = dlopen(libs[i], RTLD_LAZY | RTLD_NOLOAD);
        if (h) {
            p = dlsym(h, name);
            dlclose(h);
        }
    }
    resolving = 0;
    return p;
}

DDS_NO_TSAN void *dds_real_sym(const char *name)
{
    return dds_real_sym_in(name, NULL);
}
