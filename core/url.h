/*
 * url.h — the http.url tag and the resource name of HTTP spans.
 *
 * The socket hooks hand over what core/http.h parsed from a request head (the
 * request target, the Host header) and what they know about the connection
 * (peer address, whether it is TLS). This file turns that into:
 *   - http.url: scheme://host[:port]/path?query, with URL userinfo removed,
 *     the fragment dropped, and every part of the query that matches
 *     DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP replaced by "<redacted>" — the
 *     same default expression and the same replacement as Datadog's other
 *     tracers, so the same secrets are hidden;
 *   - the resource: "METHOD /path" with id-like path segments replaced by "?"
 *     so that /users/123 and /users/456 share one resource.
 *
 * The expression is compiled once by dds_url_init (PCRE2, JIT when available)
 * before any thread traces; matching is then thread-safe (separate match data
 * per call, a shared read-only match context with match, depth and heap limits).
 * A query longer than DDS_URL_MAX_QUERY, or one on which the matcher hits a
 * limit, is replaced by "<redacted>" entirely: the output never depends on a
 * backtracking budget running out halfway.
 */
#ifndef DDS_URL_H
#define DDS_URL_H

#include <stddef.h>

#define DDS_URL_MAX_QUERY 4096
#define DDS_URL_REDACTED "<redacted>"

/* Datadog's default DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP (as in
 * dd-trace-py), in PCRE2 syntax. */
extern const char dds_url_default_query_regexp[];

/* NULL: the default expression; "": no redaction; anything else: that
 * expression. Returns 0, or -1 when it does not compile (then the default is
 * used, and the caller logs). Not to be called while other threads build URLs;
 * a URL built before any call uses the default. */
int dds_url_init(const char *query_regexp);
/* Frees the compiled expression (tests, exit). */
void dds_url_shutdown(void);

/*
 * http.url into out (NUL-terminated, truncated to cap - 1 bytes; returns the
 * length written). scheme: "http" or "https" (NULL = "http"). Host: the Host
 * header when host_len > 0, else peer_host (IPv6 literals get brackets) with
 * ":peer_port" unless it is the scheme's default port or ≤ 0. An absolute-form
 * target ("http://user:pw@h/p?q") is used as it is, minus the userinfo; an
 * authority-form target (CONNECT h:443) becomes the host when there is no Host
 * header.
 */
size_t dds_url_build(char *out, size_t cap, const char *scheme, const char *host_hdr,
                     size_t host_len, const char *peer_host, int peer_port,
                     const char *target, size_t target_len);

/* The query (without '?') with every match replaced by "<redacted>". */
size_t dds_url_redact_query(char *out, size_t cap, const char *q, size_t qlen);

/*
 * "METHOD /path" (no query, no fragment; absolute-form targets contribute only
 * their path; an empty path is "/"). A path segment becomes "?" when it looks
 * like an identifier: all digits; digits with . _ - (3+ chars: dates, versions);
 * hex with at least one digit (6+ chars, . _ - allowed: hashes, UUIDs); 20+
 * chars containing a digit (tokens); or any of % & ' ( ) * + , : = @ (encoded
 * or structured values). Targets that are not paths ("*", CONNECT's host:port)
 * are kept as they are. method may be NULL or "" (then just the path).
 */
size_t dds_url_resource(char *out, size_t cap, const char *method,
                        const char *target, size_t target_len);

#endif
