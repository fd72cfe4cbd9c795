/*
 * inject.h — adding trace-context headers to an outgoing request head without
 * the application noticing.
 *
 * When a client writes a request head (found by dds_http_scan_request in
 * core/http.h), the socket hooks write a header block (made by
 * core/propagation.c) into the middle of it: the app's bytes before the
 * insertion point, the block, then the rest. The kernel may accept any prefix
 * of that. What the application is told must be exactly what it would have
 * been told without the block: a count of *its* bytes that left, never one of
 * ours, never 0 for a non-empty write, and never a count that makes it resend or
 * skip a byte. This file is that accounting, as pure functions over an
 * explicit state (one per connection, kept by the hooks) so every partial-write
 * sequence can be tested without a socket.
 *
 * Use, per write call on a connection with st.active set:
 *   n = dds_inject_plan(&st, app_iov, napp, iov, cap);  real = writev(fd, iov, n);
 *   real < 0 : return it (errno as is; nothing was accepted).
 *   r = dds_inject_account(&st, app_len, real);
 *   r ≥ 0    : return r to the app.
 *   r == -1  : the kernel took only injected bytes. Blocking socket: plan and
 *              write again. Non-blocking: errno = EAGAIN, return -1 (the app
 *              will poll and retry; the rest of the block goes first).
 * Once st.active is 0 the connection is back to plain pass-through; only then
 * may the hooks look for (and begin) the next injection.
 */
#ifndef DDS_INJECT_H
#define DDS_INJECT_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct dds_inject_state {
    char *block;        /* malloc'd copy; freed when fully sent or on reset */
    size_t block_len;
    size_t block_sent;  /* bytes of the block the kernel has taken */
    size_t app_before;  /* app bytes still to go out before the block */
    int active;
} dds_inject_state;

/* Starts an injection: copies the block; app_offset = how many of the app's
 * next bytes go before it (dds_http_scan.insert_off). Returns 0, or -1 (len 0,
 * out of memory, or an injection already in progress: nothing changes). */
int dds_inject_begin(dds_inject_state *st, const char *block, size_t len, size_t app_offset);

/* The iovecs for the real write, built from the app's iovecs (no copying of
 * app data). Returns how many were written to out (≤ outcap, ≤ IOV_MAX).
 * All of the app's bytes are included when outcap ≥ napp + 2 (and
 * napp + 2 ≤ IOV_MAX); otherwise the plan is a prefix, which the accounting
 * treats as any other partial write. Without an active injection it is the
 * app's iovecs (empty ones dropped). */
int dds_inject_plan(const dds_inject_state *st, const struct iovec *app, int napp,
                    struct iovec *out, int outcap);

/* k = bytes the kernel accepted for the planned write (k ≥ 0); app_len = total
 * length of the app's iovecs for that call. Returns the count to report to the
 * app, or -1 when none of the app's bytes went out (see above; this includes
 * k == 0 for a non-empty write). Updates st and frees the block once sent. */
ssize_t dds_inject_account(dds_inject_state *st, size_t app_len, size_t k);

/* Forgets any injection (connection closed or reset). */
void dds_inject_reset(dds_inject_state *st);

/* ---- iovec helpers ---- */

/* Sum of the lengths (saturating at SIZE_MAX). */
size_t dds_iov_total(const struct iovec *iov, int n);
/* Describes bytes [off, off+len) of iov[0..n) as iovecs in out (empty ones
 * skipped). Returns the count written (≤ outcap); *got (may be NULL) receives
 * how many bytes they cover, which is less than len when outcap ran out or the
 * input is shorter. */
int dds_iov_slice(const struct iovec *iov, int n, size_t off, size_t len,
                  struct iovec *out, int outcap, size_t *got);
/* Copies the first cap bytes of iov[0..n) into dst (to scan a head spread over
 * several iovecs). Returns the number copied. */
size_t dds_iov_gather(const struct iovec *iov, int n, char *dst, size_t cap);

#endif
