/* An HTTP/1.1 keep-alive client loop for `make bench` (scripts/bench.sh):
 * the same program runs untraced and under ddshim-run (which then injects
 * trace headers into every request and makes one http.client.request span
 * per request).
 *
 *   http_client_loop HOST:PORT|self  SECONDS|COUNTx  [PATH] [--idle MS] [--rss]
 *
 * HOST:PORT: an HTTP server (nginx in the benchmark). `self`: a tiny server in
 * this process, on a thread that uses raw system calls only, so ddshim never
 * sees its side (used for the memory figures: no other process needed).
 * One connection, write() a GET, read() the whole response (Content-Length),
 * again. SECONDS: a timed run after a warm-up of 10% (at least 0.2 s);
 * COUNTx: exactly COUNT requests. --idle MS: sleep that long after the loop
 * (the writer flushes meanwhile). --rss: also print VmRSS and VmHWM (kB) at
 * the end. Prints one line: requests=N seconds=S req_per_sec=R us_per_req=U
 * total=T [rss_kb=.. hwm_kb=..], T counting the warm-up requests too. Exits
 * non-zero only on a protocol or socket error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the in-process server: raw system calls, invisible to ddshim ------- */

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 13\r\n\r\nhello, world\n";

static void *serve(void *arg)
{
    int lfd = (int)(long)arg;
    for (;;) {
        int fd = (int)syscall(SYS_accept4, lfd, NULL, NULL, 0);
        if (fd < 0)
            continue;
        char buf[8192];
        size_t have = 0;
        for (;;) {
            long k = syscall(SYS_read, fd, buf + have, sizeof buf - have);
            if (k <= 0)
                break;
            have += (size_t)k;
            char *end;
            /* Requests have no body: answer each complete head. */
            while ((end = memmem(buf, have, "\r\n\r\n", 4)) != NULL) {
                size_t used = (size_t)(end + 4 - buf);
                if (syscall(SYS_write, fd, RESPONSE, sizeof RESPONSE - 1) < 0)
                    break;
                memmove(buf, buf + used, have - used);
                have -= used;
            }
            if (have == sizeof buf)
                have = 0;
        }
        syscall(SYS_close, fd);
    }
    return NULL;
}

static int start_self(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 16) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0)
        return -1;
    pthread_t th;
    if (pthread_create(&th, NULL, serve, (void *)(long)lfd) != 0)
        return -1;
    pthread_detach(th);
    return ntohs(a.sin_port);
}

/* ---- the client ---------------------------------------------------------- */

static int fd = -1;
static char req[512];
static size_t req_len;
static char rbuf[65536];
static size_t rhave;

static int one_request(void)
{
    for (size_t off = 0; off < req_len;) {
        ssize_t k = write(fd, req + off, req_len - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            perror("http_client_loop: write");
            return -1;
        }
        off += (size_t)k;
    }
    long need = -1; /* bytes of the whole response, once the head is in */
    for (;;) {
        if (need < 0) {
            char *end = memmem(rbuf, rhave, "\r\n\r\n", 4);
            if (end) {
                size_t head = (size_t)(end + 4 - rbuf);
                long clen = 0;
                char *cl = memmem(rbuf, head, "Content-Length:", 15);
                if (cl == NULL)
                    cl = memmem(rbuf, head, "content-length:", 15);
                if (cl)
                    clen = atol(cl + 15);
                need = (long)head + clen;
            }
        }
        if (need >= 0 && rhave >= (size_t)need) {
            memmove(rbuf, rbuf + need, rhave - (size_t)need);
            rhave -= (size_t)need;
            return 0;
        }
        if (rhave == sizeof rbuf) {
            fprintf(stderr, "http_client_loop: response too large\n");
            return -1;
        }
        ssize_t k = read(fd, rbuf + rhave, sizeof rbuf - rhave);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            fprintf(stderr, "http_client_loop: read: %s\n", k == 0 ? "closed" : strerror(errno));
            return -1;
        }
        rhave += (size_t)k;
    }
}

static void print_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long rss = -1, hwm = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            rss = atol(line + 6);
        else if (strncmp(line, "VmHWM:", 6) == 0)
            hwm = atol(line + 6);
    }
    if (f)
        fclose(f);
    printf(" rss_kb=%ld hwm_kb=%ld", rss, hwm);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: http_client_loop HOST:PORT|self SECONDS|COUNTx [PATH] [--idle MS] [--rss]\n");
        return 2;
    }
    const char *path = "/index.html";
    int idle_ms = 0, rss = 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--idle") == 0 && i + 1 < argc)
            idle_ms = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rss") == 0)
            rss = 1;
        else
            path = argv[i];
    }
    char host[128] = "127.0.0.1";
    int port;
    if (strcmp(argv[1], "self") == 0) {
        port = start_self();
    } else {
        const char *colon = strrchr(argv[1], ':');
        if (colon == NULL || (size_t)(colon - argv[1]) >= sizeof host)
            return 2;
        memcpy(host, argv[1], (size_t)(colon - argv[1]));
        host[colon - argv[1]] = '\0';
        port = atoi(colon + 1);
    }
    if (port <= 0) {
        fprintf(stderr, "http_client_loop: no server\n");
        return 1;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("http_client_loop: connect");
        return 1;
    }
    req_len = (size_t)snprintf(req, sizeof req,
                               "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: http_client_loop\r\n"
                               "Accept: */*\r\n\r\n",
                               path, host, port);

    const char *spec = argv[2];
    long count = spec[0] && spec[strlen(spec) - 1] == 'x' ? atol(spec) : 0;
    double secs = atof(spec);
    long n = 0, warmed = 0;
    double t0, t;
    if (count > 0) {
        t0 = now_s();
        for (; n < count; n++)
            if (one_request() < 0)
                return 1;
        t = now_s();
    } else {
        double warm = secs / 10 > 0.2 ? secs / 10 : 0.2;
        for (double end = now_s() + warm; now_s() < end; warmed++)
            if (one_request() < 0)
                return 1;
        t0 = t = now_s();
        while (t - t0 < secs) {
            for (int k = 0; k < 32; k++, n++)
                if (one_request() < 0)
                    return 1;
            t = now_s();
        }
    }
    double el = t - t0;
    if (idle_ms > 0) {
        struct timespec ts = {idle_ms / 1000, (idle_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    printf("requests=%ld seconds=%.3f req_per_sec=%.1f us_per_req=%.3f total=%ld", n, el, n / el,
           el * 1e6 / (double)n, n + warmed);
    if (rss)
        print_rss();
    printf("\n");
    close(fd);
    return 0;
}
