// link: -ldl
/* Loads ddshim with dlopen() instead of LD_PRELOAD and makes one HTTP request
 * through its exported hooks, for tests/reliability/test_loading.py.
 *
 * The loader ignores LD_PRELOAD paths for setuid programs, so a setuid
 * program only meets ddshim through /etc/ld.so.preload; this helper is the
 * way to run ddshim's constructor under AT_SECURE without touching the
 * system: made setuid, it must find ddshim inert (no header injected, no
 * thread, no log file); not setuid, the same calls are traced.
 *
 *   rel_dlopen LIBDDSHIM HOST PORT
 * Prints "status S" and "tasks N"; exits 0 when the request got an answer.
 * Whether trace headers were injected, the test asks its server. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*read_fn)(int, void *, size_t);
typedef int (*close_fn)(int);

static int tasks(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: rel_dlopen LIBDDSHIM HOST PORT\n");
        return 64;
    }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    connect_fn dconnect = (connect_fn)dlsym(h, "connect");
    write_fn dwrite = (write_fn)dlsym(h, "write");
    read_fn dread = (read_fn)dlsym(h, "read");
    close_fn dclose = (close_fn)dlsym(h, "close");
    if (!dconnect || !dwrite || !dread || !dclose) {
        fprintf(stderr, "hooks not found\n");
        return 1;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    inet_pton(AF_INET, argv[2], &a.sin_addr);
    if (dconnect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("connect");
        return 1;
    }
    char req[256], ans[65536];
    int n = snprintf(req, sizeof req, "GET /dlopen HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", argv[2]);
    if (dwrite(fd, req, (size_t)n) != n)
        return 1;
    size_t got = 0;
    ssize_t k;
    while (got < sizeof ans - 1 && (k = dread(fd, ans + got, sizeof ans - 1 - got)) > 0)
        got += (size_t)k;
    ans[got] = '\0';
    dclose(fd);
    int status = got > 12 ? atoi(ans + 9) : -1;
    printf("status %d\ntasks %d\n", status, tasks());
    return status > 0 ? 0 : 1;
}
