/* Unit tests for core/inject.c. A simulated application writes a byte stream
 * through the plan/account pair while a simulated kernel accepts every possible
 * sequence of partial counts (exhaustively for small sizes, randomly for large
 * ones). After every call: the wire is a prefix of app[0..o) + block + app[o..),
 * and the application's own count of bytes written equals the number of its
 * bytes on the wire — so it never skips or resends a byte, and never sees 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <cmocka.h>

#include "inject.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

enum { APP_BLOCKING = 0, APP_NONBLOCKING, APP_PIECES, APP_WRITEV, APP_NMODES };

/* Chooses the kernel's answer at each call: returns an index < nopt. */
typedef struct chooser {
    /* exhaustive: odometer over the choice tree */
    int exhaustive;
    int choice[512];
    int nbranch[512];
    int nsteps;
    /* random */
    uint64_t rng;
} chooser;

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int choose(chooser *c, int nopt)
{
    if (c->exhaustive) {
        int i = c->nsteps++;
        assert_true(i < 512);
        c->nbranch[i] = nopt;
        if (c->choice[i] >= nopt)
            c->choice[i] = 0;
        return c->choice[i];
    }
    /* random: favour the extremes, which is where the rules have edges */
    switch (xs(&c->rng) % 4) {
    case 0: return 0;
    case 1: return nopt - 1;
    default: return (int)(xs(&c->rng) % (uint64_t)nopt);
    }
}

/* Advances the odometer; returns 0 when every path has been run. */
static int next_path(chooser *c)
{
    int i;
    for (i = c->nsteps - 1; i >= 0; i--) {
        if (c->choice[i] + 1 < c->nbranch[i]) {
            c->choice[i]++;
            memset(c->choice + i + 1, 0, sizeof(int) * (size_t)(512 - i - 1));
            c->nsteps = 0;
            return 1;
        }
    }
    return 0;
}

typedef struct sim_cfg {
    const char *data;
    size_t len;
    const char *block;
    size_t blen;
    size_t off;
    int mode;
    size_t piece;   /* APP_PIECES: the app writes at most this much per call */
} sim_cfg;

static size_t block_on_wire(const sim_cfg *c, size_t wlen)
{
    if (wlen <= c->off)
        return 0;
    return wlen - c->off < c->blen ? wlen - c->off : c->blen;
}

/* One whole run. Returns the number of kernel calls. */
static int simulate(const sim_cfg *c, chooser *ch)
{
    size_t total = c->len + c->blen;
    char *want = malloc(total + 1), *wire = malloc(total + 1);
    size_t wlen = 0, done = 0;
    int calls = 0, last_eagain = 0;
    dds_inject_state st;
    memset(&st, 0, sizeof st);

    memcpy(want, c->data, c->off);
    memcpy(want + c->off, c->block, c->blen);
    memcpy(want + c->off + c->blen, c->data + c->off, c->len - c->off);
    assert_int_equal(dds_inject_begin(&st, c->block, c->blen, c->off), 0);

    while (done < c->len) {
        /* the app's write call */
        struct iovec app[8], out[16];
        int napp = 0, n;
        size_t alen = c->len - done;
        if (c->mode == APP_PIECES && alen > c->piece)
            alen = c->piece;
        if (c->mode == APP_WRITEV) {
            /* cut into up to 4 pieces, with an empty iovec in the middle */
            size_t a = alen / 3, b = alen / 2;
            app[napp++] = (struct iovec){ (void *)(c->data + done), a };
            app[napp++] = (struct iovec){ (void *)(c->data + done + a), 0 };
            app[napp++] = (struct iovec){ (void *)(c->data + done + a), b - a };
            app[napp++] = (struct iovec){ (void *)(c->data + done + b), alen - b };
        } else {
            app[napp++] = (struct iovec){ (void *)(c->data + done), alen };
        }
        for (;;) { /* the same call, retried after -1 */
            size_t planned, k;
            ssize_t r;
            int opt, eagain_ok;
            n = dds_inject_plan(&st, app, napp, out, 16);
            planned = dds_iov_total(out, n);
            assert_true(planned > 0);
            /* options: k = 1..planned, plus EAGAIN for a non-blocking app (not
             * twice in a row, so the tree is finite) */
            eagain_ok = c->mode == APP_NONBLOCKING && !last_eagain;
            opt = choose(ch, (int)planned + eagain_ok);
            calls++;
            if (eagain_ok && opt == (int)planned) {
                last_eagain = 1; /* real write failed: the hook returns it as is */
                continue;
            }
            last_eagain = 0;
            k = (size_t)opt + 1;
            assert_true(wlen + k <= total);
            assert_int_equal(dds_iov_gather(out, n, wire + wlen, k), k);
            wlen += k;
            assert_memory_equal(wire, want, wlen);
            r = dds_inject_account(&st, alen, k);
            if (r == -1) {
                /* none of this call's app bytes left */
                assert_int_equal(wlen - block_on_wire(c, wlen), done);
                continue;
            }
            assert_true(r > 0);
            assert_true((size_t)r <= alen);
            done += (size_t)r;
            assert_int_equal(wlen - block_on_wire(c, wlen), done);
            break;
        }
    }
    assert_int_equal(wlen, total);
    assert_memory_equal(wire, want, total);
    assert_int_equal(st.active, 0);
    assert_null(st.block);
    dds_inject_reset(&st);
    free(want);
    free(wire);
    return calls;
}

static void test_exhaustive_small(void **state)
{
    (void)state;
    static const char data[] = "ABCDEFGH";
    static const char blk[] = "wxyz";
    size_t len, blen, off;
    int mode;
    long paths = 0;
    chooser *ch = calloc(1, sizeof *ch);
    for (len = 1; len <= 7; len++) {
        for (blen = 1; blen <= 4; blen++) {
            for (off = 0; off < len; off++) {
                for (mode = 0; mode < APP_NMODES; mode++) {
                    sim_cfg c = { data, len, blk, blen, off, mode, 2 };
                    memset(ch, 0, sizeof *ch);
                    ch->exhaustive = 1;
                    do {
                        simulate(&c, ch);
                        paths++;
                    } while (next_path(ch));
                }
            }
        }
    }
    free(ch);
    print_message("exhaustive: %ld kernel-answer sequences\n", paths);
    assert_true(paths > 10000);
}

static void test_randomized(void **state)
{
    (void)state;
    chooser *ch = calloc(1, sizeof *ch);
    char *data = malloc(4096), *blk = malloc(512);
    int t;
    size_t i;
    for (i = 0; i < 4096; i++)
        data[i] = (char)('a' + i % 26);
    for (i = 0; i < 512; i++)
        blk[i] = (char)('0' + i % 10);
    ch->rng = 0x1234567887654321ULL;
    for (t = 0; t < 20000; t++) {
        sim_cfg c;
        c.data = data;
        c.len = 1 + xs(&ch->rng) % 4000;
        c.block = blk;
        c.blen = 1 + xs(&ch->rng) % 400;
        c.off = xs(&ch->rng) % c.len;
        c.mode = (int)(xs(&ch->rng) % APP_NMODES);
        c.piece = 1 + xs(&ch->rng) % 700;
        ch->exhaustive = 0;
        simulate(&c, ch);
    }
    free(data);
    free(blk);
    free(ch);
}

/* The plan's layout, spelled out. */
static void test_plan_layout(void **state)
{
    (void)state;
    dds_inject_state st;
    struct iovec app[2], out[8];
    char buf[64];
    int n;
    memset(&st, 0, sizeof st);
    app[0] = (struct iovec){ "GET / HTTP/1.1\r\n", 16 };
    app[1] = (struct iovec){ "Host: h\r\n\r\n", 11 };

    /* inactive: the app's iovecs */
    n = dds_inject_plan(&st, app, 2, out, 8);
    assert_int_equal(n, 2);

    assert_int_equal(dds_inject_begin(&st, "X: 1\r\n", 6, 25), 0);
    assert_int_equal(dds_inject_begin(&st, "Y", 1, 0), -1); /* already active */
    n = dds_inject_plan(&st, app, 2, out, 8);
    assert_int_equal(n, 4); /* app0, app1[0..9), block, app1[9..) */
    assert_int_equal(dds_iov_gather(out, n, buf, sizeof buf), 33);
    assert_memory_equal(buf, "GET / HTTP/1.1\r\nHost: h\r\nX: 1\r\n\r\n", 33);

    /* a cap too small for the block: a plain prefix */
    n = dds_inject_plan(&st, app, 2, out, 2);
    assert_int_equal(n, 2);
    assert_int_equal(dds_iov_total(out, n), 25);
    n = dds_inject_plan(&st, app, 2, out, 1);
    assert_int_equal(n, 1);
    assert_int_equal(dds_iov_total(out, n), 16);
    assert_int_equal(dds_inject_plan(&st, app, 2, out, 0), 0);

    /* kernel takes 27: 25 app + 2 of the block → the app is told 25 */
    assert_int_equal(dds_inject_account(&st, 27, 27), 25);
    assert_int_equal(st.block_sent, 2);
    /* the app's retry: [block rest][app "\r\n"] */
    app[0] = (struct iovec){ "\r\n", 2 };
    n = dds_inject_plan(&st, app, 1, out, 8);
    assert_int_equal(n, 2);
    assert_int_equal(dds_iov_gather(out, n, buf, sizeof buf), 6);
    assert_memory_equal(buf, " 1\r\n\r\n", 6);
    assert_int_equal(dds_inject_account(&st, 2, 3), -1);  /* only block bytes */
    assert_int_equal(dds_inject_account(&st, 2, 1), -1);  /* block done, 0 app bytes */
    assert_false(st.active);
    assert_int_equal(dds_inject_account(&st, 2, 2), 2);   /* pass-through */
    dds_inject_reset(&st);

    /* k == 0 is never reported as 0 for a non-empty write */
    assert_int_equal(dds_inject_begin(&st, "B", 1, 3), 0);
    assert_int_equal(dds_inject_account(&st, 10, 0), -1);
    assert_int_equal(dds_inject_account(&st, 0, 0), 0);
    assert_int_equal(st.app_before, 3);
    dds_inject_reset(&st);
    assert_false(st.active);
    assert_null(st.block);
    assert_int_equal(dds_inject_begin(&st, "B", 0, 3), -1);
    assert_int_equal(dds_inject_begin(&st, NULL, 3, 3), -1);
}

/* The block goes right after the app's last byte: it waits for the next write. */
static void test_block_at_end(void **state)
{
    (void)state;
    dds_inject_state st;
    struct iovec app[1], out[4];
    char buf[16];
    int n;
    memset(&st, 0, sizeof st);
    assert_int_equal(dds_inject_begin(&st, "BB", 2, 3), 0);
    app[0] = (struct iovec){ "abc", 3 };
    n = dds_inject_plan(&st, app, 1, out, 4);
    assert_int_equal(dds_iov_total(out, n), 3);
    assert_int_equal(dds_inject_account(&st, 3, 3), 3);
    assert_true(st.active);
    app[0] = (struct iovec){ "de", 2 };
    n = dds_inject_plan(&st, app, 1, out, 4);
    assert_int_equal(dds_iov_gather(out, n, buf, sizeof buf), 4);
    assert_memory_equal(buf, "BBde", 4);
    assert_int_equal(dds_inject_account(&st, 2, 2), -1);
    assert_false(st.active);
}

static void test_iov_helpers(void **state)
{
    (void)state;
    struct iovec in[4], out[4];
    char buf[32];
    size_t got;
    int n;
    in[0] = (struct iovec){ "abc", 3 };
    in[1] = (struct iovec){ "", 0 };
    in[2] = (struct iovec){ "defg", 4 };
    in[3] = (struct iovec){ "hi", 2 };
    assert_int_equal(dds_iov_total(in, 4), 9);
    n = dds_iov_slice(in, 4, 2, 5, out, 4, &got);
    assert_int_equal(n, 2);
    assert_int_equal(got, 5);
    assert_int_equal(dds_iov_gather(out, n, buf, sizeof buf), 5);
    assert_memory_equal(buf, "cdefg", 5);
    n = dds_iov_slice(in, 4, 2, 100, out, 1, &got);
    assert_int_equal(n, 1);
    assert_int_equal(got, 1);
    n = dds_iov_slice(in, 4, 20, 5, out, 4, &got);
    assert_int_equal(n, 0);
    assert_int_equal(got, 0);
    assert_int_equal(dds_iov_gather(in, 4, buf, 4), 4);
    assert_memory_equal(buf, "abcd", 4);
    assert_int_equal(dds_iov_gather(in, 4, buf, 0), 0);
    {
        struct iovec big[2] = { { NULL, SIZE_MAX }, { NULL, 5 } };
        assert_true(dds_iov_total(big, 2) == SIZE_MAX);
    }
}

/* Many app iovecs: the plan never exceeds IOV_MAX; a plan that cannot hold
 * everything is a prefix, and the accounting still holds. */
static void test_iov_max(void **state)
{
    (void)state;
    int napp = IOV_MAX, n, i;
    struct iovec *app = calloc((size_t)napp, sizeof *app);
    struct iovec *out = calloc((size_t)napp + 8, sizeof *out);
    char *data = malloc((size_t)napp);
    dds_inject_state st;
    size_t planned;
    ssize_t r;
    memset(&st, 0, sizeof st);
    memset(data, 'a', (size_t)napp);
    for (i = 0; i < napp; i++)
        app[i] = (struct iovec){ data + i, 1 };
    assert_int_equal(dds_inject_begin(&st, "XYZ", 3, 1000), 0);
    n = dds_inject_plan(&st, app, napp, out, napp + 8);
    assert_true(n <= IOV_MAX);
    planned = dds_iov_total(out, n);
    assert_int_equal(planned, (size_t)IOV_MAX - 1 + 3); /* app[0..1000) + block + 23 app */
    r = dds_inject_account(&st, (size_t)napp, planned);
    assert_int_equal(r, IOV_MAX - 1);
    assert_false(st.active);
    free(app);
    free(out);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_layout),
        cmocka_unit_test(test_block_at_end),
        cmocka_unit_test(test_iov_helpers),
        cmocka_unit_test(test_iov_max),
        cmocka_unit_test(test_exhaustive_small),
        cmocka_unit_test(test_randomized),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
