// link: -shared -ldl
/* A shared library that interposes jansson's json_loads, for
 * tests/reliability/test_fork_exec.py::test_fork_during_lazy_init. ddshim
 * parses DD_TRACE_SAMPLING_RULES with json_loads during its lazy
 * initialisation, so preloaded after ddshim this makes that initialisation
 * slow, and holds a lock through it, the way a library ddshim calls (PCRE2's
 * JIT allocator, say) holds one for a moment: a child forked in the middle
 * that ran the initialisation again would wait on that lock for ever.
 *
 * Each call appends "json_loads PID" to the file REL_SLOWINIT_OUT (if set). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct json_t json_t;
typedef struct json_error_t json_error_t;

static pthread_mutex_t slow_mu = PTHREAD_MUTEX_INITIALIZER;

__attribute__((visibility("default"))) json_t *json_loads(const char *input, size_t flags, json_error_t *error);

json_t *json_loads(const char *input, size_t flags, json_error_t *error)
{
    json_t *(*real)(const char *, size_t, json_error_t *) =
        (json_t * (*)(const char *, size_t, json_error_t *)) dlsym(RTLD_NEXT, "json_loads");
    const char *out = getenv("REL_SLOWINIT_OUT");
    if (out) {
        int fd = open(out, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) {
            char line[64];
            int n = snprintf(line, sizeof line, "json_loads %d\n", (int)getpid());
            if (write(fd, line, (size_t)n) != n)
                n = 0;
            close(fd);
        }
    }
    pthread_mutex_lock(&slow_mu);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    json_t *r = real ? real(input, flags, error) : NULL;
    pthread_mutex_unlock(&slow_mu);
    return r;
}
