/*
 * http_loop — a small HTTP/1.1 client, and the untraced server it talks to,
 * for ddshim's sampling tests (tests/integration/test_sampling.py).
 *
 *   http_loop serve READY_FILE
 *       Listens on 127.0.0.1 (any free port, written to READY_FILE once
 *       listening) and answers every request 200 "ok\n", one thread per
 *       connection; "Connection: close" closes after the answer. Run it
 *       without ddshim.
 *   http_loop get HOST PORT [-n N] [-d MS] [-k] [-p PATH[,PATH...]]
 *       Makes requests one after the other: N of them (default 1), or, with
 *       -d, as many as fit in MS milliseconds (and at most N when -n is given
 *       too). One connection per request ("Connection: close"; the server
 *       closes first) unless -k, which keeps one connection for all. The
 *       paths are used in turn. Under ddshim every request is a root client
 *       span, so every request is a trace of its own. Prints
 *       "requests=N errors=E elapsed_ms=T" and exits 1 if any request failed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char ANSWER[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* ---- server ------------------------------------------------------------- */

static void *serve_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[8192];
    size_t len = 0;
    for (;;) {
        char *end = memmem(buf, len, "\r\n\r\n", 4);
        if (end == NULL) {
            if (len == sizeof buf)
                break; /* a head this big is not one of ours */
            ssize_t k = recv(fd, buf + len, sizeof buf - len, 0);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0)
                break;
            len += (size_t)k;
            continue;
        }
        size_t head = (size_t)(end - buf) + 4;
        int close_after = memmem(buf, head, "\r\nConnection: close", 19) != NULL ||
                          memmem(buf, head, "\r\nconnection: close", 19) != NULL;
        if (write_all(fd, ANSWER, sizeof ANSWER - 1) < 0 || close_after)
            break;
        memmove(buf, buf + head, len - head);
        len -= head;
    }
    close(fd);
    return NULL;
}

static int serve(const char *ready)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 1024) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0) {
        perror("http_loop serve");
        return 1;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", ready);
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%d", ntohs(a.sin_port)) < 0 || fclose(f) != 0 ||
        rename(tmp, ready) != 0) {
        perror("http_loop serve: ready file");
        return 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
                continue;
            perror("http_loop serve: accept");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t th;
        if (pthread_create(&th, &attr, serve_conn, (void *)(intptr_t)fd) != 0)
            close(fd);
    }
}

/* ---- client ------------------------------------------------------------- */

static int dial(const struct sockaddr_in *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)a, sizeof *a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One request on fd; 0 when a complete 200 answer came back. */
static int one_request(int fd, const char *host, const char *path, int keep_alive)
{
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: http_loop\r\n%s\r\n",
                     path, host, keep_alive ? "" : "Connection: close\r\n");
    if (n < 0 || (size_t)n >= sizeof req || write_all(fd, req, (size_t)n) < 0)
        return -1;
    char buf[4096];
    size_t len = 0;
    for (;;) {
        char *end = memmem(buf, len, "\r\n\r\n", 4);
        if (end != NULL) {
            size_t head = (size_t)(end - buf) + 4;
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
            if (len >= head + body) {
                if (len != head + body)
                    return -1; /* nothing else was asked for */
                return strncmp(buf, "HTTP/1.1 200 ", 13) == 0 ? 0 : -1;
            }
        }
        if (len == sizeof buf)
            return -1;
        ssize_t k = recv(fd, buf + len, sizeof buf - len, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        len += (size_t)k;
    }
}

static int get(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: http_loop get HOST PORT [-n N] [-d MS] [-k] [-p PATH[,PATH...]]\n");
        return 2;
    }
    const char *host = argv[2];
    int port = atoi(argv[3]);
    long n = -1, dur_ms = -1;
    int keep_alive = 0;
    char *paths[64];
    int npaths = 0;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            n = atol(argv[++i]);
        else if (strcmp(argv[i], "-d") == 0 && i + 1 < argc)
            dur_ms = atol(argv[++i]);
        else if (strcmp(argv[i], "-k") == 0)
            keep_alive = 1;
        else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
            for (char *save = NULL, *p = strtok_r(argv[++i], ",", &save); p && npaths < 64;
                 p = strtok_r(NULL, ",", &save))
                paths[npaths++] = p;
        } else {
            fprintf(stderr, "http_loop get: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (npaths == 0)
        paths[npaths++] = "/";
    if (n < 0 && dur_ms < 0)
        n = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "http_loop get: HOST must be an IPv4 address\n");
        return 2;
    }
    int64_t t0 = now_ms();
    long done = 0, errors = 0;
    int fd = -1;
    while ((n < 0 || done < n) && (dur_ms < 0 || now_ms() - t0 < dur_ms)) {
        if (fd < 0 && (fd = dial(&a)) < 0) {
            errors++;
            done++;
            continue;
        }
        int rc = one_request(fd, host, paths[done % npaths], keep_alive);
        if (rc < 0)
            errors++;
        if (!keep_alive || rc < 0) {
            close(fd);
            fd = -1;
        }
        done++;
    }
    if (fd >= 0)
        close(fd);
    printf("requests=%ld errors=%ld elapsed_ms=%lld\n", done, errors, (long long)(now_ms() - t0));
    return errors ? 1 : 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 3 && strcmp(argv[1], "serve") == 0)
        return serve(argv[2]);
    if (argc >= 2 && strcmp(argv[1], "get") == 0)
        return get(argc, argv);
    fprintf(stderr, "usage: http_loop serve READY_FILE | http_loop get HOST PORT [-n N] [-d MS] [-k] [-p PATHS]\n");
    return 2;
}
