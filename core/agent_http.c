/* See agent_http.h. */
#define _GNU_SOURCE
#include "agent_http.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 8192

static int conn_fd = -1;
static char conn_key[600]; /* what conn_fd is connected to */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining(long long deadline)
{
    long long r = deadline - now_ms();
    return r < 0 ? 0 : (r > 60000 ? 60000 : (int)r);
}

void dds_http_close(void)
{
    /* Exchange, so a descriptor the program has taken away (fd_lost) is
     * never closed here. */
    int fd = __atomic_exchange_n(&conn_fd, -1, __ATOMIC_ACQ_REL);
    if (fd >= 0)
        close(fd);
    conn_key[0] = '\0';
}

int dds_http_owns_fd(int fd)
{
    return fd >= 0 && __atomic_load_n(&conn_fd, __ATOMIC_ACQUIRE) == fd;
}

void dds_http_fd_lost(int fd)
{
    int expected = fd;
    if (fd >= 0)
        __atomic_compare_exchange_n(&conn_fd, &expected, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

void dds_http_fds_lost_range(unsigned lo, unsigned hi)
{
    int fd = __atomic_load_n(&conn_fd, __ATOMIC_ACQUIRE);
    if (fd >= 0 && (unsigned)fd >= lo && (unsigned)fd <= hi)
        dds_http_fd_lost(fd);
}

void dds_http_atfork_child(void)
{
    dds_http_close();
}

/* Split http://host[:port]/path. */
static int parse_url(const char *url, char *host, size_t hcap, char *port, size_t pcap, const char **path)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *h = url + 7, *end = h + strcspn(h, "/?#");
    const char *colon = NULL, *hb = h, *he;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb)
            return -1;
        hb = h + 1;
        he = rb;
        colon = (rb + 1 < end && rb[1] == ':') ? rb + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        he = colon ? colon : end;
    }
    if (he <= hb || (size_t)(he - hb) >= hcap)
        return -1;
    memcpy(host, hb, (size_t)(he - hb));
    host[he - hb] = '\0';
    if (colon) {
        size_t n = (size_t)(end - colon - 1);
        if (n == 0 || n >= pcap)
            return -1;
        memcpy(port, colon + 1, n);
        port[n] = '\0';
    } else {
        snprintf(port, pcap, "80");
    }
    *path = *end == '/' ? end : "/";
    return 0;
}

static int wait_fd(int fd, short ev, long long deadline)
{
    struct pollfd p = {.fd = fd, .events = ev};
    for (;;) {
        int r = poll(&p, 1, remaining(deadline));
        if (r > 0)
            return 0;
        if (r == 0)
            return DDS_HTTP_ERR_TIMEOUT;
        if (errno != EINTR)
            return DDS_HTTP_ERR_CONNECT;
    }
}

/* The lowest descriptor number the agent connection may take: half the
 * soft RLIMIT_NOFILE, at most DDS_HTTP_FD_FLOOR. The program's open(),
 * socket() and accept() get the lowest free number, so after it closes ours
 * (closefrom() while daemonizing, say) it would take that number back at
 * once, and a writer still in the middle of a request could write into the
 * program's file. Up here the number is not reused in practice; the close
 * hooks also tell the writer (dds_http_fd_lost). Capped so that a huge limit
 * does not grow the kernel's descriptor table. */
int dds_http_fd_floor(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < 64)
        return 0;
    rlim_t half = rl.rlim_cur / 2;
    return half > DDS_HTTP_FD_FLOOR ? DDS_HTTP_FD_FLOOR : (int)half;
}

static int connect_addr(const struct sockaddr *sa, socklen_t sl, long long deadline)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return DDS_HTTP_ERR_CONNECT;
    int floor = dds_http_fd_floor();
    if (floor > 0 && fd < floor) {
        int high = fcntl(fd, F_DUPFD_CLOEXEC, floor);
        if (high >= 0) {
            close(fd);
            fd = high;
        }
    }
    if (connect(fd, sa, sl) < 0) {
        if (errno != EINPROGRESS) {
            close(fd);
            return DDS_HTTP_ERR_CONNECT;
        }
        int w = wait_fd(fd, POLLOUT, deadline);
        int err = 0;
        socklen_t el = sizeof err;
        if (w < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
            close(fd);
            if (err)
                errno = err; /* the log says "Connection refused", not EINPROGRESS */
            return w < 0 ? w : DDS_HTTP_ERR_CONNECT;
        }
    }
    return fd;
}

static int open_conn(const dds_http_request *rq, const char *host, const char *port, long long deadline,
                     char *err, size_t ecap)
{
    if (rq->unix_path) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        if (strlen(rq->unix_path) >= sizeof un.sun_path) {
            snprintf(err, ecap, "unix socket path too long");
            return DDS_HTTP_ERR_UNAVAILABLE;
        }
        strcpy(un.sun_path, rq->unix_path);
        int fd = connect_addr((struct sockaddr *)&un, sizeof un, deadline);
        if (fd < 0)
            snprintf(err, ecap, "cannot connect to unix:%s: %s", rq->unix_path,
                     fd == DDS_HTTP_ERR_TIMEOUT ? "timeout" : strerror(errno));
        return fd;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res = NULL;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0 || res == NULL) {
        snprintf(err, ecap, "cannot resolve %.60s: %s", host, gai_strerror(g));
        return DDS_HTTP_ERR_UNAVAILABLE;
    }
    int fd = DDS_HTTP_ERR_CONNECT;
    for (struct addrinfo *a = res; a && remaining(deadline) > 0; a = a->ai_next) {
        fd = connect_addr(a->ai_addr, a->ai_addrlen, deadline);
        if (fd >= 0)
            break;
    }
    int e = errno;
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, ecap, "cannot connect to %.60s:%s: %s", host, port,
                 fd == DDS_HTTP_ERR_TIMEOUT ? "timeout" : strerror(e));
    return fd;
}

static int send_all(int fd, struct iovec *iov, int n, long long deadline)
{
    while (n > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t k = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int w = wait_fd(fd, POLLOUT, deadline);
                if (w < 0)
                    return w;
                continue;
            }
            return DDS_HTTP_ERR_CONNECT;
        }
        while (n > 0 && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    return 0;
}

/* A small buffered reader over the socket, bounded by the deadline. */
typedef struct reader {
    int fd;
    long long deadline;
    char buf[4096];
    size_t off, len;
} reader;

static int rd_byte(reader *r)
{
    if (r->off == r->len) {
        for (;;) {
            ssize_t k = recv(r->fd, r->buf, sizeof r->buf, 0);
            if (k > 0) {
                r->off = 0;
                r->len = (size_t)k;
                break;
            }
            if (k == 0)
                return -2; /* EOF */
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int w = wait_fd(r->fd, POLLIN, r->deadline);
                if (w < 0)
                    return w == DDS_HTTP_ERR_TIMEOUT ? -3 : -1;
                continue;
            }
            return -1;
        }
    }
    return (unsigned char)r->buf[r->off++];
}

/* One line without its CRLF; -1 error, -2 EOF, -3 timeout, -4 too long. */
static int rd_line(reader *r, char *line, size_t cap)
{
    size_t n = 0;
    for (;;) {
        int c = rd_byte(r);
        if (c < 0)
            return c;
        if (c == '\n')
            break;
        if (n + 1 >= cap)
            return -4;
        line[n++] = (char)c;
    }
    if (n && line[n - 1] == '\r')
        n--;
    line[n] = '\0';
    return (int)n;
}

static void body_put(dds_http_response *rs, int c)
{
    size_t cap = rs->cap < DDS_HTTP_RESPONSE_MAX ? rs->cap : DDS_HTTP_RESPONSE_MAX;
    if (rs->buf == NULL || cap == 0)
        return;
    if (rs->len + 1 < cap)
        rs->buf[rs->len++] = (char)c;
    else
        rs->truncated = 1;
}

static int map_rd(int c)
{
    return c == -3 ? DDS_HTTP_ERR_TIMEOUT : (c == -4 ? DDS_HTTP_ERR_OTHER : DDS_HTTP_ERR_CONNECT);
}

/* Read status, headers and body. *keep = the connection may be reused. */
static int read_response(reader *r, dds_http_response *rs, int *keep)
{
    char line[HEAD_MAX];
    int n = rd_line(r, line, sizeof line);
    if (n < 0)
        return map_rd(n);
    int minor = 0, status = 0;
    if (sscanf(line, "HTTP/1.%d %3d", &minor, &status) != 2 || status < 100)
        return DDS_HTTP_ERR_OTHER;
    long long clen = -1;
    int chunked = 0;
    *keep = minor >= 1;
    for (;;) {
        n = rd_line(r, line, sizeof line);
        if (n < 0)
            return map_rd(n);
        if (n == 0)
            break;
        char *colon = strchr(line, ':');
        if (!colon)
            return DDS_HTTP_ERR_OTHER;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        if (strcasecmp(line, "content-length") == 0)
            clen = strtoll(v, NULL, 10);
        else if (strcasecmp(line, "transfer-encoding") == 0 && strcasestr(v, "chunked"))
            chunked = 1;
        else if (strcasecmp(line, "connection") == 0 && strcasestr(v, "close"))
            *keep = 0;
    }
    if (status >= 100 && status < 200)
        return read_response(r, rs, keep); /* interim: the real answer follows */
    rs->status = status;
    if (chunked) {
        for (;;) {
            n = rd_line(r, line, sizeof line);
            if (n < 0)
                return map_rd(n);
            long long sz = strtoll(line, NULL, 16);
            if (sz < 0)
                return DDS_HTTP_ERR_OTHER;
            if (sz == 0) {
                while ((n = rd_line(r, line, sizeof line)) > 0) /* trailers */
                    ;
                if (n < 0)
                    return map_rd(n);
                break;
            }
            for (long long i = 0; i < sz; i++) {
                int c = rd_byte(r);
                if (c < 0)
                    return map_rd(c);
                body_put(rs, c);
            }
            if ((n = rd_line(r, line, sizeof line)) != 0)
                return n < 0 ? map_rd(n) : DDS_HTTP_ERR_OTHER;
        }
    } else if (clen >= 0) {
        for (long long i = 0; i < clen; i++) {
            int c = rd_byte(r);
            if (c < 0)
                return map_rd(c);
            body_put(rs, c);
        }
    } else if (status != 204 && status != 304) {
        /* Close-delimited. */
        *keep = 0;
        int c;
        while ((c = rd_byte(r)) >= 0)
            body_put(rs, c);
        if (c != -2)
            return map_rd(c);
    }
    if (r->off != r->len)
        *keep = 0; /* unexpected extra bytes: do not trust this connection */
    return DDS_HTTP_OK;
}

static int post_once(const dds_http_request *rq, dds_http_response *rs, int *reused)
{
    char host[256], port[16];
    const char *path = "/";
    long long deadline = now_ms() + (rq->timeout_ms > 0 ? rq->timeout_ms : 2000);
    if (parse_url(rq->url, host, sizeof host, port, sizeof port, &path) < 0) {
        snprintf(rs->error, sizeof rs->error, "not an http:// URL: %.80s", rq->url);
        return DDS_HTTP_ERR_UNAVAILABLE;
    }
    char key[600];
    snprintf(key, sizeof key, "%s|%s|%s", rq->unix_path ? rq->unix_path : "", host, port);
    *reused = __atomic_load_n(&conn_fd, __ATOMIC_ACQUIRE) >= 0 && strcmp(key, conn_key) == 0;
    if (!*reused) {
        dds_http_close();
        long long cdl = now_ms() + (rq->connect_timeout_ms > 0 ? rq->connect_timeout_ms : 1000);
        if (cdl > deadline)
            cdl = deadline;
        int fd = open_conn(rq, host, port, cdl, rs->error, sizeof rs->error);
        if (fd < 0)
            return fd;
        __atomic_store_n(&conn_fd, fd, __ATOMIC_RELEASE);
        snprintf(conn_key, sizeof conn_key, "%s", key);
    }
    char head[HEAD_MAX];
    int hn = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n", path,
                      rq->unix_path ? "localhost" : host, rq->len);
    for (const char *const *h = rq->headers; h && *h && hn > 0 && (size_t)hn < sizeof head; h++)
        hn += snprintf(head + hn, sizeof head - (size_t)hn, "%s\r\n", *h);
    if (hn < 0 || (size_t)hn + 3 > sizeof head) {
        snprintf(rs->error, sizeof rs->error, "request head too long");
        return DDS_HTTP_ERR_OTHER;
    }
    hn += snprintf(head + hn, sizeof head - (size_t)hn, "\r\n");
    struct iovec iov[2] = {{head, (size_t)hn}, {(void *)rq->body, rq->len}};
    int fd = __atomic_load_n(&conn_fd, __ATOMIC_ACQUIRE);
    if (fd < 0) /* taken away by the program between two steps */
        return DDS_HTTP_ERR_CONNECT;
    int rc = send_all(fd, iov, rq->len ? 2 : 1, deadline);
    int keep = 0;
    if (rc == 0) {
        reader *r = malloc(sizeof *r);
        if (r == NULL) {
            rc = DDS_HTTP_ERR_OTHER;
        } else {
            r->fd = fd;
            r->deadline = deadline;
            r->off = r->len = 0;
            rs->len = 0;
            rs->truncated = 0;
            rc = read_response(r, rs, &keep);
            free(r);
        }
    }
    if (rs->buf && rs->cap)
        rs->buf[rs->len < rs->cap ? rs->len : rs->cap - 1] = '\0';
    if (rc != DDS_HTTP_OK || !keep)
        dds_http_close();
    if (rc == DDS_HTTP_ERR_TIMEOUT)
        snprintf(rs->error, sizeof rs->error, "agent did not answer in time");
    else if (rc == DDS_HTTP_ERR_CONNECT && !rs->error[0])
        snprintf(rs->error, sizeof rs->error, "connection to the agent broke");
    else if (rc == DDS_HTTP_ERR_OTHER && !rs->error[0])
        snprintf(rs->error, sizeof rs->error, "malformed answer from the agent");
    return rc;
}

int dds_http_post(const dds_http_request *rq, dds_http_response *rs)
{
    rs->status = 0;
    rs->len = 0;
    rs->truncated = 0;
    rs->error[0] = '\0';
    int reused = 0;
    int rc = post_once(rq, rs, &reused);
    if (rc == DDS_HTTP_ERR_CONNECT && reused) {
        /* The agent closed the idle kept-alive connection: one fresh try. */
        rs->error[0] = '\0';
        rc = post_once(rq, rs, &reused);
    }
    return rc;
}
