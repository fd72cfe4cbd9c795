/* The cost of ddshim's hooks on descriptors it does not trace, for
 * `make bench` (scripts/bench.sh).
 *
 *   passthrough time N      per-call nanoseconds
 *   passthrough count N     only the calls, for callgrind (see below)
 *
 * Three descriptors: /dev/null (write), one end of an AF_UNIX socketpair
 * (send; never tracked), and a loopback TCP connection whose first bytes
 * were not HTTP (send; tracked at connect, then given up on by ddshim).
 *
 * A system call costs 1-3 us on a VM, with more noise than the few
 * nanoseconds being measured, so both modes expect tests/bench/fake_io.so
 * preloaded after ddshim (LD_PRELOAD=libddshim.so:fake_io.so; untraced:
 * LD_PRELOAD=fake_io.so): once the descriptors are set up (the TCP one has
 * really sent its first, non-HTTP bytes), write/send on them return at once
 * in fake_io, and what is measured is ddshim's hook alone.
 *
 * time: write()/send() through the program's PLT (ddshim's hook when
 * preloaded, then fake_io) and fake_io's function called directly (the hook
 * bypassed) are timed in alternating batches, 201 batches each; the median
 * batch of each gives ns per call, and the difference is the hook's cost.
 * Untraced, both paths end in the same function and the difference is the
 * noise floor. Also printed: what a real write() to /dev/null costs here.
 *
 * count: N calls of each kind through the PLT, each loop inside a
 * CALLGRIND_TOGGLE_COLLECT window in its own marker function, so that
 * callgrind --collect-atstart=no gives exactly the instructions of N calls;
 * traced minus untraced, divided by N, is the hook's instructions per call.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <valgrind/callgrind.h>

#define BATCH 20000
#define ROUNDS 201

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*send_fn)(int, const void *, size_t, int);
typedef void (*fake_set_fn)(int, int);

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* A sink on the other end of the sockets: raw system calls, so ddshim never
 * tracks it. */
static void *drain(void *arg)
{
    int fd = (int)(long)arg;
    char buf[65536];
    while (syscall(SYS_read, fd, buf, sizeof buf) > 0)
        ;
    return NULL;
}

static void *accept_drain(void *arg)
{
    int lfd = (int)(long)arg;
    int fd = (int)syscall(SYS_accept4, lfd, NULL, NULL, 0);
    return fd < 0 ? NULL : drain((void *)(long)fd);
}

static int tcp_non_http(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0)
        return -1;
    pthread_t th;
    pthread_create(&th, NULL, accept_drain, (void *)(long)lfd);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        return -1;
    /* A binary protocol's first message: ddshim sees it is not HTTP. */
    static const char hello[] = "\x00\x00\x00\x08\x04\xd2\x16\x2f";
    if (send(fd, hello, sizeof hello - 1, 0) < 0)
        return -1;
    return fd;
}

static double median_per_call(int64_t *t)
{
    qsort(t, ROUNDS, sizeof *t, cmp64);
    return (double)t[ROUNDS / 2] / BATCH;
}

/* Through the PLT (the hook, if any) vs the function behind it, alternating. */
static void time_write(const char *label, int fd, write_fn direct)
{
    static int64_t hooked[ROUNDS], raw[ROUNDS];
    char b[8] = "abcdefg";
    for (int r = 0; r < ROUNDS; r++) {
        int64_t t0 = now_ns();
        for (int i = 0; i < BATCH; i++)
            write(fd, b, sizeof b);
        int64_t t1 = now_ns();
        for (int i = 0; i < BATCH; i++)
            direct(fd, b, sizeof b);
        int64_t t2 = now_ns();
        hooked[r] = t1 - t0;
        raw[r] = t2 - t1;
    }
    double h = median_per_call(hooked), d = median_per_call(raw);
    printf("%s hooked_ns=%.2f direct_ns=%.2f overhead_ns=%.2f\n", label, h, d, h - d);
}

static void time_send(const char *label, int fd, send_fn direct)
{
    static int64_t hooked[ROUNDS], raw[ROUNDS];
    char b[8] = "abcdefg";
    for (int r = 0; r < ROUNDS; r++) {
        int64_t t0 = now_ns();
        for (int i = 0; i < BATCH; i++)
            send(fd, b, sizeof b, 0);
        int64_t t1 = now_ns();
        for (int i = 0; i < BATCH; i++)
            direct(fd, b, sizeof b, 0);
        int64_t t2 = now_ns();
        hooked[r] = t1 - t0;
        raw[r] = t2 - t1;
    }
    double h = median_per_call(hooked), d = median_per_call(raw);
    printf("%s hooked_ns=%.2f direct_ns=%.2f overhead_ns=%.2f\n", label, h, d, h - d);
}

/* Marker functions: callgrind reports each window under its name. */
__attribute__((noinline, noipa)) static void count_write_devnull(int fd, long n)
{
    char b[8] = "abcdefg";
    CALLGRIND_TOGGLE_COLLECT;
    for (long i = 0; i < n; i++)
        write(fd, b, sizeof b);
    CALLGRIND_TOGGLE_COLLECT;
}

__attribute__((noinline, noipa)) static void count_send_unix(int fd, long n)
{
    char b[8] = "abcdefg";
    CALLGRIND_TOGGLE_COLLECT;
    for (long i = 0; i < n; i++)
        send(fd, b, sizeof b, 0);
    CALLGRIND_TOGGLE_COLLECT;
}

__attribute__((noinline, noipa)) static void count_send_tcp(int fd, long n)
{
    char b[8] = "abcdefg";
    CALLGRIND_TOGGLE_COLLECT;
    for (long i = 0; i < n; i++)
        send(fd, b, sizeof b, 0);
    CALLGRIND_TOGGLE_COLLECT;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: passthrough time|count N\n");
        return 2;
    }
    long n = atol(argv[2]);
    int devnull = open("/dev/null", O_WRONLY);
    int sp[2];
    if (devnull < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
        return 1;
    pthread_t th;
    pthread_create(&th, NULL, drain, (void *)(long)sp[1]);
    int tcp = tcp_non_http();
    if (tcp < 0) {
        perror("passthrough: tcp");
        return 1;
    }
    fake_set_fn fake_set = (fake_set_fn)dlsym(RTLD_DEFAULT, "fake_io_set");
    write_fn fw = (write_fn)dlsym(RTLD_DEFAULT, "fake_io_write");
    send_fn fs = (send_fn)dlsym(RTLD_DEFAULT, "fake_io_send");
    if (fake_set == NULL || fw == NULL || fs == NULL) {
        fprintf(stderr, "passthrough: preload tests/bench/fake_io.so (see the comment at the top)\n");
        return 2;
    }
    /* For context: a real write() to /dev/null, libc's own function. */
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    write_fn lw = libc ? (write_fn)dlsym(libc, "write") : NULL;
    double sys_ns = 0;
    if (lw && strcmp(argv[1], "time") == 0) {
        int64_t t[ROUNDS];
        char b[8] = "abcdefg";
        for (int r = 0; r < ROUNDS; r++) {
            int64_t t0 = now_ns();
            for (int i = 0; i < 200; i++)
                lw(devnull, b, sizeof b);
            t[r] = (now_ns() - t0) * (BATCH / 200);
        }
        sys_ns = median_per_call(t);
    }
    fake_set(0, devnull);
    fake_set(1, sp[0]);
    fake_set(2, tcp);
    if (strcmp(argv[1], "count") == 0) {
        count_write_devnull(devnull, n);
        count_send_unix(sp[0], n);
        count_send_tcp(tcp, n);
        printf("calls=%ld each\n", n);
        return 0;
    }
    (void)n;
    time_write("write_devnull", devnull, fw);
    time_send("send_unix_socket", sp[0], fs);
    time_send("send_tcp_not_http", tcp, fs);
    printf("real_write_devnull_syscall_ns=%.1f\n", sys_ns);
    return 0;
}
