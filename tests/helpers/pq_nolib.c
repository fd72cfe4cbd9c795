/* A program that never loads libpq, yet looks PQexec up by name (as a plugin
 * host probing for it would), for tests/integration/test_postgres.py.
 *
 * Alone it finds nothing. Under ddshim it finds ddshim's hook, whose real
 * function does not exist: the call must fail the way libpq would fail it
 * (NULL), with errno ENOSYS, and never crash. Exits 0 in both cases. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef void *(*exec_fn)(void *conn, const char *query);

int main(void)
{
    exec_fn f = (exec_fn)dlsym(RTLD_DEFAULT, "PQexec");
    if (f == NULL) {
        printf("no PQexec\n");
        return 0;
    }
    errno = 0;
    void *r = f(NULL, "SELECT 1");
    printf("PQexec -> %s, %s\n", r ? "a result" : "NULL", strerror(errno));
    return r == NULL && errno == ENOSYS ? 0 : 1;
}
