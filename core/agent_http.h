/*
 * agent_http.h — the HTTP/1.1 client the writer sends payloads with.
 *
 * The Agent speaks plain HTTP on loopback TCP or a unix socket, and all the
 * writer needs is one POST with a Content-Length body and the answer's status
 * and (small) body. ddshim does this itself, over a non-blocking socket with a
 * deadline on every step, rather than with libcurl: libcurl's global
 * initialisation reaches into OpenSSL and libssh2, whose process-wide state
 * belongs to the host program — a traced `curl` crashed at exit when the
 * writer initialised libcurl after the host had already cleaned OpenSSL up.
 * Here there is no global state beyond one kept-alive socket.
 *
 * One caller thread (core/writer.c). The socket is SOCK_CLOEXEC, never
 * inherited by an exec'd program; a fork child closes its copy without a word
 * to the peer (dds_http_atfork_child). No proxy variables are consulted: the
 * spans go to the configured agent only.
 */
#ifndef DDS_AGENT_HTTP_H
#define DDS_AGENT_HTTP_H

#include <stddef.h>

enum {
    DDS_HTTP_OK = 0,               /* an HTTP answer was received (any status) */
    DDS_HTTP_ERR_UNAVAILABLE = -1, /* the agent address cannot be used (bad URL, unresolvable host) */
    DDS_HTTP_ERR_CONNECT = -2,     /* could not connect, or the connection broke: worth one retry */
    DDS_HTTP_ERR_TIMEOUT = -3,     /* connect or total timeout */
    DDS_HTTP_ERR_OTHER = -4,       /* a malformed answer */
};

#define DDS_HTTP_RESPONSE_MAX (64 * 1024)

typedef struct dds_http_request {
    const char *url;              /* http://host[:port]/path; for a unix socket any http://host/path */
    const char *unix_path;        /* NULL for TCP */
    const char *body;
    size_t len;
    const char *const *headers;   /* NULL-terminated "Name: value" lines */
    int connect_timeout_ms;
    int timeout_ms;               /* whole request */
} dds_http_request;

typedef struct dds_http_response {
    long status;
    char *buf;                    /* caller's buffer for the body, NUL-terminated */
    size_t cap;                   /* its size; at most DDS_HTTP_RESPONSE_MAX is kept */
    size_t len;
    int truncated;                /* the body was longer than cap - 1 */
    char error[128];              /* what went wrong when the result is not OK */
} dds_http_response;

/* POST rq->body. Returns DDS_HTTP_*. Reuses the previous connection when the
 * agent kept it open; a reused connection that turns out closed is reopened
 * once. Not reentrant. */
int dds_http_post(const dds_http_request *rq, dds_http_response *rs);
/* Close the kept connection (writer thread only). */
void dds_http_close(void);
/* In a fork child: close the inherited connection, send nothing. */
void dds_http_atfork_child(void);

/* The program closed (or dup2()ed over) a descriptor: if it was the agent
 * connection, forget it without closing it — that number may already be one
 * of the program's own files. Called by the close hooks; cheap. */
int dds_http_owns_fd(int fd);

/* The agent connection's descriptor is moved to at least this number (see
 * agent_http.c): min(soft RLIMIT_NOFILE / 2, DDS_HTTP_FD_FLOOR), 0 = not moved. */
#define DDS_HTTP_FD_FLOOR 512
int dds_http_fd_floor(void);
void dds_http_fd_lost(int fd);
void dds_http_fds_lost_range(unsigned lo, unsigned hi);

#endif
