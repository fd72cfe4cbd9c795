/* Two threads writing whole requests to one socket at once, a third reading
 * the answers, for tests/reliability/test_threads_signals.py.
 *
 *   sys_sharedsock REQUESTS
 *
 * The client socket is traced (connect); its peer is accepted and served
 * with raw system calls, so ddshim never sees that end. Each writer thread
 * sends REQUESTS request heads "GET /w<t>/<i> HTTP/1.1", each with a single
 * write(); each write must return exactly its length (a small blocking write
 * to a socket whose peer keeps reading). The server checks that every head
 * arrives whole, with at most one trace-header block, and answers each; the
 * reader thread reads the answers through the traced socket.
 *
 * Without ddshim the kernel keeps each small write whole. ddshim releases the
 * connection's lock during a write's system call; a second thread's write
 * then must not use or drop the header block the first one carries.
 *
 * stdout: "writes=N wrong_returns=N heads=N bad=N injected=N answers=N" —
 * wrong_returns and bad must be 0, heads == answers == writes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int sock, nreq;
static long wrong_returns, heads, bad, injected, answers;
static pthread_barrier_t go;

static ssize_t raw_read(int fd, void *b, size_t n) { return syscall(SYS_read, fd, b, n); }

static int raw_write_all(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t r = syscall(SYS_write, fd, b, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

static int starts(const char *p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(end - p) >= n && strncasecmp(p, lit, n) == 0;
}

/* One head [p, end) ending with its empty line: a request line of ours,
 * Host, and at most one block of trace headers. */
static int head_ok(const char *p, const char *end)
{
    if (!starts(p, end, "GET /w"))
        return 0;
    int host = 0, trace_id = 0;
    const char *line = p;
    while (line < end) {
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (eol == NULL)
            return 0;
        if (line != p && eol != line) {
            if (starts(line, eol, "host: "))
                host++;
            else if (starts(line, eol, "x-datadog-trace-id: "))
                trace_id++;
            else if (!starts(line, eol, "x-datadog-") && !starts(line, eol, "traceparent: ") &&
                     !starts(line, eol, "tracestate: ") && !starts(line, eol, "b3"))
                return 0;
        }
        line = eol + 2;
    }
    if (trace_id)
        injected++;
    return host == 1 && trace_id <= 1;
}

static void *server(void *arg)
{
    int fd = (int)(long)arg;
    static char buf[1 << 16];
    size_t have = 0;
    const char *answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    for (;;) {
        ssize_t r = raw_read(fd, buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        have += (size_t)r;
        char *p = buf, *end;
        while ((end = memmem(p, have - (size_t)(p - buf), "\r\n\r\n", 4)) != NULL) {
            heads++;
            if (!head_ok(p, end + 2))
                bad++;
            if (raw_write_all(fd, answer, strlen(answer)) < 0)
                bad++;
            p = end + 4;
        }
        have -= (size_t)(p - buf);
        memmove(buf, p, have);
        if (have == sizeof buf) {
            bad++;
            break;
        }
    }
    return NULL;
}

static void *writer(void *arg)
{
    int t = (int)(long)arg;
    char req[128];
    pthread_barrier_wait(&go);
    for (int i = 0; i < nreq; i++) {
        int n = snprintf(req, sizeof req, "GET /w%d/%d HTTP/1.1\r\nHost: shared\r\n\r\n", t, i);
        ssize_t r = write(sock, req, (size_t)n);
        if (r != n)
            __atomic_add_fetch(&wrong_returns, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    const char *one = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    size_t len = strlen(one), total = 0, want = (size_t)nreq * 2 * len;
    char buf[4096];
    while (total < want) {
        ssize_t r = recv(sock, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        total += (size_t)r;
    }
    answers = (long)(total / len);
    return NULL;
}

int main(int argc, char **argv)
{
    nreq = argc > 1 ? atoi(argv[1]) : 20000;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0) {
        perror("listen");
        return 2;
    }
    sock = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(sock, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect");
        return 2;
    }
    int sfd = (int)syscall(SYS_accept4, lfd, NULL, NULL, 0);
    if (sfd < 0) {
        perror("accept");
        return 2;
    }
    pthread_t ts, tr, tw[2];
    pthread_barrier_init(&go, NULL, 2);
    pthread_create(&ts, NULL, server, (void *)(long)sfd);
    pthread_create(&tr, NULL, reader, NULL);
    for (long t = 0; t < 2; t++)
        pthread_create(&tw[t], NULL, writer, (void *)t);
    for (int t = 0; t < 2; t++)
        pthread_join(tw[t], NULL);
    pthread_join(tr, NULL);
    shutdown(sock, SHUT_WR);
    pthread_join(ts, NULL);
    close(sock);
    printf("writes=%d wrong_returns=%ld heads=%ld bad=%ld injected=%ld answers=%ld\n", 2 * nreq,
           wrong_returns, heads, bad, injected, answers);
    return 0;
}
