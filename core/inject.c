/*
 * inject.c — see inject.h. With o = app bytes still before the block and
 * h = block bytes not yet sent, the kernel's count k for a planned write
 * [app o][block h][app rest] splits as: k ≤ o → all app; o < k < o+h → o app
 * bytes and part of the block; k ≥ o+h → the block and k−h app bytes. Once the
 * block is partly out the plan is [block rest][app], and the app is told -1
 * until its own bytes move.
 */
#include "inject.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

size_t dds_iov_total(const struct iovec *iov, int n)
{
    size_t t = 0;
    int i;
    for (i = 0; i < n; i++) {
        if (iov[i].iov_len > SIZE_MAX - t)
            return SIZE_MAX;
        t += iov[i].iov_len;
    }
    return t;
}

int dds_iov_slice(const struct iovec *iov, int n, size_t off, size_t len,
                  struct iovec *out, int outcap, size_t *got)
{
    int i, k = 0;
    size_t done = 0;
    for (i = 0; i < n && done < len; i++) {
        size_t l = iov[i].iov_len, take;
        if (off >= l) {
            off -= l;
            continue;
        }
        take = l - off;
        if (take > len - done)
            take = len - done;
        if (k >= outcap)
            break;
        out[k].iov_base = (char *)iov[i].iov_base + off;
        out[k].iov_len = take;
        k++;
        done += take;
        off = 0;
    }
    if (got)
        *got = done;
    return k;
}

size_t dds_iov_gather(const struct iovec *iov, int n, char *dst, size_t cap)
{
    size_t done = 0;
    int i;
    for (i = 0; i < n && done < cap; i++) {
        size_t take = iov[i].iov_len;
        if (take > cap - done)
            take = cap - done;
        if (take)
            memcpy(dst + done, iov[i].iov_base, take);
        done += take;
    }
    return done;
}

int dds_inject_begin(dds_inject_state *st, const char *block, size_t len, size_t app_offset)
{
    char *b;
    if (st->active || len == 0 || !block)
        return -1;
    b = malloc(len);
    if (!b)
        return -1;
    memcpy(b, block, len);
    st->block = b;
    st->block_len = len;
    st->block_sent = 0;
    st->app_before = app_offset;
    st->active = 1;
    return 0;
}

void dds_inject_reset(dds_inject_state *st)
{
    free(st->block);
    memset(st, 0, sizeof *st);
}

int dds_inject_plan(const dds_inject_state *st, const struct iovec *app, int napp,
                    struct iovec *out, int outcap)
{
    size_t got;
    int k;

    if (outcap > IOV_MAX)
        outcap = IOV_MAX;
    if (outcap <= 0)
        return 0;
    if (!st->active)
        return dds_iov_slice(app, napp, 0, SIZE_MAX, out, outcap, NULL);

    if (st->block_sent > 0) {
        out[0].iov_base = st->block + st->block_sent;
        out[0].iov_len = st->block_len - st->block_sent;
        return 1 + dds_iov_slice(app, napp, 0, SIZE_MAX, out + 1, outcap - 1, NULL);
    }

    if (dds_iov_total(app, napp) <= st->app_before)
        return dds_iov_slice(app, napp, 0, SIZE_MAX, out, outcap, NULL);
    k = dds_iov_slice(app, napp, 0, st->app_before, out, outcap, &got);
    if (got < st->app_before || k >= outcap)
        return k; /* the block does not fit: a shorter write, accounted as k ≤ o */
    out[k].iov_base = st->block;
    out[k].iov_len = st->block_len;
    k++;
    return k + dds_iov_slice(app, napp, st->app_before, SIZE_MAX, out + k, outcap - k, NULL);
}

static void finish(dds_inject_state *st)
{
    free(st->block);
    memset(st, 0, sizeof *st);
}

ssize_t dds_inject_account(dds_inject_state *st, size_t app_len, size_t k)
{
    size_t o, h;

    if (!st->active)
        return (ssize_t)k;
    if (k == 0)
        return app_len ? -1 : 0;

    if (st->block_sent > 0) {
        size_t rest = st->block_len - st->block_sent;
        if (k < rest) {
            st->block_sent += k;
            return -1;
        }
        finish(st);
        k -= rest;
        return k ? (ssize_t)k : (app_len ? -1 : 0);
    }

    o = st->app_before;
    h = st->block_len;
    if (k <= o) { /* also the case app_len ≤ o: the plan held no block */
        st->app_before -= k;
        return (ssize_t)k;
    }
    if (k < o + h) {
        st->block_sent = k - o;
        st->app_before = 0;
        return o ? (ssize_t)o : -1;
    }
    finish(st);
    k -= h;
    return k ? (ssize_t)k : (app_len ? -1 : 0);
}
