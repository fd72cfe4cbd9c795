/* A non-blocking HTTP/1.1 client that makes ddshim's write accounting work
 * hard, for tests/reliability/test_syscalls.py.
 *
 *   sys_nbclient PORT SEED NREQUESTS APPFILE
 *
 * One keep-alive connection to 127.0.0.1:PORT with a tiny SO_SNDBUF, in
 * O_NONBLOCK mode. Requests have random methods, extra headers and bodies
 * (Content-Length or chunked; bodies sometimes contain request lines), and
 * go out in batches of 1-4 (pipelined) before the answers are read. Each
 * request's first write holds its whole head plus a random part of the rest;
 * later writes have random sizes and use a random call (write, writev with
 * random splits, send, sendto, sendmsg). Partial counts are honoured, EAGAIN
 * waits with poll(). Every byte the program meant to send, in order, goes to
 * APPFILE; the test compares it with what the server received minus the
 * injected header lines. The server must answer each request with exactly
 * "HTTP/1.1 200 OK ... Content-Length: 3\r\n\r\nok\n" (RawServer).
 *
 * stdout: "requests=N responses=N partial=N eagain=N zero=N" (zero: writes
 * that returned 0, which must never happen).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static uint64_t rng;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static size_t rnd_upto(size_t n) /* 0..n */
{
    return n ? rnd() % (n + 1) : 0;
}

static long n_partial, n_eagain, n_zero;
static FILE *appf;

static void wait_fd(int fd, short ev)
{
    struct pollfd p = {fd, ev, 0};
    if (poll(&p, 1, 10000) <= 0) {
        fprintf(stderr, "poll timed out\n");
        exit(3);
    }
}

/* One call of a random family for buf[0..len). */
static ssize_t one_write(int fd, const char *buf, size_t len)
{
    struct iovec v[8];
    int n = 0;
    switch (rnd() % 5) {
    case 0:
        return write(fd, buf, len);
    case 1:
        return send(fd, buf, len, MSG_NOSIGNAL);
    case 2:
        return sendto(fd, buf, len, 0, NULL, 0);
    default: {
        /* Random splits, empty pieces included. */
        int pieces = 1 + (int)(rnd() % 8);
        size_t off = 0;
        for (int i = 0; i < pieces; i++) {
            size_t take = i == pieces - 1 ? len - off : rnd_upto(len - off);
            v[n].iov_base = (void *)(buf + off);
            v[n].iov_len = take;
            n++;
            off += take;
        }
        if (rnd() % 2)
            return writev(fd, v, n);
        struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)n};
        return sendmsg(fd, &m, 0);
    }
    }
}

/* The program's writes of buf[0..len): the first offers `first` bytes,
 * the next ones random sizes; a partial count is honoured. */
static void send_request(int fd, const char *buf, size_t len, size_t first)
{
    size_t off = 0;
    int initial = 1;
    while (off < len) {
        size_t want = initial ? first : 1 + rnd_upto(len - off - 1);
        if (want > len - off)
            want = len - off;
        ssize_t r = one_write(fd, buf + off, want);
        if (r > 0) {
            if ((size_t)r < want)
                n_partial++;
            fwrite(buf + off, 1, (size_t)r, appf);
            off += (size_t)r;
            initial = 0; /* the rest of the head may now be offered in pieces */
        } else if (r == 0) {
            n_zero++;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            n_eagain++;
            wait_fd(fd, POLLOUT);
            /* A program may offer the same bytes again or something shorter;
             * this one keeps at least the head whole until it has gone. */
        } else {
            perror("write");
            exit(3);
        }
    }
}

static const char ANSWER_TAIL[] = "\r\n\r\nok\n";

/* Reads until `want` answers have arrived; returns how many. */
static int read_answers(int fd, int want)
{
    static char acc[1 << 16];
    static size_t have;
    int got = 0;
    while (got < want) {
        char *end;
        while ((end = memmem(acc, have, ANSWER_TAIL, sizeof ANSWER_TAIL - 1)) != NULL) {
            size_t used = (size_t)(end - acc) + sizeof ANSWER_TAIL - 1;
            memmove(acc, acc + used, have - used);
            have -= used;
            got++;
        }
        if (got >= want)
            break;
        ssize_t r;
        size_t room = sizeof acc - have;
        size_t ask = 1 + rnd_upto(room - 1);
        switch (rnd() % 3) {
        case 0:
            r = read(fd, acc + have, ask);
            break;
        case 1:
            r = recv(fd, acc + have, ask, 0);
            break;
        default: {
            struct iovec v[2] = {{acc + have, ask / 2}, {acc + have + ask / 2, ask - ask / 2}};
            struct msghdr m = {.msg_iov = v, .msg_iovlen = 2};
            r = recvmsg(fd, &m, 0);
        }
        }
        if (r > 0)
            have += (size_t)r;
        else if (r == 0)
            break;
        else if (errno == EAGAIN || errno == EWOULDBLOCK)
            wait_fd(fd, POLLIN);
        else {
            perror("read");
            exit(3);
        }
    }
    return got;
}

static const char *const METHODS[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};

/* One request into buf; *head_len receives its head's length. */
static size_t make_request(char *buf, size_t cap, int i, size_t *head_len)
{
    const char *m = METHODS[rnd() % 6];
    size_t n = (size_t)snprintf(buf, cap, "%s /r/%d?q=%u HTTP/1.1\r\nHost: 127.0.0.1\r\n", m, i, rnd());
    int extra = (int)(rnd() % 12);
    for (int h = 0; h < extra; h++) {
        n += (size_t)snprintf(buf + n, cap - n, "X-Extra-%d: ", h);
        size_t vl = rnd_upto(rnd() % 4 == 0 ? 400 : 40);
        for (size_t k = 0; k < vl; k++)
            buf[n++] = (char)('!' + rnd() % 94);
        buf[n++] = '\r';
        buf[n++] = '\n';
    }
    size_t blen = rnd() % 3 == 0 ? 0 : rnd_upto(rnd() % 4 == 0 ? 60000 : 3000);
    int chunked = blen > 0 && rnd() % 4 == 0;
    if (chunked)
        n += (size_t)snprintf(buf + n, cap - n, "Transfer-Encoding: chunked\r\n\r\n");
    else if (blen > 0 || strcmp(m, "POST") == 0)
        n += (size_t)snprintf(buf + n, cap - n, "Content-Length: %zu\r\n\r\n", blen);
    else
        n += (size_t)snprintf(buf + n, cap - n, "\r\n");
    *head_len = n;
    /* The body: random bytes, sometimes a request line in the middle. */
    char *body = malloc(blen + 64);
    for (size_t k = 0; k < blen; k++)
        body[k] = (char)rnd();
    if (blen > 40 && rnd() % 2)
        memcpy(body + rnd_upto(blen - 40), "GET /inside HTTP/1.1\r\nHost: x\r\n\r\n", 34);
    if (!chunked) {
        memcpy(buf + n, body, blen);
        n += blen;
    } else {
        size_t off = 0;
        while (off < blen) {
            size_t c = 1 + rnd_upto(blen - off - 1);
            n += (size_t)snprintf(buf + n, cap - n, "%zx\r\n", c);
            memcpy(buf + n, body + off, c);
            n += c;
            buf[n++] = '\r';
            buf[n++] = '\n';
            off += c;
        }
        n += (size_t)snprintf(buf + n, cap - n, "0\r\n\r\n");
    }
    free(body);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: sys_nbclient PORT SEED NREQUESTS APPFILE\n");
        return 2;
    }
    int port = atoi(argv[1]);
    rng = strtoull(argv[2], NULL, 10) * 0x9E3779B97F4A7C15ull + 1;
    int nreq = atoi(argv[3]);
    appf = fopen(argv[4], "wb");
    if (appf == NULL) {
        perror(argv[4]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int sz = 4096;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect");
        return 3;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    size_t cap = 200000;
    char *req = malloc(cap);
    int sent = 0, answers = 0;
    while (sent < nreq) {
        int batch = 1 + (int)(rnd() % 4);
        if (batch > nreq - sent)
            batch = nreq - sent;
        for (int b = 0; b < batch; b++) {
            size_t hl, n = make_request(req, cap, sent, &hl);
            size_t first = hl + rnd_upto(n - hl);
            send_request(fd, req, n, first);
            sent++;
        }
        answers += read_answers(fd, batch);
    }
    fclose(appf);
    printf("requests=%d responses=%d partial=%ld eagain=%ld zero=%ld\n", sent, answers, n_partial,
           n_eagain, n_zero);
    close(fd);
    free(req);
    return answers == sent && n_zero == 0 ? 0 : 1;
}
