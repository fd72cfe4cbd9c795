/* A signal handler that writes to sockets while the program is busy with
 * HTTP and malloc, for tests/reliability/test_threads_signals.py.
 *
 *   sys_signals SECONDS RATE [malloc] [sigset]
 *
 * SIGALRM arrives RATE times a second (setitimer) for SECONDS, always on the
 * main thread. Each time, the handler writes, with plain write():
 *   - to socket A (an HTTP client connection ddshim tracks) one whole request
 *     head "GET /sig/<n> HTTP/1.1" (ddshim may inject into it);
 *   - to a socketpair (never tracked) a 16-byte record with <n>.
 * Meanwhile the main thread makes keep-alive requests on socket B (also
 * tracked) to a server thread in this process, reads A's answers, and
 * allocates and frees memory all the time (so signals land inside malloc, and
 * inside ddshim's own hooks).
 *
 * With "malloc", the main thread only allocates and frees (so that ddshim
 * is never busy on it when a signal comes, and the handler's requests are
 * traced), and a second thread reads A's answers.
 *
 * With "sigset", the handler is installed with sigset() instead of
 * sigaction() (ddshim used to leave those handlers unwrapped: a traced write
 * from a handler that interrupted malloc could deadlock).
 *
 * A's peer is a thread that reads with raw system calls (untraced), checks
 * that every request arrives whole, in order, with either no trace headers
 * or one well-formed block, and answers each. The socketpair's reader checks
 * the records are in order and whole.
 *
 * stdout: "signals=N a_requests=N a_checked=N a_injected=N pair_records=N
 * b_requests=N bad=N" — bad must be 0, a_checked == a_requests ==
 * pair_records == signals, and the program must end on its own.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* sigset(): programs still use it */

static int sock_a, sock_pair;
static volatile sig_atomic_t signals, a_requests, failed_writes;
static long a_checked, a_injected, pair_records, bad;
static volatile int stop_readers;

static void write_whole(int fd, const char *b, size_t n)
{
    int e = errno; /* a handler must not change errno */
    while (n > 0) {
        ssize_t r = write(fd, b, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            failed_writes++;
            break;
        }
        b += r;
        n -= (size_t)r;
    }
    errno = e;
}

/* Formats n without stdio (async-signal-safe). */
static size_t fmt_num(char *out, long n)
{
    char tmp[24];
    size_t k = 0, i = 0;
    do {
        tmp[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (k)
        out[i++] = tmp[--k];
    return i;
}

static void on_alarm(int sig)
{
    (void)sig;
    long n = signals;
    signals = (sig_atomic_t)(n + 1);
    char req[128];
    size_t l = 0;
    memcpy(req, "GET /sig/", 9);
    l = 9;
    l += fmt_num(req + l, n);
    static const char tail[] = " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    memcpy(req + l, tail, sizeof tail - 1);
    l += sizeof tail - 1;
    write_whole(sock_a, req, l);
    a_requests = (sig_atomic_t)(a_requests + 1);
    char rec[16];
    memset(rec, ' ', sizeof rec);
    rec[0] = '#';
    fmt_num(rec + 1, n);
    rec[15] = '\n';
    write_whole(sock_pair, rec, sizeof rec);
}

/* ---- A's peer: checks and answers (raw system calls: not traced) ------- */

static int check_head(const char *h, size_t len, long want)
{
    char line[64];
    int ll = snprintf(line, sizeof line, "GET /sig/%ld HTTP/1.1\r\nHost: 127.0.0.1\r\n", want);
    if (len < (size_t)ll + 2 || memcmp(h, line, (size_t)ll) != 0)
        return 0;
    /* Then nothing, or one block of trace headers, then CRLF. */
    const char *p = h + ll, *end = h + len - 2;
    int injected = 0, names = 0;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (eol == NULL)
            return 0;
        if (strncasecmp(p, "x-datadog-", 10) != 0 && strncasecmp(p, "traceparent:", 12) != 0 &&
            strncasecmp(p, "tracestate:", 11) != 0)
            return 0;
        if (strncasecmp(p, "x-datadog-trace-id:", 19) == 0)
            injected++;
        for (const char *c = p; c < eol; c++)
            if (*c < 0x20 || *c > 0x7e)
                return 0;
        names++;
        p = eol + 2;
    }
    if (injected > 1 || (names > 0 && injected == 0))
        return 0;
    a_injected += injected;
    return 1;
}

static void *peer_a(void *arg)
{
    int fd = (int)(long)arg;
    static char buf[1 << 16];
    size_t have = 0;
    long want = 0;
    for (;;) {
        char *end;
        while ((end = memmem(buf, have, "\r\n\r\n", 4)) != NULL) {
            size_t hl = (size_t)(end - buf) + 4;
            if (!check_head(buf, hl, want)) {
                fprintf(stderr, "bad request %ld: %.*s\n", want, (int)(hl < 300 ? hl : 300), buf);
                bad++;
            }
            want++;
            a_checked++;
            memmove(buf, buf + hl, have - hl);
            have -= hl;
            static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
            if (syscall(SYS_write, fd, ans, sizeof ans - 1) < 0)
                bad++;
        }
        if (have == sizeof buf) {
            bad++;
            break;
        }
        ssize_t r = syscall(SYS_read, fd, buf + have, sizeof buf - have);
        if (r <= 0)
            break;
        have += (size_t)r;
    }
    if (have)
        bad++;
    syscall(SYS_close, fd); /* A's reader sees the end of the stream */
    return NULL;
}

static void *pair_reader(void *arg)
{
    int fd = (int)(long)arg;
    char rec[16];
    size_t have = 0;
    for (;;) {
        ssize_t r = syscall(SYS_read, fd, rec + have, sizeof rec - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        if (have < sizeof rec)
            continue;
        have = 0;
        char want[16];
        memset(want, ' ', sizeof want);
        want[0] = '#';
        fmt_num(want + 1, pair_records);
        want[15] = '\n';
        if (memcmp(rec, want, sizeof rec) != 0)
            bad++;
        pair_records++;
    }
    return NULL;
}

/* ---- B's server: a plain traced keep-alive server ---------------------- */

static void *server_b(void *arg)
{
    int lfd = (int)(long)arg;
    int fd = accept(lfd, NULL, NULL);
    char buf[8192];
    size_t have = 0;
    for (;;) {
        char *end = memmem(buf, have, "\r\n\r\n", 4);
        if (end) {
            size_t hl = (size_t)(end - buf) + 4;
            memmove(buf, buf + hl, have - hl);
            have -= hl;
            static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if (write(fd, ans, sizeof ans - 1) < 0)
                break;
            continue;
        }
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r <= 0)
            break;
        have += (size_t)r;
    }
    close(fd);
    return NULL;
}

static int listen_any(struct sockaddr_in *a)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof *a;
    if (bind(l, (struct sockaddr *)a, sizeof *a) < 0 || listen(l, 4) < 0 ||
        getsockname(l, (struct sockaddr *)a, &sl) < 0) {
        perror("listen");
        exit(2);
    }
    return l;
}

static void *reader_a(void *arg)
{
    (void)arg;
    char buf[4096];
    while (read(sock_a, buf, sizeof buf) > 0)
        ;
    return NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: sys_signals SECONDS RATE [malloc] [sigset]\n");
        return 2;
    }
    int malloc_only = 0, use_sigset = 0;
    for (int i = 3; i < argc; i++) {
        malloc_only |= strcmp(argv[i], "malloc") == 0;
        use_sigset |= strcmp(argv[i], "sigset") == 0;
    }
    double seconds = atof(argv[1]);
    int rate = atoi(argv[2]);

    /* Threads other than main never take SIGALRM. */
    sigset_t alrm, old;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &alrm, &old);

    struct sockaddr_in aa, ab;
    int la = listen_any(&aa), lb = listen_any(&ab);
    sock_a = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(sock_a, (struct sockaddr *)&aa, sizeof aa) < 0)
        return 2;
    int pa = (int)syscall(SYS_accept4, la, NULL, NULL, 0); /* untracked peer */
    int sp[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    sock_pair = sp[0];
    pthread_t tpa, tpr, tsb;
    pthread_create(&tpa, NULL, peer_a, (void *)(long)pa);
    pthread_create(&tpr, NULL, pair_reader, (void *)(long)sp[1]);
    pthread_create(&tsb, NULL, server_b, (void *)(long)lb);
    int sock_b = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(sock_b, (struct sockaddr *)&ab, sizeof ab) < 0)
        return 2;

    pthread_t tra;
    if (malloc_only)
        pthread_create(&tra, NULL, reader_a, NULL);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    if (use_sigset)
        sigset(SIGALRM, on_alarm); /* also takes SIGALRM out of this thread's mask */
    else
        sigaction(SIGALRM, &sa, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    long usec = 1000000L / rate;
    struct itimerval it = {{0, usec}, {0, usec}};
    setitimer(ITIMER_REAL, &it, NULL);

    long b_requests = 0;
    double t_end = now() + seconds;
    char abuf[4096];
    void *keep[64] = {0};
    unsigned seed = 1;
    while (now() < t_end) {
        /* Allocation churn: signals land in malloc. */
        for (int i = 0; i < 64; i++) {
            int k = (int)(rand_r(&seed) % 64);
            free(keep[k]);
            keep[k] = malloc(16 + rand_r(&seed) % 4096);
            if (keep[k])
                memset(keep[k], i, 16);
        }
        if (malloc_only)
            continue;
        char req[128];
        int n = snprintf(req, sizeof req, "GET /b/%ld HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b_requests);
        if (write(sock_b, req, (size_t)n) != n)
            break;
        char ans[64];
        size_t got = 0;
        while (got < 40) {
            ssize_t r = read(sock_b, ans + got, 40 - got);
            if (r <= 0) {
                if (r < 0 && errno == EINTR)
                    continue;
                break;
            }
            got += (size_t)r;
        }
        if (got != 40 || memcmp(ans + 38, "ok", 2) != 0)
            bad++;
        b_requests++;
        /* Whatever A's peer answered so far. */
        while (recv(sock_a, abuf, sizeof abuf, MSG_DONTWAIT) > 0)
            ;
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    signal(SIGALRM, SIG_IGN);
    for (int i = 0; i < 64; i++)
        free(keep[i]);

    shutdown(sock_a, SHUT_WR);
    shutdown(sock_pair, SHUT_WR);
    shutdown(sock_b, SHUT_WR);
    pthread_join(tpa, NULL);
    pthread_join(tpr, NULL);
    if (malloc_only)
        pthread_join(tra, NULL);
    pthread_join(tsb, NULL);
    while (!malloc_only && recv(sock_a, abuf, sizeof abuf, MSG_DONTWAIT) > 0)
        ;
    close(sock_a);
    close(sock_b);
    close(sock_pair);
    printf("signals=%ld a_requests=%ld a_checked=%ld a_injected=%ld pair_records=%ld b_requests=%ld "
           "failed_writes=%ld bad=%ld\n",
           (long)signals, (long)a_requests, a_checked, a_injected, pair_records, b_requests,
           (long)failed_writes, bad);
    return bad == 0 && failed_writes == 0 && a_checked == signals && pair_records == signals ? 0 : 1;
}
