/* sink_agent — a trace intake that does nothing, for `make bench` only.
 *
 * build/ddshim-agent decodes and checks every payload strictly, which costs
 * about as much CPU per span as ddshim itself; on a 2-core machine that CPU
 * is taken from the workload being measured. Run against this sink instead,
 * a traced workload pays for ddshim alone: the benchmark reports both (see
 * BENCHMARKS.md), the figures with build/ddshim-agent being the reference.
 *
 *   sink_agent READY_FILE REQUESTS_FILE
 *
 * Listens on 127.0.0.1 (a free port, written to READY_FILE), one thread per
 * connection, HTTP/1.1 keep-alive: reads a request head and its
 * Content-Length body, discards it, answers 200 {"rate_by_service":{}}, and
 * appends {"traces":N} (X-Datadog-Trace-Count) to REQUESTS_FILE, the way
 * ddshim-agent's --requests does, so that received spans can be counted.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static FILE *requests;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static const char ANSWER[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: 22\r\n\r\n{\"rate_by_service\":{}}";

static long header_num(const char *head, size_t len, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = head; p && p < head + len; p = memchr(p, '\n', (size_t)(head + len - p))) {
        if (*p == '\n')
            p++;
        if ((size_t)(head + len - p) > n && strncasecmp(p, name, n) == 0)
            return atol(p + n);
    }
    return -1;
}

static void *serve(void *arg)
{
    int fd = (int)(long)arg;
    static __thread char buf[1 << 16];
    size_t have = 0;
    for (;;) {
        char *end;
        while ((end = memmem(buf, have, "\r\n\r\n", 4)) == NULL) {
            if (have == sizeof buf)
                goto out;
            ssize_t k = read(fd, buf + have, sizeof buf - have);
            if (k <= 0)
                goto out;
            have += (size_t)k;
        }
        size_t head = (size_t)(end + 4 - buf);
        long body = header_num(buf, head, "content-length:");
        long traces = header_num(buf, head, "x-datadog-trace-count:");
        if (body < 0)
            body = 0;
        /* Discard the body: what is buffered, then the rest from the socket. */
        size_t inbuf = have - head;
        if ((size_t)body <= inbuf) {
            memmove(buf, buf + head + body, inbuf - (size_t)body);
            have = inbuf - (size_t)body;
        } else {
            long left = body - (long)inbuf;
            have = 0;
            while (left > 0) {
                ssize_t k = read(fd, buf, left < (long)sizeof buf ? (size_t)left : sizeof buf);
                if (k <= 0)
                    goto out;
                left -= k;
            }
        }
        if (write(fd, ANSWER, sizeof ANSWER - 1) < 0)
            goto out;
        if (traces >= 0) {
            pthread_mutex_lock(&mu);
            fprintf(requests, "{\"traces\":%ld}\n", traces);
            fflush(requests);
            pthread_mutex_unlock(&mu);
        }
    }
out:
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sink_agent READY_FILE REQUESTS_FILE\n");
        return 2;
    }
    requests = fopen(argv[2], "a");
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (requests == NULL || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 64) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0) {
        perror("sink_agent");
        return 1;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return 1;
    fprintf(f, "%d\n", ntohs(a.sin_port));
    fclose(f);
    rename(tmp, argv[1]);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_t th;
        if (pthread_create(&th, NULL, serve, (void *)(long)fd) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(th);
    }
}
