/*
 * http.h — an incremental HTTP/1.x parser for one direction of a connection.
 *
 * The socket hooks (hooks/socket.c) keep one dds_http_stream per direction of
 * every connection they follow: the request direction (what a client writes or
 * a server reads) and the response direction (what a client reads or a server
 * writes). They feed it whatever bytes the application moved, split however the
 * kernel split them, and get back three events: a message head (EV_HEAD), the
 * end of that message (EV_DONE), or "this is not HTTP I can follow" (EV_INVALID).
 * From those the hooks start and finish client and server spans; core/url.h turns
 * the head into http.url and a resource name; core/propagation.c reads the
 * incoming trace context from the head's headers.
 *
 * The parser is strict at message starts, so that Redis inline commands, TLS
 * records, the HTTP/2 preface or PostgreSQL are rejected at their first bytes
 * and the hooks go back to passing traffic through untouched. It follows body
 * framing (RFC 9112 §6: Content-Length, chunked, close-delimited) so that a
 * body is never mistaken for the next head on a keep-alive or pipelined
 * connection. Framing that two implementations could read differently (both
 * Content-Length and Transfer-Encoding, differing Content-Lengths, ...) ends
 * the parse: the head is still reported so a span can be finished, and the
 * stream then stops.
 *
 * Memory: a stream is a small fixed struct. A head that arrives complete in one
 * feed is parsed in place; one that spans several feeds is copied into a
 * malloc'd buffer that is freed as soon as the head is complete. No head may be
 * longer than DDS_HTTP_MAX_HEAD. Every scan is linear in the bytes fed; nothing
 * recurses.
 *
 * dds_http_scan_request() is the one-shot variant for the client write path
 * (core/inject.h): it decides whether a buffer the application is about to
 * write holds one complete request head, and where headers could be added.
 */
#ifndef DDS_HTTP_H
#define DDS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define DDS_HTTP_MAX_HEAD 16384   /* bytes, request/status line to the final CRLFCRLF */
#define DDS_HTTP_MAX_HEADERS 64   /* header lines kept in dds_http_msg.headers */

typedef struct dds_http_header {
    const char *name;
    size_t name_len;
    const char *value; /* optional whitespace trimmed on both sides */
    size_t value_len;
} dds_http_header;

typedef struct dds_http_msg {
    int is_response;
    char method[24];            /* request: NUL-terminated RFC token, ≤ 23 chars */
    const char *target;         /* request: points into the head; NULL in EV_DONE */
    size_t target_len;
    int version_minor;          /* 0 or 1 */
    int status;                 /* response: 100..999 */
    int nheaders;               /* 0 in EV_DONE */
    dds_http_header headers[DDS_HTTP_MAX_HEADERS]; /* valid only during the callback */
    int headers_truncated;      /* more than DDS_HTTP_MAX_HEADERS lines; framing still saw all */
    int64_t content_length;     /* -1 if absent (or if Transfer-Encoding governs) */
    int chunked;                /* Transfer-Encoding ends in chunked */
    int conn_close;             /* the connection closes after this message:
                                 * "Connection: close", or HTTP/1.0 without keep-alive */
    int expect_continue;        /* request has "Expect: 100-continue" */
    int upgrade;                /* "Connection: upgrade" and an Upgrade header */
    int ambiguous_framing;      /* CL+TE, differing CLs, bad CL, TE without final chunked
                                 * on a request, TE on HTTP/1.0 */
    size_t head_len;            /* bytes, first line to the final CRLFCRLF included */
    uint64_t body_len;          /* EV_DONE: body bytes (chunk payload only, for chunked) */
    /* EV_HEAD, found while the head was scanned (so nobody needs to search
     * headers[]): the first Host and User-Agent among the kept headers (what
     * dds_http_msg_header would return; NULL if none), and the indexes into
     * headers[], in order, of the trace-context headers among them
     * (traceparent, tracestate, b3, x-b3-*, x-datadog-*): the only ones
     * dds_propagation_extract looks at. Empty in EV_DONE. */
    const char *host;
    size_t host_len;
    const char *user_agent;
    size_t user_agent_len;
    int nctx;
    uint8_t ctx_idx[DDS_HTTP_MAX_HEADERS];
} dds_http_msg;

/* Case-insensitive lookup of the first header named `name` among the kept
 * headers; NULL if none. *len (may be NULL) receives the value's length. */
const char *dds_http_msg_header(const dds_http_msg *m, const char *name, size_t *len);

/*
 * Events, in order, for each message on a stream:
 *   EV_HEAD  once the whole head is in: msg has everything, pointers valid only
 *            during the callback.
 *   EV_DONE  once the body is complete (right after EV_HEAD if there is none):
 *            msg has the scalar fields of the head and body_len; no headers and
 *            no target.
 *   EV_INVALID (msg is NULL) once, when the stream gives up for any reason other
 *            than a tunnel: bytes at a message start that are not a head, a head
 *            over the limits, malformed chunked framing, ambiguous framing (then
 *            right after that message's EV_HEAD), or a truncated body at eof.
 *            The stream is dead afterwards.
 * Interim 1xx responses (100 Continue, 103 Early Hints) produce no events: the
 * final response that follows them gets the EV_HEAD. A 101 gets EV_HEAD and
 * EV_DONE, then the stream is dead (the connection is now another protocol).
 *
 * The callback may call dds_http_stream_no_body() and dds_http_stream_set_tunnel()
 * on the stream it was called for; it must not feed or free it.
 */
enum { DDS_HTTP_EV_HEAD = 1, DDS_HTTP_EV_DONE = 2, DDS_HTTP_EV_INVALID = 3 };
typedef void (*dds_http_cb)(void *ctx, int ev, const dds_http_msg *msg);

/* Why a stream is dead (dds_http_stream_dead_reason). */
enum { DDS_HTTP_ALIVE = 0, DDS_HTTP_DEAD_INVALID = 1, DDS_HTTP_DEAD_LIMIT = 2,
       DDS_HTTP_DEAD_TUNNEL = 3, DDS_HTTP_DEAD_EOF = 4, DDS_HTTP_DEAD_NOMEM = 5 };

typedef struct dds_http_hscan {   /* head syntax scanner; internal */
    uint32_t pos;                 /* bytes of the head scanned so far */
    uint8_t phase;
    uint8_t sub;                  /* counter within the phase */
    uint8_t cr;                   /* a CR was seen: the next byte must be LF */
    uint8_t pad_;
} dds_http_hscan;

typedef struct dds_http_stream {  /* treat as opaque */
    uint8_t is_response;
    uint8_t state;
    uint8_t dead_reason;
    uint8_t in_cb;                /* inside the EV_HEAD callback */
    uint8_t want_no_body, want_tunnel;
    uint8_t lead;                 /* request direction: empty lines skipped before a head */
    uint8_t chunk_digits;         /* significant hex digits of the chunk size */
    uint8_t chunk_seen;           /* a chunk-size digit was seen */
    uint8_t pad_[3];
    dds_http_hscan hs;
    char *hbuf;                   /* the head so far, when it spans feeds */
    uint32_t hcap;
    uint32_t aux;                 /* chunk-ext / trailer bytes, bounded */
    uint64_t remaining;           /* Content-Length or chunk bytes left */
    /* What EV_DONE reports about the current message. */
    uint64_t body_len;
    int64_t content_length;
    uint32_t head_len;
    int16_t status;
    uint8_t version_minor, chunked, conn_close, expect_continue, upgrade;
    char method[24];
} dds_http_stream;

void dds_http_stream_init(dds_http_stream *s, int is_response);
void dds_http_stream_free(dds_http_stream *s);
void dds_http_stream_feed(dds_http_stream *s, const char *buf, size_t len,
                          dds_http_cb cb, void *ctx);
/* The peer closed the connection (read returned 0, or the fd is closed): a
 * close-delimited response body ends here (EV_DONE); a message whose head was
 * reported but whose body is incomplete gets EV_INVALID. The stream is dead
 * afterwards. */
void dds_http_stream_eof(dds_http_stream *s, dds_http_cb cb, void *ctx);
/* From inside the EV_HEAD callback: this message has no body (a response to a
 * HEAD request). Ignored elsewhere. */
void dds_http_stream_no_body(dds_http_stream *s);
/* The connection stops being HTTP. From inside the EV_HEAD callback (a 2xx
 * response to CONNECT): the message ends with its head (EV_DONE), then the
 * stream is dead. Elsewhere (the request direction once the response said 101
 * or 2xx-to-CONNECT): dead at once, no event. */
void dds_http_stream_set_tunnel(dds_http_stream *s);
/* 1 between messages: the next byte fed would start a new head. */
int dds_http_stream_at_boundary(const dds_http_stream *s);
/* 1 once the stream has stopped (see the DDS_HTTP_DEAD_* reasons): the caller
 * passes everything through from then on. */
int dds_http_stream_dead(const dds_http_stream *s);
int dds_http_stream_dead_reason(const dds_http_stream *s);

/* One-shot scan of a buffer the client is about to write. */
enum { DDS_SCAN_NOT_HTTP = 0, DDS_SCAN_PARTIAL = 1, DDS_SCAN_COMPLETE = 2 };
typedef struct dds_http_scan {
    size_t head_len;      /* including the final CRLFCRLF */
    size_t insert_off;    /* where new header lines go: head_len - 2 */
    int has_context;      /* traceparent, x-datadog-trace-id or x-datadog-parent-id present */
    char method[24];
    const char *target;   /* into buf */
    size_t target_len;
    const char *host;     /* first Host header value (into buf), or NULL */
    size_t host_len;
    int64_t content_length;
    int chunked;
    int ambiguous_framing;
    int version_minor;
    int conn_close, expect_continue, upgrade; /* as in dds_http_msg */
} dds_http_scan;

/*
 * COMPLETE: buf starts with one whole request head (CRLF line endings only,
 * every line well-formed, ≤ DDS_HTTP_MAX_HEAD bytes); bytes after it (body,
 * more requests) are not looked at. PARTIAL: buf (non-empty) is a valid prefix
 * of such a head. NOT_HTTP: anything else, including an empty buf, a bare LF,
 * and a head longer than DDS_HTTP_MAX_HEAD. Scans at most DDS_HTTP_MAX_HEAD
 * bytes. Fields other than method are filled only for COMPLETE.
 */
int dds_http_scan_request(const char *buf, size_t len, dds_http_scan *out);

/*
 * The client write path scans a request head before it is written, then
 * feeds the stream what was written: this spares the stream scanning the
 * same head again. sc: what dds_http_scan_request said COMPLETE for the
 * bytes that are about to be fed from their start, all head_len of them at
 * least. If s is a request stream between messages (dds_http_stream_at_boundary),
 * it takes the head as if those bytes had been fed, with the same events and
 * state, except that EV_HEAD carries only the scalar fields (method, version,
 * framing; no target, no headers, no Host), and returns 1: the caller then
 * feeds what follows the head. Otherwise it does nothing and returns 0: feed
 * the bytes.
 */
int dds_http_stream_take_scanned(dds_http_stream *s, const dds_http_scan *sc, dds_http_cb cb, void *ctx);

#endif
