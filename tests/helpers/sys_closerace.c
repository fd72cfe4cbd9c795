/* One thread closes a tracked socket while another is blocked writing to (or
 * reading from) it, for tests/reliability/test_threads_signals.py. Run under
 * AddressSanitizer this finds ddshim state used after the close freed it.
 *
 *   sys_closerace ROUNDS
 *
 * Each round: a loopback connection whose accepting end never reads; a
 * thread writes a request head with a huge Content-Length and then, in one
 * call, more body than the buffers hold, so that it blocks; another thread (odd rounds: a reader blocked in
 * read()) waits on the same socket; the main thread then shuts the socket
 * down and closes it, and immediately opens new connections (which reuse the
 * fd number), and only then shuts the connection down through a dup()ed
 * descriptor, so that the blocked calls return after the close. They must return (an
 * error), and nothing may crash.
 *
 * stdout: "rounds=N writer-returned=N".
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
#include <unistd.h>

static struct sockaddr_in addr;
static int lfd;
static long writer_returned;
static int writer_started;
static char body[8 << 20];

static void *writer(void *arg)
{
    int fd = (int)(long)arg;
    static const char head[] = "POST /big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n\r\n";
    if (write(fd, head, sizeof head - 1) < 0)
        return NULL;
    /* One call, far bigger than the buffers: it blocks until the socket
     * is shut down (then returns a short count), so the fd number is used
     * exactly once here. */
    __atomic_store_n(&writer_started, 1, __ATOMIC_RELEASE);
    (void)!write(fd, body, sizeof body);
    __atomic_add_fetch(&writer_returned, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void *reader(void *arg)
{
    int fd = (int)(long)arg;
    char buf[256];
    (void)!read(fd, buf, sizeof buf); /* one call, for the same reason */
    return NULL;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 100;
    signal(SIGPIPE, SIG_IGN);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof addr;
    int sz = 4096;
    setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 64) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &sl) < 0)
        return 2;
    memset(body, 'b', sizeof body);
    int done = 0;
    for (int i = 0; i < rounds; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
            return 3;
        int peer = accept(lfd, NULL, NULL);
        pthread_t w, r;
        pthread_create(&w, NULL, writer, (void *)(long)fd);
        if (i % 2)
            pthread_create(&r, NULL, reader, (void *)(long)fd);
        while (!__atomic_load_n(&writer_started, __ATOMIC_ACQUIRE))
            usleep(1000);
        usleep(10000 + (i % 7) * 1000); /* the writer is blocked by now */
        __atomic_store_n(&writer_started, 0, __ATOMIC_RELAXED);
        int d = dup(fd); /* a second handle, to wake the blocked calls later */
        close(fd);       /* the blocked calls go on: the kernel holds the file */
        /* Reuse the number at once: new tracked connections. */
        int again[4];
        for (int k = 0; k < 4; k++) {
            again[k] = socket(AF_INET, SOCK_STREAM, 0);
            connect(again[k], (struct sockaddr *)&addr, sizeof addr);
            static const char g[] = "GET /again HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
            (void)!write(again[k], g, sizeof g - 1);
        }
        /* Now the blocked calls return. */
        shutdown(d, SHUT_RDWR);
        pthread_join(w, NULL);
        close(d);
        close(peer);
        if (i % 2)
            pthread_join(r, NULL);
        for (int k = 0; k < 4; k++) {
            close(again[k]);
            int p = accept(lfd, NULL, NULL);
            if (p >= 0)
                close(p);
        }
        done++;
    }
    printf("rounds=%d writer-returned=%ld\n", done, writer_returned);
    return done == rounds && writer_returned == rounds ? 0 : 1;
}
