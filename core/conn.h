/*
 * conn.h — HTTP/1.x tracing of one TCP connection, from the bytes it carries.
 *
 * hooks/socket.c owns the file descriptors and the real system calls; for a
 * tracked connection it hands this module the bytes the application sends and
 * receives. From them a client connection (one the application connect()ed)
 * gets an http.client.request span per request, with trace headers injected
 * into the request head (core/inject.c keeps the application's view of the
 * write exact), and a server connection (one it accept()ed) gets an
 * http.server.request span per request, continuing the caller's trace
 * (core/propagation.c) and active on the reading thread while it runs.
 * Anything that is not HTTP/1.x, or that the parser cannot follow, turns the
 * connection passive for good. No system calls here: unit tests drive it with
 * byte strings.
 */
#ifndef DDS_CONN_H
#define DDS_CONN_H

#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "http.h"
#include "inject.h"
#include "lock.h"
#include "span.h"

enum { DDS_CONN_CLIENT = 1, DDS_CONN_SERVER = 2 };
#define DDS_CONN_MAX_INFLIGHT 16

typedef struct dds_conn_req {
    dds_span *span;
    int is_head;     /* the request was HEAD: its response has no body */
    int is_connect;  /* CONNECT: a 2xx response starts a tunnel */
} dds_conn_req;

typedef struct dds_conn {
    /* Used by hooks/socket.c without the lock, with atomics only. The memory
     * of a dds_conn is never given back to the allocator: dds_conn_abandon
     * keeps it for the next dds_conn_new, so a pointer read from the fd table
     * stays safe to look at while another thread closes the fd, and these
     * fields keep their meaning across reuse. */
    int refs;                    /* the fd table's reference + hooks using it; 0: free */
    int passive;                 /* dead and nothing left to inject: pass through at once */
    int lost;                    /* bytes went by unseen (busy, MSG_TRUNC): stop following */
    const char *close_why;       /* why the fd stopped leading here (for the last user) */
    struct dds_conn *next_free;

    int mu;                      /* the lock: dds_conn_trylock/_lock/_unlock */
    int role;
    pid_t pid;                   /* process that created the state */
    int dead;                    /* passive for good */
    int sending;                 /* a send's system call is under way (between send_plan
                                  * and send_done, the lock released): its plan may carry
                                  * the header block, which must stay as it is until
                                  * send_done has counted what the kernel took */
    char peer_ip[64];
    size_t peer_ip_len;
    int peer_port;
    dds_http_stream out;         /* what the application sends */
    dds_http_stream in;          /* what it receives */
    dds_inject_state inj;
    dds_span *prepared;          /* client: span created before its head was fully sent */
    dds_http_scan planned_head;  /* client: the head send_plan scanned (target, host cleared)... */
    int planned_head_ok;         /* ...for the send_done of the same call only */
    dds_conn_req q[DDS_CONN_MAX_INFLIGHT]; /* requests waiting for their response, oldest first */
    int nq;
    int64_t req_start_mono, req_start_wall; /* server: when the current request's first byte came */
    int req_started;
    uint64_t wire_out;           /* bytes the kernel took through ddshim (the app's and injected) */
    /* When to compare wire_out with the kernel's count (dds_conn_wire_check_due). */
    uint32_t wire_starts;        /* message starts since the last comparison */
    uint8_t wire_checked;        /* compared at least once */
    uint8_t wire_always;         /* compare before every message: bytes may reach the socket
                                  * from elsewhere (another process shares it, or the peer
                                  * answered requests ddshim never saw) */
    unsigned fork_epoch;         /* dds_conn_fork_epoch when the state was made */
} dds_conn;

/* A connection's lock: one word (core/lock.h). It is only ever held while
 * bytes are parsed or planned, never across a system call, so a second
 * thread spins briefly (and yields if the holder was preempted).
 * pthread_mutex_trylock/lock/unlock cost ~250 instructions per HTTP request
 * in the hooks. */
static inline int dds_conn_trylock(dds_conn *c) { return dds_spin_trylock(&c->mu); }
static inline void dds_conn_cpu_relax(void) { dds_spin_relax(); }
static inline void dds_conn_lock(dds_conn *c) { dds_spin_lock(&c->mu); }
static inline void dds_conn_unlock(dds_conn *c) { dds_spin_unlock(&c->mu); }

/* Bumped by every fork() (dds_conn_atfork_prepare): a state older than the
 * last fork may share its socket with another process. */
extern unsigned dds_conn_fork_epoch;
/* Message starts between two comparisons with the kernel's count, once the
 * first one passed (see dds_conn_wire_check_due). */
#define DDS_CONN_WIRE_CHECK_EVERY 16

/* A new state with refs = 1 (NULL when out of memory). */
dds_conn *dds_conn_new(int role, const char *peer_ip, int peer_port, pid_t pid);
/* Finish whatever is open (connection closed or handed over) and recycle. */
void dds_conn_close(dds_conn *c, const char *why);
/* Forget without finishing (a fork child's copy of its parent's state). */
void dds_conn_abandon(dds_conn *c);
/* fork(): the recycling list's lock is taken before and released after, in
 * both processes (called from preload/init.c's handlers). */
void dds_conn_atfork_prepare(void);
void dds_conn_atfork_release(void);

/* The bytes can no longer be followed (some went by unseen): passive from
 * now on, except that a header block already partly sent is completed, so
 * the request head it sits in stays well-formed. */
void dds_conn_lost_sync(dds_conn *c);

/* Outgoing bytes. Call send_plan before the real write: it fills out[] with
 * what to hand to the kernel (the app's iovecs, or those plus injected
 * headers) and returns the count, or 0 to mean "write the app's buffers
 * unchanged". Then call send_done with the kernel's result (k >= 0, or -1 and
 * errno in err). It returns what the application must see; -2 means "none of
 * the application's bytes went out: write again if blocking, else EAGAIN".
 * The lock may be released between the two (for the system call); another
 * thread's send_plan meanwhile returns -1: that thread writes its buffers
 * unchanged and calls neither send_done nor anything else for them — the
 * order of the two threads' bytes is unknown, so the connection stops being
 * followed (as dds_conn_lost_sync), once the first send is counted. */
int dds_conn_send_plan(dds_conn *c, const struct iovec *app, int napp, struct iovec *out, int outcap);
ssize_t dds_conn_send_done(dds_conn *c, const struct iovec *app, int napp, int planned, ssize_t k, int err);
/* Body bytes sent without passing through user space (sendfile). */
void dds_conn_sent_opaque(dds_conn *c, size_t n);
/* 1 when the next byte sent would start a message (a client's request, a
 * server's response) and it is time to check that the kernel got nothing
 * behind ddshim's back (stdio's internal writes, sendmmsg, io_uring, another
 * process writing to the same socket...). Given the kernel's count of bytes
 * written to the socket, dds_conn_check_wire turns the connection passive if
 * it differs from wire_out: ddshim no longer knows where messages start, and
 * injecting into what might be a body would corrupt it (a response would be
 * matched to the wrong request).
 *
 * The comparison costs a system call, so it is not made before every
 * message: always before the first one of a connection (a program that
 * writes heads through stdio or sendmmsg does so from its first request);
 * before every one when the socket may be written from elsewhere (the state
 * predates a fork, or was taken over by a fork child, or the peer answered
 * a request ddshim never saw, or the fd was duplicated with dup2/dup3:
 * dds_conn_wire_suspect); otherwise once every DDS_CONN_WIRE_CHECK_EVERY
 * message starts. Bytes that went by unseen make the counts differ for good,
 * so any later comparison still catches them. Counts the message start when
 * it says 0. */
int dds_conn_wire_check_due(dds_conn *c);
void dds_conn_check_wire(dds_conn *c, uint64_t kernel_out);
/* Compare before every message from now on (see above). Safe without c->mu. */
void dds_conn_wire_suspect(dds_conn *c);

/* Incoming bytes the program never saw in user space (splice from the
 * socket): they only count down the framing, like dds_conn_sent_opaque. */
void dds_conn_received_opaque(dds_conn *c, size_t n);
/* Incoming bytes (already in the app's buffers), end of stream, an error. */
void dds_conn_received(dds_conn *c, const struct iovec *iov, int n, size_t len);
void dds_conn_eof(dds_conn *c);
void dds_conn_error(dds_conn *c, int err);
/* The application will send nothing more (shutdown SHUT_WR). */
void dds_conn_shutdown_write(dds_conn *c);

#endif
