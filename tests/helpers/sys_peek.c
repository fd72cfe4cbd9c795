/* A server that peeks before it reads, and a client that peeks at its
 * answers, in one process, for tests/reliability/test_syscalls.py.
 *
 *   sys_peek NCONN NREQ
 *
 * A server thread accepts NCONN connections one after the other and serves
 * NREQ keep-alive requests on each. Before reading a request it peeks at the
 * first bytes, sometimes twice, with a random call (recv, recvfrom, recvmsg,
 * and the fortified recv into a fixed array); then it reads the head in small
 * pieces, the body by Content-Length, and answers 200 with a 2-byte body.
 * The main thread is the client: GET or POST, then it peeks at the answer
 * (also with MSG_PEEK|MSG_DONTWAIT) before reading it. Peeked bytes must be
 * parsed once: the test expects NCONN*NREQ server spans and as many client
 * spans, each server span the child of one client span.
 *
 * stdout: "served=N answered=N".
 */
// link: -O2 -D_FORTIFY_SOURCE=2
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static int nconn, nreq, lfd;
static struct sockaddr_in addr;
static int served;

static unsigned seed_of(int a, int b)
{
    return (unsigned)(a * 7919 + b * 104729 + 17);
}

static ssize_t peek_some(int fd, unsigned *seed, int dontwait)
{
    char small[64];
    char *heap = malloc(64);
    ssize_t r;
    int fl = MSG_PEEK | (dontwait ? MSG_DONTWAIT : 0);
    switch (rand_r(seed) % 4) {
    case 0:
        r = recv(fd, heap, 1 + (size_t)(rand_r(seed) % 64), fl);
        break;
    case 1:
        r = recvfrom(fd, heap, 1 + (size_t)(rand_r(seed) % 64), fl, NULL, NULL);
        break;
    case 2: {
        struct iovec v = {heap, 64};
        struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
        r = recvmsg(fd, &m, fl);
        break;
    }
    default: {
        volatile size_t len = 1 + (size_t)(rand_r(seed) % 64);
        r = recv(fd, small, len, fl); /* __recv_chk */
    }
    }
    free(heap);
    return r;
}

/* Reads one request (head in pieces, then the body); 0 at end of stream. */
static int read_request(int fd, unsigned *seed)
{
    char head[8192];
    size_t n = 0;
    while (n < sizeof head - 1) {
        size_t want = 1 + (size_t)(rand_r(seed) % 40);
        char *end = n >= 4 ? memmem(head, n, "\r\n\r\n", 4) : NULL;
        if (end)
            break;
        /* Never read past the head: the client sends one request at a
         * time, but do it right anyway. */
        ssize_t r = read(fd, head + n, want < sizeof head - 1 - n ? want : sizeof head - 1 - n);
        if (r <= 0)
            return 0;
        n += (size_t)r;
    }
    head[n] = '\0';
    char *cl = strcasestr(head, "\r\ncontent-length:");
    long body = cl ? strtol(cl + 17, NULL, 10) : 0;
    char *end = strstr(head, "\r\n\r\n");
    body -= (long)(n - (size_t)(end + 4 - head));
    char buf[4096];
    while (body > 0) {
        ssize_t r = read(fd, buf, body < (long)sizeof buf ? (size_t)body : sizeof buf);
        if (r <= 0)
            return 0;
        body -= r;
    }
    return 1;
}

static void *server(void *arg)
{
    (void)arg;
    for (int c = 0; c < nconn; c++) {
        int fd = accept(lfd, NULL, NULL);
        unsigned seed = seed_of(c, 1);
        for (;;) {
            int peeks = 1 + (int)(rand_r(&seed) % 2);
            ssize_t p = 0;
            for (int i = 0; i < peeks; i++)
                p = peek_some(fd, &seed, 0);
            if (p <= 0 || !read_request(fd, &seed))
                break;
            served++;
            static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if (write(fd, ans, sizeof ans - 1) != (ssize_t)(sizeof ans - 1))
                break;
        }
        close(fd);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: sys_peek NCONN NREQ\n");
        return 2;
    }
    nconn = atoi(argv[1]);
    nreq = atoi(argv[2]);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 16) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &sl) < 0) {
        perror("listen");
        return 2;
    }
    pthread_t th;
    pthread_create(&th, NULL, server, NULL);
    int answered = 0;
    for (int c = 0; c < nconn; c++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            return 3;
        }
        unsigned seed = seed_of(c, 2);
        for (int i = 0; i < nreq; i++) {
            char req[512];
            int n = i % 2 ? snprintf(req, sizeof req,
                                     "POST /peek/%d/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello", c, i)
                          : snprintf(req, sizeof req, "GET /peek/%d/%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", c, i);
            if (write(fd, req, (size_t)n) != n)
                return 3;
            /* Peek (non-blocking first, probably nothing yet), then wait
             * with a blocking peek, then read the answer. */
            peek_some(fd, &seed, 1);
            peek_some(fd, &seed, 0);
            char ans[256];
            size_t got = 0;
            while (got < 40) {
                ssize_t r = read(fd, ans + got, 40 - got);
                if (r <= 0)
                    return 3;
                got += (size_t)r;
            }
            if (memcmp(ans + 38, "ok", 2) == 0)
                answered++;
        }
        close(fd);
    }
    pthread_join(th, NULL);
    printf("served=%d answered=%d\n", served, answered);
    return served == nconn * nreq && answered == served ? 0 : 1;
}
