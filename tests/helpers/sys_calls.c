/* Every hooked call family in every situation a program meets, for
 * tests/reliability/test_syscalls.py: the test runs this once untraced and
 * once under ddshim and requires byte-identical output.
 *
 *   sys_calls
 *
 * Each line is "<situation> <call> <fd kind>: ret=<r> errno=<name>" (plus the
 * data read, escaped). fd kinds: "client" and "server" are the two ends of a
 * loopback TCP connection made here (ddshim tracks both, as HTTP client and
 * server), "unix" is a socketpair (never tracked), "pipe" a pipe. Writes that
 * succeed on the client carry request heads, so ddshim injects into them; the
 * peer prints what it received with the trace-context lines removed. Reads
 * whose data must match exactly read requests that already carry a
 * traceparent (nothing injected). A partial count, whose value depends on the
 * kernel's buffer space (which injected bytes use too), prints as "partial".
 *
 * Built with _FORTIFY_SOURCE=2 so that reads into arrays of known size go
 * through __read_chk/__recv_chk/__recvfrom_chk (checked by the test with nm).
 */
// link: -O2 -D_FORTIFY_SOURCE=2
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wdeprecated-declarations" /* sigset(): programs still use it */

static volatile sig_atomic_t n_sigpipe, n_alarm;

static void on_sigpipe(int s)
{
    (void)s;
    n_sigpipe++;
}

static void on_alarm(int s)
{
    (void)s;
    n_alarm++;
}

static const char *ename(int e)
{
    switch (e) {
    case 0: return "0";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case EINTR: return "EINTR";
    case EPIPE: return "EPIPE";
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EINPROGRESS: return "EINPROGRESS";
    case EISCONN: return "EISCONN";
    case ENOTCONN: return "ENOTCONN";
    case ENOTSOCK: return "ENOTSOCK";
    case EINVAL: return "EINVAL";
    case EFAULT: return "EFAULT";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EALREADY: return "EALREADY";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "E%d", e);
        return buf;
    }
    }
}

/* One result line. errno is printed only for failures (on success it is
 * whatever it was, which the hooks must not change either: see the "errno
 * kept" lines). */
static void res(const char *sit, const char *call, const char *kind, ssize_t r, int e, size_t want)
{
    if (r > 0 && want > 0 && (size_t)r < want)
        printf("%s %s %s: ret=partial\n", sit, call, kind);
    else
        printf("%s %s %s: ret=%zd errno=%s\n", sit, call, kind, r, r < 0 ? ename(e) : "-");
    fflush(stdout);
}

static void show_data(const char *sit, const char *call, const char *kind, const char *buf, ssize_t n)
{
    printf("%s %s %s: data=\"", sit, call, kind);
    for (ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            putchar(c);
        else
            printf("\\x%02x", c);
    }
    printf("\"\n");
    fflush(stdout);
}

/* ---- connections ------------------------------------------------------ */

static int listener = -1, small_listener = -1;
static struct sockaddr_in laddr, small_laddr;

/* small: accepted sockets get a tiny receive buffer (it must be set on the
 * listener: the window is negotiated during the handshake). */
static int listen_on(struct sockaddr_in *out, int small)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1, sz = 2048;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (small)
        setsockopt(l, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    memset(out, 0, sizeof *out);
    out->sin_family = AF_INET;
    out->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof *out;
    if (bind(l, (struct sockaddr *)out, sizeof *out) < 0 || listen(l, 64) < 0 ||
        getsockname(l, (struct sockaddr *)out, &sl) < 0) {
        perror("listener");
        exit(2);
    }
    return l;
}

static void make_listener(void)
{
    listener = listen_on(&laddr, 0);
    small_listener = listen_on(&small_laddr, 1);
}

/* A connected pair: *cl is the connect()ed end, *sv the accept()ed one.
 * small: tiny buffers, so that a few KiB fill them. */
static void tcp_pair(int *cl, int *sv, int small)
{
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (small) {
        int sz = 4096;
        setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    struct sockaddr_in *to = small ? &small_laddr : &laddr;
    if (connect(c, (struct sockaddr *)to, sizeof *to) < 0) {
        perror("connect");
        exit(2);
    }
    int s = accept4(small ? small_listener : listener, NULL, NULL, 0);
    if (s < 0) {
        perror("accept4");
        exit(2);
    }
    if (small) {
        int sz = 2048;
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *cl = c;
    *sv = s;
}

static void set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK));
}

/* Arms a one-shot SIGALRM (no SA_RESTART) so that a blocking call fails
 * with EINTR. */
static void arm_alarm(void)
{
    struct itimerval it = {{0, 0}, {0, 30000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static void disarm_alarm(void)
{
    struct itimerval it = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static int n_injected; /* trace-context lines removed by strip_injected */

/* Drops injected trace-context header lines (the untraced run has none);
 * returns the new length. */
static size_t strip_injected(char *buf, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        const char *eol = memchr(buf + i, '\n', n - i);
        size_t ll = eol ? (size_t)(eol - (buf + i)) + 1 : n - i;
        const char *l = buf + i;
        int inj = (ll > 11 && strncasecmp(l, "x-datadog-", 10) == 0) ||
                  (ll > 12 && strncasecmp(l, "traceparent:", 12) == 0) ||
                  (ll > 11 && strncasecmp(l, "tracestate:", 11) == 0);
        if (inj)
            n_injected++;
        else {
            memmove(buf + w, l, ll);
            w += ll;
        }
        i += ll;
    }
    return w;
}

/* Reads what is available, waiting up to ~1 s of silence (less once `want`
 * bytes are in), with the raw system call (the reader is not under test). */
static size_t drain_raw_want(int fd, char *out, size_t cap, size_t want)
{
    size_t n = 0;
    int idle = want ? 200 : 20;
    set_nonblock(fd, 1);
    for (int tries = 0; tries < idle && n < cap; tries++) {
        ssize_t k = syscall(SYS_read, fd, out + n, cap - n);
        if (k > 0) {
            n += (size_t)k;
            tries = 0;
            continue;
        }
        if (k == 0 || (want && n >= want))
            break;
        usleep(5000);
    }
    set_nonblock(fd, 0);
    return n;
}

static size_t drain_raw(int fd, char *out, size_t cap)
{
    return drain_raw_want(fd, out, cap, 0);
}

static size_t drain(int fd, char *out, size_t cap, size_t want)
{
    return strip_injected(out, drain_raw_want(fd, out, cap, want));
}

/* ---- write families ----------------------------------------------------- */

typedef ssize_t (*wfn)(int fd, const char *buf, size_t len);

static ssize_t w_write(int fd, const char *b, size_t n) { return write(fd, b, n); }
static ssize_t w_send(int fd, const char *b, size_t n) { return send(fd, b, n, 0); }
static ssize_t w_send_nosig(int fd, const char *b, size_t n) { return send(fd, b, n, MSG_NOSIGNAL); }
static ssize_t w_sendto(int fd, const char *b, size_t n) { return sendto(fd, b, n, 0, NULL, 0); }

static ssize_t w_writev(int fd, const char *b, size_t n)
{
    /* Three pieces, the head split across them. */
    size_t a = n / 3, c = n / 3;
    struct iovec v[3] = {{(void *)b, a}, {(void *)(b + a), c}, {(void *)(b + a + c), n - a - c}};
    return writev(fd, v, 3);
}

static ssize_t w_sendmsg(int fd, const char *b, size_t n)
{
    size_t a = n / 2;
    struct iovec v[2] = {{(void *)b, a}, {(void *)(b + a), n - a}};
    struct msghdr m = {.msg_iov = v, .msg_iovlen = 2};
    return sendmsg(fd, &m, 0);
}

static const struct {
    const char *name;
    wfn fn;
} wfns[] = {
    {"write", w_write},     {"writev", w_writev},   {"send", w_send},
    {"send_nosignal", w_send_nosig}, {"sendto", w_sendto}, {"sendmsg", w_sendmsg},
};
#define NW ((int)(sizeof wfns / sizeof *wfns))

/* ---- read families -------------------------------------------------------- */

/* Plain calls: the buffer's size is unknown here, so fortification leaves
 * them alone. The _chk ones read into an array of known size. */
typedef ssize_t (*rfn)(int fd, char *out, size_t len, int flags);

__attribute__((noinline)) static ssize_t r_read(int fd, char *o, size_t n, int fl)
{
    (void)fl;
    return read(fd, o, n);
}

__attribute__((noinline)) static ssize_t r_recv(int fd, char *o, size_t n, int fl)
{
    return recv(fd, o, n, fl);
}

__attribute__((noinline)) static ssize_t r_recvfrom(int fd, char *o, size_t n, int fl)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    return recvfrom(fd, o, n, fl, (struct sockaddr *)&ss, &sl);
}

__attribute__((noinline)) static ssize_t r_readv(int fd, char *o, size_t n, int fl)
{
    (void)fl;
    struct iovec v[2] = {{o, n / 2}, {o + n / 2, n - n / 2}};
    return readv(fd, v, 2);
}

__attribute__((noinline)) static ssize_t r_recvmsg(int fd, char *o, size_t n, int fl)
{
    struct iovec v[2] = {{o, n / 2}, {o + n / 2, n - n / 2}};
    struct msghdr m = {.msg_iov = v, .msg_iovlen = 2};
    return recvmsg(fd, &m, fl);
}

static volatile size_t chk_len = 4096; /* not a constant: keeps the _chk call */

__attribute__((noinline)) static ssize_t r_read_chk(int fd, char *o, size_t n, int fl)
{
    (void)fl;
    char buf[4096];
    size_t len = n < chk_len ? n : chk_len;
    ssize_t r = read(fd, buf, len);
    if (r > 0)
        memcpy(o, buf, (size_t)r);
    return r;
}

__attribute__((noinline)) static ssize_t r_recv_chk(int fd, char *o, size_t n, int fl)
{
    char buf[4096];
    size_t len = n < chk_len ? n : chk_len;
    ssize_t r = recv(fd, buf, len, fl);
    if (r > 0)
        memcpy(o, buf, (size_t)r);
    return r;
}

__attribute__((noinline)) static ssize_t r_recvfrom_chk(int fd, char *o, size_t n, int fl)
{
    char buf[4096];
    size_t len = n < chk_len ? n : chk_len;
    ssize_t r = recvfrom(fd, buf, len, fl, NULL, NULL);
    if (r > 0)
        memcpy(o, buf, (size_t)r);
    return r;
}

static const struct {
    const char *name;
    rfn fn;
    int sock_only;
} rfns[] = {
    {"read", r_read, 0},         {"__read_chk", r_read_chk, 0}, {"readv", r_readv, 0},
    {"recv", r_recv, 1},         {"__recv_chk", r_recv_chk, 1}, {"recvfrom", r_recvfrom, 1},
    {"__recvfrom_chk", r_recvfrom_chk, 1}, {"recvmsg", r_recvmsg, 1},
};
#define NR ((int)(sizeof rfns / sizeof *rfns))

/* ---- the fd kinds ------------------------------------------------------- */

enum { K_CLIENT, K_SERVER, K_UNIX, K_PIPE, NK };
static const char *const kname[NK] = {"client", "server", "unix", "pipe"};

/* A fresh writer end of kind k (and its reader in *peer). */
static int make_kind(int k, int *peer, int small)
{
    int a, b, p[2];
    switch (k) {
    case K_CLIENT:
        tcp_pair(&a, &b, small);
        *peer = b;
        return a;
    case K_SERVER:
        tcp_pair(&a, &b, small);
        *peer = a;
        return b;
    case K_UNIX:
        socketpair(AF_UNIX, SOCK_STREAM, 0, p);
        if (small) {
            int sz = 4096;
            setsockopt(p[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
            setsockopt(p[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        }
        *peer = p[1];
        return p[0];
    default:
        if (pipe(p) < 0)
            exit(2);
        if (small)
            fcntl(p[1], F_SETPIPE_SZ, 4096);
        *peer = p[0];
        return p[1];
    }
}

/* A message that fd kind k would legitimately write: a request head from a
 * client, a response from a server, anything elsewhere. */
static size_t message(int k, int i, char *buf, size_t cap)
{
    if (k == K_SERVER)
        return (size_t)snprintf(buf, cap, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nr%02d", i % 100);
    return (size_t)snprintf(buf, cap, "GET /item/%d HTTP/1.1\r\nHost: localhost\r\nX-N: %d\r\n\r\n", i, i);
}

/* ---- situations: writes ------------------------------------------------- */

static void writes_ok(void)
{
    for (int k = 0; k < NK; k++) {
        int peer, fd = make_kind(k, &peer, 0);
        for (int f = 0; f < NW; f++) {
            char msg[256], got[4096];
            size_t n = message(k, f, msg, sizeof msg);
            errno = 12345;
            ssize_t r = wfns[f].fn(fd, msg, n);
            int e = errno;
            res("ok", wfns[f].name, kname[k], r, e, n);
            if (r >= 0)
                printf("ok %s %s: errno kept=%d\n", wfns[f].name, kname[k], e == 12345);
            size_t g = drain(peer, got, sizeof got, r > 0 ? (size_t)r : 0);
            show_data("ok", wfns[f].name, kname[k], got, (ssize_t)g);
        }
        close(fd);
        close(peer);
    }
}

static void writes_ebadf(void)
{
    for (int k = 0; k < NK; k++) {
        char msg[256];
        for (int f = 0; f < NW; f++) {
            size_t n = message(k, f, msg, sizeof msg);
            /* (a) an fd closed by the program */
            int peer, fd = make_kind(k, &peer, 0);
            close(fd);
            errno = 0;
            ssize_t r = wfns[f].fn(fd, msg, n);
            res("ebadf-closed", wfns[f].name, kname[k], r, errno, n);
            close(peer);
            /* (b) closed behind ddshim's back (raw syscall): ddshim still
             * thinks it is tracked. */
            fd = make_kind(k, &peer, 0);
            syscall(SYS_close, fd);
            errno = 0;
            r = wfns[f].fn(fd, msg, n);
            res("ebadf-raw-closed", wfns[f].name, kname[k], r, errno, n);
            close(peer);
        }
    }
    char msg[64] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int f = 0; f < NW; f++) {
        errno = 0;
        ssize_t r = wfns[f].fn(-1, msg, strlen(msg));
        res("ebadf", wfns[f].name, "fd-1", r, errno, 0);
        errno = 0;
        r = wfns[f].fn(100000, msg, strlen(msg));
        res("ebadf", wfns[f].name, "fd100000", r, errno, 0);
    }
}

/* Fills fd's send path until EAGAIN without leaving HTTP: a client sends a
 * request with a huge Content-Length and then body bytes, a server a response
 * head likewise; others just bytes. */
static void fill(int k, int fd)
{
    static char junk[65536];
    memset(junk, 'b', sizeof junk);
    if (k == K_CLIENT) {
        const char *h = "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000000\r\n\r\n";
        (void)!write(fd, h, strlen(h));
    } else if (k == K_SERVER) {
        const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n";
        (void)!write(fd, h, strlen(h));
    }
    set_nonblock(fd, 1);
    for (int i = 0; i < 100000; i++) {
        ssize_t r = write(fd, junk, sizeof junk);
        if (r < 0 && errno == EAGAIN) {
            /* The last few bytes of room: fill them byte by byte. */
            for (int j = 0; j < 100000; j++)
                if (write(fd, junk, 1) < 0)
                    break;
            return;
        }
    }
}

static void writes_eagain_eintr(void)
{
    for (int k = 0; k < NK; k++) {
        for (int f = 0; f < NW; f++) {
            int peer, fd = make_kind(k, &peer, 1);
            /* A request to the server end first, so its connection is HTTP. */
            if (k == K_SERVER) {
                const char *req = "GET /big HTTP/1.1\r\nHost: localhost\r\n"
                                  "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
                (void)!write(peer, req, strlen(req));
                char tmp[1024];
                usleep(2000);
                (void)!read(fd, tmp, sizeof tmp);
            }
            fill(k, fd);
            char body[100];
            memset(body, 'b', sizeof body);
            errno = 0;
            ssize_t r = wfns[f].fn(fd, body, sizeof body);
            res("eagain", wfns[f].name, kname[k], r, errno, sizeof body);
            /* The same, blocking and interrupted. */
            set_nonblock(fd, 0);
            n_alarm = 0;
            arm_alarm();
            errno = 0;
            r = wfns[f].fn(fd, body, sizeof body);
            int e = errno;
            disarm_alarm();
            res("eintr", wfns[f].name, kname[k], r, e, sizeof body);
            printf("eintr %s %s: alarms=%d\n", wfns[f].name, kname[k], (int)n_alarm);
            close(fd);
            close(peer);
        }
    }
}

/* Writes all of buf the way a careful non-blocking program does, letting
 * the peer read a little at each EAGAIN; what the peer reads goes to got. */
static void send_all(wfn fn, int fd, int peer, const char *buf, size_t len, char *got, size_t *g,
                     size_t gcap, int *partial, int *eagain, int *zero)
{
    size_t off = 0;
    for (int calls = 0; off < len && calls < 100000; calls++) {
        ssize_t r = fn(fd, buf + off, len - off);
        if (r > 0) {
            if ((size_t)r < len - off)
                (*partial)++;
            off += (size_t)r;
        } else if (r == 0) {
            (*zero)++;
        } else if (errno == EAGAIN) {
            (*eagain)++;
            ssize_t k = syscall(SYS_read, peer, got + *g, gcap - *g < 700 ? gcap - *g : 700);
            if (k > 0)
                *g += (size_t)k;
            else
                usleep(1000);
        } else {
            fprintf(stderr, "send_all: %s\n", strerror(errno));
            break;
        }
    }
}

/* Kernel buffers nearly full, then a request head bigger than the room left:
 * the write is partial (its count differs when headers are injected, since
 * they take buffer space too), the rest meets EAGAIN until the peer reads.
 * The peer must get the app's bytes exactly once, in order. How often each
 * happened goes to stderr (it depends on the kernel's buffer accounting). */
static void writes_partial_head(void)
{
    static char app[40000], got[65536];
    for (int f = 0; f < NW; f++) {
        int peer, fd = make_kind(K_CLIENT, &peer, 1);
        size_t pre = (size_t)snprintf(app, sizeof app,
                                      "POST /fill/%d HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20000\r\n\r\n", f);
        memset(app + pre, 'f', 20000);
        pre += 20000;
        size_t hl = pre + (size_t)snprintf(app + pre, sizeof app - pre,
                                           "PUT /p/%d HTTP/1.1\r\nHost: localhost\r\nX-Pad: ", f);
        while (hl < pre + 6800) {
            app[hl] = (char)('a' + hl % 26);
            hl++;
        }
        hl += (size_t)snprintf(app + hl, sizeof app - hl, "\r\nContent-Length: 5\r\n\r\nhello");
        set_nonblock(fd, 1);
        size_t g = 0;
        int partial = 0, eagain = 0, zero = 0;
        send_all(wfns[f].fn, fd, peer, app, pre, got, &g, sizeof got, &partial, &eagain, &zero);
        send_all(wfns[f].fn, fd, peer, app + pre, hl - pre, got, &g, sizeof got, &partial, &eagain, &zero);
        g += drain_raw(peer, got + g, sizeof got - g);
        size_t w = strip_injected(got, g);
        printf("partial-head %s client: zero-returns=%d, peer got the app's bytes exactly=%d\n",
               wfns[f].name, zero, w == hl && memcmp(got, app, hl) == 0);
        fprintf(stderr, "partial-head %s: partial=%d eagain=%d\n", wfns[f].name, partial, eagain);
        close(fd);
        close(peer);
    }
}

static void writes_epipe(void)
{
    for (int k = 0; k < NK; k++) {
        for (int f = 0; f < NW; f++) {
            int peer, fd = make_kind(k, &peer, 0);
            char msg[256];
            size_t n = message(k, f, msg, sizeof msg);
            if (k == K_PIPE) {
                close(peer);
                peer = -1;
            } else {
                shutdown(fd, SHUT_WR);
            }
            n_sigpipe = 0;
            errno = 0;
            ssize_t r = wfns[f].fn(fd, msg, n);
            res("epipe", wfns[f].name, kname[k], r, errno, n);
            printf("epipe %s %s: sigpipes=%d\n", wfns[f].name, kname[k], (int)n_sigpipe);
            close(fd);
            if (peer >= 0)
                close(peer);
        }
    }
    /* The peer reset the connection: the first write may succeed (the RST
     * comes back), a later one fails. */
    for (int f = 0; f < NW; f++) {
        int peer, fd = make_kind(K_CLIENT, &peer, 0);
        struct linger lg = {1, 0};
        setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(peer);
        usleep(2000);
        char msg[256];
        size_t n = message(K_CLIENT, f, msg, sizeof msg);
        n_sigpipe = 0;
        errno = 0;
        ssize_t r = wfns[f].fn(fd, msg, n);
        res("reset", wfns[f].name, "client", r, errno, n);
        errno = 0;
        r = wfns[f].fn(fd, msg, n);
        res("reset-again", wfns[f].name, "client", r, errno, n);
        printf("reset %s client: sigpipes=%d\n", wfns[f].name, (int)n_sigpipe);
        close(fd);
    }
}

/* ---- situations: reads -------------------------------------------------- */

/* What the reading end's peer sends: requests to a server (with a context,
 * so nothing is injected and the bytes are the same in both runs),
 * responses to a client, anything elsewhere. */
static size_t incoming(int k, int i, char *buf, size_t cap)
{
    if (k == K_SERVER)
        return (size_t)snprintf(buf, cap,
                                "GET /in/%d HTTP/1.1\r\nHost: localhost\r\n"
                                "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n",
                                i);
    if (k == K_CLIENT)
        return (size_t)snprintf(buf, cap, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nb%03d", i);
    return (size_t)snprintf(buf, cap, "bytes %d\n", i);
}

/* The reading ends: kind k's own fd reads, its peer writes. */
static int make_reader(int k, int *writer)
{
    int a, b, p[2];
    switch (k) {
    case K_CLIENT:
        tcp_pair(&a, &b, 0);
        *writer = b;
        return a;
    case K_SERVER:
        tcp_pair(&a, &b, 0);
        *writer = a;
        return b;
    case K_UNIX:
        socketpair(AF_UNIX, SOCK_STREAM, 0, p);
        *writer = p[1];
        return p[0];
    default:
        if (pipe(p) < 0)
            exit(2);
        *writer = p[1];
        return p[0];
    }
}

static void wait_readable(int fd)
{
    (void)fd;
    usleep(3000);
}

static void reads_all(void)
{
    for (int k = 0; k < NK; k++) {
        for (int f = 0; f < NR; f++) {
            int wr, fd = make_reader(k, &wr);
            char msg[256], buf[4096];
            /* A client must have sent a request for its response to be one. */
            if (k == K_CLIENT) {
                const char *req = "GET /r HTTP/1.1\r\nHost: localhost\r\n\r\n";
                (void)!write(fd, req, strlen(req));
                char tmp[2048];
                usleep(2000);
                (void)!syscall(SYS_read, wr, tmp, sizeof tmp);
            }
            /* ok, with a peek first: the peek and the read see the same. */
            size_t n = incoming(k, f, msg, sizeof msg);
            (void)!syscall(SYS_write, wr, msg, n);
            wait_readable(fd);
            if (rfns[f].sock_only || k != K_PIPE) {
                errno = 12345;
                ssize_t r = rfns[f].sock_only ? rfns[f].fn(fd, buf, sizeof buf, MSG_PEEK)
                                              : (ssize_t)recv(fd, buf, sizeof buf, MSG_PEEK);
                res("peek", rfns[f].name, kname[k], r, errno, 0);
                if (r > 0)
                    show_data("peek", rfns[f].name, kname[k], buf, r);
            }
            errno = 12345;
            ssize_t r = rfns[f].fn(fd, buf, sizeof buf, 0);
            int e = errno;
            res("ok", rfns[f].name, kname[k], r, e, 0);
            if (r >= 0)
                printf("ok %s %s: errno kept=%d\n", rfns[f].name, kname[k], e == 12345);
            if (r > 0)
                show_data("ok", rfns[f].name, kname[k], buf, r);
            /* EAGAIN: non-blocking, nothing there; and MSG_DONTWAIT. */
            set_nonblock(fd, 1);
            errno = 0;
            r = rfns[f].fn(fd, buf, sizeof buf, 0);
            res("eagain", rfns[f].name, kname[k], r, errno, 0);
            set_nonblock(fd, 0);
            if (rfns[f].sock_only) {
                errno = 0;
                r = rfns[f].fn(fd, buf, sizeof buf, MSG_DONTWAIT);
                res("eagain-dontwait", rfns[f].name, kname[k], r, errno, 0);
            }
            /* EINTR: blocking, nothing there, a signal comes. */
            n_alarm = 0;
            arm_alarm();
            errno = 0;
            r = rfns[f].fn(fd, buf, sizeof buf, 0);
            int ei = errno;
            disarm_alarm();
            res("eintr", rfns[f].name, kname[k], r, ei, 0);
            printf("eintr %s %s: alarms=%d\n", rfns[f].name, kname[k], (int)n_alarm);
            /* Zero-length read (non-blocking: recv(len 0) on TCP waits). */
            set_nonblock(fd, 1);
            errno = 0;
            r = rfns[f].fn(fd, buf, 0, 0);
            res("zero-len", rfns[f].name, kname[k], r, errno, 0);
            set_nonblock(fd, 0);
            /* End of stream. */
            if (k == K_PIPE || k == K_UNIX)
                close(wr);
            else
                shutdown(wr, SHUT_WR);
            errno = 0;
            r = rfns[f].fn(fd, buf, sizeof buf, 0);
            res("eof", rfns[f].name, kname[k], r, errno, 0);
            if (k != K_PIPE && k != K_UNIX)
                close(wr);
            /* EBADF: closed, then closed behind ddshim's back. */
            close(fd);
            errno = 0;
            r = rfns[f].fn(fd, buf, sizeof buf, 0);
            res("ebadf-closed", rfns[f].name, kname[k], r, errno, 0);
            fd = make_reader(k, &wr);
            syscall(SYS_close, fd);
            errno = 0;
            r = rfns[f].fn(fd, buf, sizeof buf, 0);
            res("ebadf-raw-closed", rfns[f].name, kname[k], r, errno, 0);
            close(wr);
        }
    }
    /* ECONNRESET: the peer resets with unread data. */
    for (int k = K_CLIENT; k <= K_SERVER; k++) {
        for (int f = 0; f < NR; f++) {
            int wr, fd = make_reader(k, &wr);
            char buf[4096];
            (void)!syscall(SYS_write, fd, "x", 1); /* unread by the peer: its close resets */
            usleep(2000);
            struct linger lg = {1, 0};
            setsockopt(wr, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(wr);
            usleep(2000);
            errno = 0;
            ssize_t r = rfns[f].fn(fd, buf, sizeof buf, 0);
            res("reset", rfns[f].name, kname[k], r, errno, 0);
            errno = 0;
            r = rfns[f].fn(fd, buf, sizeof buf, 0);
            res("reset-again", rfns[f].name, kname[k], r, errno, 0);
            close(fd);
        }
    }
    for (int f = 0; f < NR; f++) {
        char buf[64];
        errno = 0;
        ssize_t r = rfns[f].fn(-1, buf, sizeof buf, 0);
        res("ebadf", rfns[f].name, "fd-1", r, errno, 0);
    }
}

/* ---- connect, accept4, close, dup2, shutdown --------------------------- */

static void lifecycle(void)
{
    int r, e;
    /* connect */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    errno = 12345;
    r = connect(c, (struct sockaddr *)&laddr, sizeof laddr);
    e = errno;
    res("ok", "connect", "tcp", r, e, 0);
    printf("ok connect tcp: errno kept=%d\n", e == 12345);
    int s = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    res("ok", "accept4", "tcp", s >= 0 ? 0 : -1, errno, 0);
    errno = 0;
    r = connect(c, (struct sockaddr *)&laddr, sizeof laddr);
    res("eisconn", "connect", "tcp", r, errno, 0);
    close(c);
    close(s);

    int closed_port;
    {
        int t = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = laddr;
        a.sin_port = 0;
        bind(t, (struct sockaddr *)&a, sizeof a);
        socklen_t sl = sizeof a;
        getsockname(t, (struct sockaddr *)&a, &sl);
        closed_port = a.sin_port;
        close(t);
    }
    struct sockaddr_in refused = laddr;
    refused.sin_port = (in_port_t)closed_port;
    c = socket(AF_INET, SOCK_STREAM, 0);
    errno = 0;
    r = connect(c, (struct sockaddr *)&refused, sizeof refused);
    res("refused", "connect", "tcp", r, errno, 0);
    close(c);

    c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    errno = 0;
    r = connect(c, (struct sockaddr *)&refused, sizeof refused);
    e = errno;
    printf("nonblock-refused connect tcp: ret=%d errno=%s\n", r,
           r < 0 && (e == EINPROGRESS || e == ECONNREFUSED) ? "EINPROGRESS|ECONNREFUSED" : ename(e));
    close(c);

    c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    errno = 0;
    r = connect(c, (struct sockaddr *)&laddr, sizeof laddr);
    e = errno;
    printf("nonblock connect tcp: ret=%d errno=%s\n", r,
           r == 0 || e == EINPROGRESS ? "0|EINPROGRESS" : ename(e));
    s = accept4(listener, NULL, NULL, 0);
    close(s);
    close(c);

    errno = 0;
    r = connect(-1, (struct sockaddr *)&laddr, sizeof laddr);
    res("ebadf", "connect", "fd-1", r, errno, 0);
    int p[2];
    if (pipe(p) < 0)
        exit(2);
    errno = 0;
    r = connect(p[0], (struct sockaddr *)&laddr, sizeof laddr);
    res("enotsock", "connect", "pipe", r, errno, 0);
    c = socket(AF_INET, SOCK_STREAM, 0);
    errno = 0;
    r = connect(c, NULL, sizeof laddr);
    res("efault", "connect", "tcp", r, errno, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = laddr.sin_port};
    errno = 0;
    r = connect(c, (struct sockaddr *)&a6, sizeof a6);
    res("family", "connect", "tcp", r, errno, 0);
    close(c);

    /* accept4 */
    errno = 0;
    r = accept4(-1, NULL, NULL, 0);
    res("ebadf", "accept4", "fd-1", r, errno, 0);
    errno = 0;
    r = accept4(p[0], NULL, NULL, 0);
    res("enotsock", "accept4", "pipe", r, errno, 0);
    errno = 0;
    r = accept4(listener, NULL, NULL, 0x7fff0000);
    res("einval", "accept4", "listener", r, errno, 0);
    set_nonblock(listener, 1);
    errno = 0;
    r = accept4(listener, NULL, NULL, 0);
    res("eagain", "accept4", "listener", r, errno, 0);
    errno = 0;
    r = accept(listener, NULL, NULL);
    res("eagain", "accept", "listener", r, errno, 0);
    set_nonblock(listener, 0);
    arm_alarm();
    errno = 0;
    r = accept4(listener, NULL, NULL, 0);
    e = errno;
    disarm_alarm();
    res("eintr", "accept4", "listener", r, e, 0);

    /* close */
    tcp_pair(&c, &s, 0);
    errno = 12345;
    r = close(c);
    e = errno;
    res("ok", "close", "client", r, e, 0);
    printf("ok close client: errno kept=%d\n", e == 12345);
    errno = 0;
    r = close(c);
    res("ebadf", "close", "client", r, errno, 0);
    errno = 0;
    r = close(s);
    res("ok", "close", "server", r, errno, 0);
    errno = 0;
    r = close(-1);
    res("ebadf", "close", "fd-1", r, errno, 0);

    /* dup2: onto a tracked fd, with a bad old fd, onto itself, onto -1 */
    int c2, s2;
    tcp_pair(&c, &s, 0);
    tcp_pair(&c2, &s2, 0);
    errno = 12345;
    r = dup2(c2, c);
    e = errno;
    res("ok", "dup2", "client-onto-client", r == c ? 0 : -1, e, 0);
    printf("ok dup2 client: errno kept=%d\n", e == 12345);
    /* c now is c2's connection: a request written there reaches s2. */
    char msg[256], got[4096];
    size_t n = message(K_CLIENT, 7, msg, sizeof msg);
    ssize_t w = write(c, msg, n);
    res("after-dup2", "write", "client", w, errno, n);
    size_t g = drain(s2, got, sizeof got, n);
    show_data("after-dup2", "write", "client", got, (ssize_t)g);
    errno = 0;
    r = dup2(-1, c);
    res("ebadf", "dup2", "bad-old", r, errno, 0);
    errno = 0;
    r = dup2(c, -1);
    res("ebadf", "dup2", "bad-new", r, errno, 0);
    errno = 0;
    r = dup2(c2, c2);
    res("same", "dup2", "client", r == c2 ? 0 : r, errno, 0);
    errno = 0;
    r = dup3(c2, c2, 0);
    res("same", "dup3", "client", r, errno, 0);
    close(c);
    close(c2);
    close(s);
    close(s2);

    /* shutdown */
    tcp_pair(&c, &s, 0);
    errno = 12345;
    r = shutdown(c, SHUT_WR);
    e = errno;
    res("ok", "shutdown", "client", r, e, 0);
    printf("ok shutdown client: errno kept=%d\n", e == 12345);
    errno = 0;
    r = shutdown(s, SHUT_RDWR);
    res("ok", "shutdown", "server", r, errno, 0);
    errno = 0;
    r = shutdown(s, 42);
    res("einval", "shutdown", "server", r, errno, 0);
    close(c);
    close(s);
    errno = 0;
    r = shutdown(c, SHUT_WR);
    res("ebadf", "shutdown", "closed", r, errno, 0);
    c = socket(AF_INET, SOCK_STREAM, 0);
    errno = 0;
    r = shutdown(c, SHUT_WR);
    res("enotconn", "shutdown", "tcp", r, errno, 0);
    close(c);
    errno = 0;
    r = shutdown(p[0], SHUT_WR);
    res("enotsock", "shutdown", "pipe", r, errno, 0);
    close(p[0]);
    close(p[1]);
}

/* ---- signal handlers: what the program sets is what it reads back ------ */

static volatile sig_atomic_t h_calls[8];
static volatile int h_signo, h_code, h_uc, h_blocked_self;
static sigjmp_buf jump_env;

static void h1(int s) { (void)s; h_calls[1]++; }
static void h2(int s) { (void)s; h_calls[2]++; }
static void h3(int s) { (void)s; h_calls[3]++; errno = EIO; }

static void h4(int s)
{
    h_calls[4]++;
    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    h_blocked_self = sigismember(&cur, s);
}

static void h5(int s) { (void)s; h_calls[5]++; }

static void h6(int s)
{
    (void)s;
    h_calls[6]++;
    siglongjmp(jump_env, 1);
}

static void hinfo(int s, siginfo_t *si, void *uc)
{
    h_calls[0]++;
    h_signo = si ? si->si_signo : -1;
    h_code = si ? si->si_code : -1;
    h_uc = uc != NULL;
    (void)s;
}

static const char *hname(void *h)
{
    if (h == (void *)SIG_DFL) return "SIG_DFL";
    if (h == (void *)SIG_IGN) return "SIG_IGN";
    if (h == (void *)SIG_ERR) return "SIG_ERR";
    if (h == (void *)SIG_HOLD) return "SIG_HOLD";
    if (h == (void *)h1) return "h1";
    if (h == (void *)h2) return "h2";
    if (h == (void *)h3) return "h3";
    if (h == (void *)h4) return "h4";
    if (h == (void *)h5) return "h5";
    if (h == (void *)h6) return "h6";
    if (h == (void *)hinfo) return "hinfo";
    return "other";
}

static void show_action(const char *what, int sig)
{
    struct sigaction q;
    memset(&q, 0, sizeof q);
    int r = sigaction(sig, NULL, &q);
    void *h = (q.sa_flags & SA_SIGINFO) ? (void *)q.sa_sigaction : (void *)q.sa_handler;
    printf("sig %s: r=%d handler=%s flags=%#x mask-usr2=%d mask-usr1=%d\n", what, r, hname(h),
           (unsigned)q.sa_flags, sigismember(&q.sa_mask, SIGUSR2), sigismember(&q.sa_mask, SIGUSR1));
}

static void signals_part(void)
{
    struct sigaction a, old;
    memset(&a, 0, sizeof a);
    a.sa_handler = h1;
    a.sa_flags = SA_RESTART;
    sigemptyset(&a.sa_mask);
    sigaddset(&a.sa_mask, SIGUSR2);
    printf("sig set h1: r=%d\n", sigaction(SIGUSR1, &a, NULL));
    show_action("after h1", SIGUSR1);
    a.sa_handler = h2;
    a.sa_flags = SA_RESTART | SA_NODEFER;
    memset(&old, 0, sizeof old);
    int r = sigaction(SIGUSR1, &a, &old);
    printf("sig set h2: r=%d old=%s oldflags=%#x\n", r, hname((void *)old.sa_handler), (unsigned)old.sa_flags);
    raise(SIGUSR1);
    printf("sig raised: h1=%d h2=%d\n", (int)h_calls[1], (int)h_calls[2]);
    /* SA_SIGINFO */
    memset(&a, 0, sizeof a);
    a.sa_sigaction = hinfo;
    a.sa_flags = SA_SIGINFO;
    r = sigaction(SIGUSR1, &a, &old);
    printf("sig set hinfo: r=%d old=%s\n", r, hname((void *)old.sa_handler));
    show_action("after hinfo", SIGUSR1);
    raise(SIGUSR1);
    printf("sig info: calls=%d signo=%d code=%d uc=%d\n", (int)h_calls[0], h_signo, h_code, h_uc);
    /* errno set by a handler stays set, as without ddshim */
    signal(SIGUSR1, h3);
    errno = 0;
    raise(SIGUSR1);
    printf("sig errno after handler: %s\n", ename(errno));
    /* signal(): returns the previous handler; BSD semantics */
    printf("sig signal usr2 h4: old=%s\n", hname((void *)signal(SIGUSR2, h4)));
    printf("sig signal usr2 h4 again: old=%s\n", hname((void *)signal(SIGUSR2, h4)));
    show_action("signal h4", SIGUSR2);
    raise(SIGUSR2);
    printf("sig h4: calls=%d blocked-in-handler=%d\n", (int)h_calls[4], h_blocked_self);
    printf("sig sysv_signal usr2 h5: old=%s\n", hname((void *)sysv_signal(SIGUSR2, h5)));
    show_action("sysv h5", SIGUSR2);
    raise(SIGUSR2);
    show_action("sysv after one", SIGUSR2);
    printf("sig h5: calls=%d\n", (int)h_calls[5]);
    printf("sig signal ign: old=%s\n", hname((void *)signal(SIGUSR2, SIG_IGN)));
    raise(SIGUSR2);
    show_action("ignored", SIGUSR2);
    printf("sig signal dfl: old=%s\n", hname((void *)signal(SIGUSR2, SIG_DFL)));
    /* sigset(): no flags, unblocks; SIG_HOLD blocks and keeps the action */
    printf("sig sigset usr2 h5: old=%s\n", hname((void *)sigset(SIGUSR2, h5)));
    show_action("sigset h5", SIGUSR2);
    raise(SIGUSR2);
    printf("sig sigset h5: calls=%d\n", (int)h_calls[5]);
    printf("sig sigset hold: old=%s\n", hname((void *)sigset(SIGUSR2, SIG_HOLD)));
    printf("sig sigset hold again: old=%s\n", hname((void *)sigset(SIGUSR2, SIG_HOLD)));
    show_action("sigset held", SIGUSR2);
    raise(SIGUSR2);
    printf("sig sigset held: calls=%d\n", (int)h_calls[5]);
    int h1_before = (int)h_calls[1];
    printf("sig sigset usr2 h1 after hold: old=%s\n", hname((void *)sigset(SIGUSR2, h1)));
    printf("sig sigset pending one went to h1: %d\n", (int)h_calls[1] - h1_before);
    show_action("sigset h1", SIGUSR2);
    printf("sig sigset dfl: old=%s\n", hname((void *)sigset(SIGUSR2, SIG_DFL)));
    errno = 0;
    void *ss = (void *)sigset(0, h1);
    printf("sig sigset zero: %s errno=%s\n", hname(ss), ename(errno));
    errno = 0;
    ss = (void *)sigset(SIGKILL, h1);
    printf("sig sigset sigkill: %s errno=%s\n", hname(ss), ename(errno));
    /* SA_RESETHAND through sigaction */
    memset(&a, 0, sizeof a);
    a.sa_handler = h5;
    a.sa_flags = SA_RESETHAND;
    sigaction(SIGUSR2, &a, NULL);
    raise(SIGUSR2);
    show_action("resethand after one", SIGUSR2);
    /* Invalid requests */
    errno = 0;
    r = sigaction(SIGKILL, &a, NULL);
    printf("sig sigkill: r=%d errno=%s\n", r, ename(errno));
    errno = 0;
    r = sigaction(0, &a, NULL);
    printf("sig zero: r=%d errno=%s\n", r, ename(errno));
    errno = 0;
    r = sigaction(NSIG + 5, &a, NULL);
    printf("sig too big: r=%d errno=%s\n", r, ename(errno));
    errno = 0;
    void *sr = (void *)signal(SIGSTOP, h1);
    printf("sig signal sigstop: %s errno=%s\n", hname(sr), ename(errno));
    /* A handler that leaves by siglongjmp; then traced calls still work. */
    signal(SIGUSR1, h6);
    if (sigsetjmp(jump_env, 1) == 0) {
        raise(SIGUSR1);
        printf("sig longjmp: not taken\n");
    } else {
        printf("sig longjmp: back, calls=%d\n", (int)h_calls[6]);
    }
    int c, sv;
    tcp_pair(&c, &sv, 0);
    char msg[256], got[4096];
    size_t n = message(K_CLIENT, 1, msg, sizeof msg);
    ssize_t w = write(c, msg, n);
    res("after-longjmp", "write", "client", w, errno, n);
    size_t g = drain(sv, got, sizeof got, n);
    show_data("after-longjmp", "write", "client", got, (ssize_t)g);
    close(c);
    close(sv);
    signal(SIGUSR1, SIG_DFL);
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : "all";
    struct sigaction sa = {0};
    sa.sa_handler = on_sigpipe;
    sigaction(SIGPIPE, &sa, NULL);
    sa.sa_handler = on_alarm; /* no SA_RESTART: blocking calls fail with EINTR */
    sigaction(SIGALRM, &sa, NULL);
    make_listener();
    if (!strcmp(only, "all") || !strcmp(only, "lifecycle"))
        lifecycle();
    if (!strcmp(only, "all") || !strcmp(only, "writes")) {
        writes_ok();
        writes_ebadf();
        writes_epipe();
        writes_eagain_eintr();
        writes_partial_head();
    }
    if (!strcmp(only, "all") || !strcmp(only, "reads"))
        reads_all();
    if (!strcmp(only, "all") || !strcmp(only, "signals"))
        signals_part();
    printf("done\n");
    fprintf(stderr, "injected lines seen by peers: %d\n", n_injected);
    return 0;
}
