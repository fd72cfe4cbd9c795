/* Many threads opening, using and closing HTTP connections at once, for
 * tests/reliability/test_threads_signals.py (also run under ThreadSanitizer).
 *
 *   sys_threads NTHREADS ITERATIONS REQUESTS
 *
 * A server in this process (an acceptor thread, one thread per connection)
 * answers keep-alive requests. NTHREADS client threads start together; each
 * ITERATIONS times opens a connection, makes REQUESTS requests on it (random
 * call families, sometimes a body, sometimes a pipelined pair), and closes it
 * (sometimes shutting it down first, sometimes with close_range on just that
 * fd). fd numbers are reused across threads all the time.
 *
 * stdout: "requests=N answered=N served=N pipelined=N" — the first three must
 * be equal; pipelined counts the second requests of pipelined pairs (sent in
 * the same write as the first, so they carry no trace headers).
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
#include <sys/uio.h>
#include <unistd.h>

static struct sockaddr_in addr;
static int lfd, nthreads, iters, reqs;
static long n_requests, n_answered, n_served, n_second;
static pthread_barrier_t start;

/* Reads one request or response (head, then a Content-Length body) from
 * fd into buf; returns its length, 0 at end of stream, -1 on error. */
static ssize_t read_message(int fd, char *buf, size_t cap, size_t *have)
{
    for (;;) {
        char *end = *have >= 4 ? memmem(buf, *have, "\r\n\r\n", 4) : NULL;
        if (end) {
            size_t hl = (size_t)(end - buf) + 4;
            char save = buf[hl - 1];
            buf[hl - 1] = '\0';
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            buf[hl - 1] = save;
            size_t total = hl + (cl ? (size_t)strtoul(cl + 17, NULL, 10) : 0);
            if (*have >= total)
                return (ssize_t)total;
        }
        if (*have == cap)
            return -1;
        ssize_t r = read(fd, buf + *have, cap - *have);
        if (r <= 0)
            return r;
        *have += (size_t)r;
    }
}

static void consume(char *buf, size_t *have, size_t n)
{
    memmove(buf, buf + n, *have - n);
    *have -= n;
}

static void *serve(void *arg)
{
    int fd = (int)(long)arg;
    char buf[16384];
    size_t have = 0;
    for (;;) {
        ssize_t n = read_message(fd, buf, sizeof buf, &have);
        if (n <= 0)
            break;
        consume(buf, &have, (size_t)n);
        __atomic_add_fetch(&n_served, 1, __ATOMIC_RELAXED);
        static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        if (send(fd, ans, sizeof ans - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof ans - 1))
            break;
    }
    close(fd);
    return NULL;
}

static void *acceptor(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break;
        }
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256 * 1024);
        if (pthread_create(&t, &at, serve, (void *)(long)fd) != 0)
            close(fd);
        pthread_attr_destroy(&at);
    }
    return NULL;
}

static ssize_t send_any(int fd, const char *b, size_t n, unsigned *seed)
{
    size_t a = n / 2;
    struct iovec v[2] = {{(void *)b, a}, {(void *)(b + a), n - a}};
    struct msghdr m = {.msg_iov = v, .msg_iovlen = 2};
    switch (rand_r(seed) % 4) {
    case 0: return write(fd, b, n);
    case 1: return send(fd, b, n, MSG_NOSIGNAL);
    case 2: return writev(fd, v, 2);
    default: return sendmsg(fd, &m, MSG_NOSIGNAL);
    }
}

static int send_all(int fd, const char *b, size_t n, unsigned *seed)
{
    while (n > 0) {
        ssize_t r = send_any(fd, b, n, seed);
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

static void *client(void *arg)
{
    unsigned seed = (unsigned)(long)arg * 2654435761u + 1;
    pthread_barrier_wait(&start);
    char buf[16384];
    for (int it = 0; it < iters; it++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            if (fd >= 0)
                close(fd);
            continue;
        }
        size_t have = 0;
        for (int q = 0; q < reqs;) {
            int pair = q + 1 < reqs && rand_r(&seed) % 4 == 0;
            char req[1024];
            size_t n = 0;
            for (int k = 0; k <= pair; k++) {
                if (rand_r(&seed) % 2)
                    n += (size_t)snprintf(req + n, sizeof req - n,
                                          "POST /t/%ld/%d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                          "Content-Length: 11\r\n\r\nhello world",
                                          (long)arg, q + k);
                else
                    n += (size_t)snprintf(req + n, sizeof req - n,
                                          "GET /t/%ld/%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", (long)arg, q + k);
            }
            if (send_all(fd, req, n, &seed) < 0)
                break;
            if (pair) /* ddshim injects into the first head of a write only */
                __atomic_add_fetch(&n_second, 1, __ATOMIC_RELAXED);
            __atomic_add_fetch(&n_requests, pair + 1, __ATOMIC_RELAXED);
            for (int k = 0; k <= pair; k++) {
                ssize_t m = read_message(fd, buf, sizeof buf, &have);
                if (m <= 0)
                    break;
                consume(buf, &have, (size_t)m);
                __atomic_add_fetch(&n_answered, 1, __ATOMIC_RELAXED);
            }
            q += pair + 1;
        }
        switch (rand_r(&seed) % 3) {
        case 0:
            shutdown(fd, SHUT_WR);
            close(fd);
            break;
        case 1:
            close_range((unsigned)fd, (unsigned)fd, 0);
            break;
        default:
            close(fd);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: sys_threads NTHREADS ITERATIONS REQUESTS\n");
        return 2;
    }
    nthreads = atoi(argv[1]);
    iters = atoi(argv[2]);
    reqs = atoi(argv[3]);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 1024) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &sl) < 0) {
        perror("listen");
        return 2;
    }
    pthread_t acc;
    pthread_create(&acc, NULL, acceptor, NULL);
    pthread_barrier_init(&start, NULL, (unsigned)nthreads);
    pthread_t *th = calloc((size_t)nthreads, sizeof *th);
    for (long i = 0; i < nthreads; i++)
        pthread_create(&th[i], NULL, client, (void *)i);
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    /* The server threads answer before the clients count an answer, so
     * served is final once every client is done. */
    printf("requests=%ld answered=%ld served=%ld pipelined=%ld\n", n_requests, n_answered, n_served, n_second);
    free(th);
    return n_requests == n_answered && n_answered == n_served &&
                   n_requests == (long)nthreads * iters * reqs ? 0 : 1;
}
