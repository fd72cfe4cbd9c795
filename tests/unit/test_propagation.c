/* Unit tests for core/propagation.c: every style's round trip, the W3C and
 * x-datadog-tags validation cases of wire spec §3, and the merge rules of §3.7. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "propagation.h"

/* ------------------------------------------------------------------------ */
/* Helpers */

static dds_config mkcfg(int n, const int *styles)
{
    dds_config c;
    memset(&c, 0, sizeof c);
    c.extract.n = n;
    c.inject.n = n;
    for (int i = 0; i < n; i++) {
        c.extract.style[i] = styles[i];
        c.inject.style[i] = styles[i];
    }
    c.extract_behavior = DDS_EXTRACT_CONTINUE;
    c.x_datadog_tags_max_length = 512;
    return c;
}

static dds_config cfg1(int s)
{
    return mkcfg(1, &s);
}

static dds_config cfg2(int a, int b)
{
    int s[2] = {a, b};
    return mkcfg(2, s);
}

static dds_hdr H(const char *name, const char *value)
{
    dds_hdr h = {name, strlen(name), value, strlen(value)};
    return h;
}

#define NH(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Turn injected "name: value\r\n" lines back into headers. Every line must be
 * well formed and printable: what we inject goes into someone's request. */
static int parse_lines(char *buf, size_t len, dds_hdr *out, int max)
{
    int n = 0;
    size_t i = 0;
    while (i < len) {
        char *line = buf + i;
        char *crlf = strstr(line, "\r\n");
        assert_non_null(crlf);
        size_t ll = (size_t)(crlf - line);
        for (size_t k = 0; k < ll; k++)
            assert_true(line[k] >= 0x20 && line[k] <= 0x7e);
        char *colon = memchr(line, ':', ll);
        assert_non_null(colon);
        assert_true(colon[1] == ' ');
        assert_true(n < max);
        out[n].name = line;
        out[n].name_len = (size_t)(colon - line);
        out[n].value = colon + 2;
        out[n].value_len = ll - out[n].name_len - 2;
        n++;
        i += ll + 2;
    }
    assert_int_equal(i, len);
    return n;
}

/* The value of header `name` in an injected block, NUL-terminated, or NULL. */
static const char *find_line(const char *buf, const char *name, char *val, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = buf;
    while (*p) {
        const char *e = strstr(p, "\r\n");
        if (e == NULL)
            return NULL;
        if (strncmp(p, name, nl) == 0 && p[nl] == ':' && p[nl + 1] == ' ') {
            size_t vl = (size_t)(e - (p + nl + 2));
            assert_true(vl < cap);
            memcpy(val, p + nl + 2, vl);
            val[vl] = '\0';
            return val;
        }
        p = e + 2;
    }
    return NULL;
}

/* A trace's context is a pointer (core/span.h); each test trace gets a
 * full-size one of its own to fill. */
static dds_trace_context test_ctx;
#define TCTX(t) (*(dds_trace_context *)(t).ctx)

static void clear_trace(dds_trace *t)
{
    memset(t, 0, sizeof *t);
    memset(&test_ctx, 0, sizeof test_ctx);
    t->ctx = &test_ctx;
}

static void mktrace(dds_trace *t, uint64_t hi, uint64_t lo, int prio, int mech)
{
    clear_trace(t);
    t->trace_id_hi = hi;
    t->trace_id_lo = lo;
    t->sampling.decided = 1;
    t->sampling.priority = prio;
    t->sampling.mechanism = mech;
}

static void add_ctx_tag(dds_trace_context *c, const char *k, const char *v)
{
    snprintf(c->tags[c->ntags].key, sizeof c->tags[0].key, "%s", k);
    snprintf(c->tags[c->ntags].val, sizeof c->tags[0].val, "%s", v);
    c->ntags++;
}

static const char *ctx_tag(const dds_trace_context *c, const char *k)
{
    for (int i = 0; i < c->ntags; i++)
        if (strcmp(c->tags[i].key, k) == 0)
            return c->tags[i].val;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Round trips */

static void roundtrip(int style, uint64_t hi, uint64_t lo, int prio, const char *origin)
{
    dds_config c = cfg1(style);
    dds_trace t;
    mktrace(&t, hi, lo, prio, DDS_MECH_RULE);
    if (origin)
        snprintf(TCTX(t).origin, sizeof TCTX(t).origin, "%s", origin);
    add_ctx_tag(&TCTX(t), "_dd.p.usr.id", "b64=ab");
    uint64_t span = 0x0123456789abcdefULL;
    char buf[DDS_PROPAGATION_INJECT_MAX];
    size_t n = dds_propagation_inject(&t, span, &c, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal(strlen(buf), n);
    dds_hdr h[16];
    int nh = parse_lines(buf, n, h, 16);

    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, nh, &c, &x), 1);
    assert_true(x.trace_id_hi == hi);
    assert_true(x.trace_id_lo == lo);
    assert_true(x.parent_id == span);
    assert_int_equal(x.has_priority, 1);
    assert_string_equal(x.propagation_error, "");
    assert_string_equal(x.w3c_extraction_error, "");
    switch (style) {
    case DDS_STYLE_DATADOG:
    case DDS_STYLE_TRACECONTEXT:
        assert_int_equal(x.priority, prio);
        assert_string_equal(x.origin, origin ? origin : "");
        assert_string_equal(ctx_tag(&x, "_dd.p.usr.id"), "b64=ab");
        if (prio > 0)
            assert_string_equal(ctx_tag(&x, "_dd.p.dm"), "-3");
        else
            assert_null(ctx_tag(&x, "_dd.p.dm"));
        assert_null(ctx_tag(&x, "_dd.p.tid"));
        break;
    case DDS_STYLE_B3MULTI:
        assert_int_equal(x.priority, prio > 0 ? 1 : 0);
        assert_int_equal(x.ntags, 0);
        break;
    case DDS_STYLE_B3:
        assert_int_equal(x.priority, prio > 1 ? 2 : prio > 0 ? 1 : 0);
        assert_int_equal(x.ntags, 0);
        break;
    }
    if (style == DDS_STYLE_TRACECONTEXT) {
        char want[17];
        snprintf(want, sizeof want, "%016llx", (unsigned long long)span);
        assert_string_equal(x.last_parent_id, want);
    }
}

static void test_roundtrip_every_style(void **state)
{
    (void)state;
    const int styles[] = {DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT, DDS_STYLE_B3MULTI, DDS_STYLE_B3};
    const uint64_t his[] = {0, 0x640cfd8d00000000ULL};
    const uint64_t los[] = {1, 0x1234567890abcdefULL, UINT64_MAX};
    for (int s = 0; s < 4; s++)
        for (int h = 0; h < 2; h++)
            for (int l = 0; l < 3; l++)
                for (int p = -1; p <= 2; p++) {
                    roundtrip(styles[s], his[h], los[l], p, NULL);
                    roundtrip(styles[s], his[h], los[l], p, "synthetics");
                }
}

static void test_roundtrip_all_styles_at_once(void **state)
{
    (void)state;
    int styles[4] = {DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT, DDS_STYLE_B3MULTI, DDS_STYLE_B3};
    dds_config c = mkcfg(4, styles);
    dds_trace t;
    mktrace(&t, 0x640cfd8d00000000ULL, 42, 2, DDS_MECH_MANUAL);
    snprintf(TCTX(t).origin, sizeof TCTX(t).origin, "rum");
    char buf[DDS_PROPAGATION_INJECT_MAX];
    size_t n = dds_propagation_inject(&t, 7, &c, buf, sizeof buf);
    dds_hdr h[16];
    int nh = parse_lines(buf, n, h, 16);
    assert_int_equal(nh, 11);
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, nh, &c, &x), 1);
    assert_true(x.trace_id_hi == 0x640cfd8d00000000ULL && x.trace_id_lo == 42 && x.parent_id == 7);
    assert_int_equal(x.priority, 2);
    assert_string_equal(x.origin, "rum");
    assert_string_equal(ctx_tag(&x, "_dd.p.dm"), "-4");
    /* Same trace and parent in tracecontext: nothing to replace. */
    assert_string_equal(x.last_parent_id, "");
}

/* ------------------------------------------------------------------------ */
/* Injection, exact bytes */

static void test_inject_datadog_exact(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_DATADOG);
    dds_trace t;
    mktrace(&t, 0x640cfd8d00000000ULL, 1311768467294899695ULL, 1, DDS_MECH_AGENT_RATE);
    snprintf(TCTX(t).origin, sizeof TCTX(t).origin, "synthetics");
    add_ctx_tag(&TCTX(t), "_dd.p.dm", "-0"); /* superseded by our decision */
    add_ctx_tag(&TCTX(t), "_dd.p.usr.id", "x");
    char buf[DDS_PROPAGATION_INJECT_MAX];
    size_t n = dds_propagation_inject(&t, 9876543210ULL, &c, buf, sizeof buf);
    const char *want = "x-datadog-trace-id: 1311768467294899695\r\n"
                       "x-datadog-parent-id: 9876543210\r\n"
                       "x-datadog-sampling-priority: 1\r\n"
                       "x-datadog-origin: synthetics\r\n"
                       "x-datadog-tags: _dd.p.dm=-1,_dd.p.usr.id=x,_dd.p.tid=640cfd8d00000000\r\n";
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));

    /* Dropped: no _dd.p.dm at all (cpp); 64-bit: no _dd.p.tid. */
    mktrace(&t, 0, 5, 0, DDS_MECH_AGENT_RATE);
    add_ctx_tag(&TCTX(t), "_dd.p.dm", "-0");
    n = dds_propagation_inject(&t, 6, &c, buf, sizeof buf);
    assert_string_equal(buf, "x-datadog-trace-id: 5\r\n"
                             "x-datadog-parent-id: 6\r\n"
                             "x-datadog-sampling-priority: 0\r\n");

    /* Extracted decision (no mechanism): the incoming _dd.p.dm travels on. */
    mktrace(&t, 0, 5, 2, DDS_MECH_NONE);
    add_ctx_tag(&TCTX(t), "_dd.p.dm", "-4");
    n = dds_propagation_inject(&t, 6, &c, buf, sizeof buf);
    char v[256];
    assert_string_equal(find_line(buf, "x-datadog-tags", v, sizeof v), "_dd.p.dm=-4");
    assert_string_equal(find_line(buf, "x-datadog-sampling-priority", v, sizeof v), "2");

    /* Not decided yet: the extracted priority, else AUTO_KEEP. */
    clear_trace(&t);
    t.trace_id_lo = 5;
    n = dds_propagation_inject(&t, 6, &c, buf, sizeof buf);
    assert_string_equal(find_line(buf, "x-datadog-sampling-priority", v, sizeof v), "1");
    TCTX(t).has_priority = 1;
    TCTX(t).priority = -1;
    n = dds_propagation_inject(&t, 6, &c, buf, sizeof buf);
    assert_string_equal(find_line(buf, "x-datadog-sampling-priority", v, sizeof v), "-1");
    (void)n;
}

/* The decimal ids of every width, against printf (the writer of x-datadog-
 * trace-id/parent-id groups digits by eight). */
static void test_inject_datadog_decimal_ids(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_DATADOG);
    dds_trace t;
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t lo = i < 64 ? (i & 1 ? UINT64_MAX >> i : 1ULL << i) : x >> (i % 64);
        uint64_t parent = i < 20 ? 100000000ULL * (uint64_t)i : (x >> 1) | 1;
        if (lo == 0)
            lo = 1;
        mktrace(&t, 0, lo, 1, DDS_MECH_AGENT_RATE);
        char buf[DDS_PROPAGATION_INJECT_MAX], v[64], want[32];
        dds_propagation_inject(&t, parent, &c, buf, sizeof buf);
        snprintf(want, sizeof want, "%" PRIu64, lo);
        assert_string_equal(find_line(buf, "x-datadog-trace-id", v, sizeof v), want);
        snprintf(want, sizeof want, "%" PRIu64, parent);
        assert_string_equal(find_line(buf, "x-datadog-parent-id", v, sizeof v), want);
    }
}

static void test_inject_tracecontext_exact(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_TRACECONTEXT);
    dds_trace t;
    mktrace(&t, 0x640cfd8d00000000ULL, 0xabcdefab12345678ULL, 2, DDS_MECH_RULE);
    snprintf(TCTX(t).origin, sizeof TCTX(t).origin, "a=b;c,d~e");
    add_ctx_tag(&TCTX(t), "_dd.p.usr.id", "v=1");
    add_ctx_tag(&TCTX(t), "_dd.p.k;x", "y");
    snprintf(TCTX(t).dd_unknown, sizeof TCTX(t).dd_unknown, "x:1;y:2");
    snprintf(TCTX(t).tracestate_other, sizeof TCTX(t).tracestate_other, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    char buf[DDS_PROPAGATION_INJECT_MAX];
    size_t n = dds_propagation_inject(&t, 0x00f067aa0ba902b7ULL, &c, buf, sizeof buf);
    const char *want =
        "traceparent: 00-640cfd8d00000000abcdefab12345678-00f067aa0ba902b7-01\r\n"
        "tracestate: dd=s:2;p:00f067aa0ba902b7;o:a~b_c_d_e;t.dm:-3;t.usr.id:v~1;t.k_x:y;x:1;y:2,"
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE\r\n";
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));

    /* Dropped, 64-bit, nothing else. */
    mktrace(&t, 0, 1, -1, DDS_MECH_RULE);
    n = dds_propagation_inject(&t, 2, &c, buf, sizeof buf);
    assert_string_equal(buf, "traceparent: 00-00000000000000000000000000000001-0000000000000002-00\r\n"
                             "tracestate: dd=s:-1;p:0000000000000002\r\n");
}

static void test_inject_b3_exact(void **state)
{
    (void)state;
    dds_config c = cfg2(DDS_STYLE_B3MULTI, DDS_STYLE_B3);
    dds_trace t;
    mktrace(&t, 0, 0xabcULL, 1, DDS_MECH_DEFAULT);
    char buf[DDS_PROPAGATION_INJECT_MAX];
    dds_propagation_inject(&t, 0xdefULL, &c, buf, sizeof buf);
    assert_string_equal(buf, "x-b3-traceid: 0000000000000abc\r\n"
                             "x-b3-spanid: 0000000000000def\r\n"
                             "x-b3-sampled: 1\r\n"
                             "b3: 0000000000000abc-0000000000000def-1\r\n");
    mktrace(&t, 1, 0xabcULL, 2, DDS_MECH_MANUAL);
    dds_propagation_inject(&t, 0xdefULL, &c, buf, sizeof buf);
    assert_string_equal(buf, "x-b3-traceid: 00000000000000010000000000000abc\r\n"
                             "x-b3-spanid: 0000000000000def\r\n"
                             "x-b3-sampled: 1\r\n"
                             "b3: 00000000000000010000000000000abc-0000000000000def-d\r\n");
    mktrace(&t, 0, 0xabcULL, -1, DDS_MECH_RULE);
    dds_propagation_inject(&t, 0xdefULL, &c, buf, sizeof buf);
    assert_string_equal(buf, "x-b3-traceid: 0000000000000abc\r\n"
                             "x-b3-spanid: 0000000000000def\r\n"
                             "x-b3-sampled: 0\r\n"
                             "b3: 0000000000000abc-0000000000000def-0\r\n");
}

static void test_inject_tracestate_trimmed_to_256(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_TRACECONTEXT);
    dds_trace t;
    mktrace(&t, 0, 1, 1, DDS_MECH_DEFAULT);
    char val[41];
    memset(val, 'v', 40);
    val[40] = '\0';
    for (int i = 0; i < 8; i++) {
        char k[16];
        snprintf(k, sizeof k, "_dd.p.k%d", i);
        add_ctx_tag(&TCTX(t), k, val);
    }
    snprintf(TCTX(t).tracestate_other, sizeof TCTX(t).tracestate_other, "foo=bar");
    char buf[DDS_PROPAGATION_INJECT_MAX], ts[1024];
    dds_propagation_inject(&t, 2, &c, buf, sizeof buf);
    assert_non_null(find_line(buf, "tracestate", ts, sizeof ts));
    char *comma = strchr(ts, ',');
    assert_non_null(comma);
    assert_string_equal(comma, ",foo=bar");
    size_t ddlen = (size_t)(comma - ts);
    assert_true(ddlen <= 256);
    /* dd=s:1;p:<16>;t.dm:-0 is 33 chars, then 46-char tags: 4 fit (217). */
    assert_true(ddlen > 200);
    assert_non_null(strstr(ts, ";t.k3:"));
    assert_null(strstr(ts, ";t.k4:"));
    assert_true(ts[ddlen - 1] == 'v');
}

static void test_inject_tracestate_other_members_capped_at_31(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_TRACECONTEXT);
    dds_trace t;
    mktrace(&t, 0, 1, 1, DDS_MECH_DEFAULT);
    size_t len = 0;
    for (int i = 0; i < 40; i++)
        len += (size_t)snprintf(TCTX(t).tracestate_other + len, sizeof TCTX(t).tracestate_other - len,
                                "%sk%d=v", i ? "," : "", i);
    char buf[DDS_PROPAGATION_INJECT_MAX], ts[1024];
    dds_propagation_inject(&t, 2, &c, buf, sizeof buf);
    assert_non_null(find_line(buf, "tracestate", ts, sizeof ts));
    int members = 1;
    for (char *p = ts; *p; p++)
        members += *p == ',';
    assert_int_equal(members, 32);
    assert_non_null(strstr(ts, ",k30=v"));
    assert_null(strstr(ts, ",k31=v"));
}

static void test_inject_max_size(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_DATADOG);
    c.x_datadog_tags_max_length = 20;
    dds_trace t;
    mktrace(&t, 0, 1, 1, DDS_MECH_DEFAULT);
    add_ctx_tag(&TCTX(t), "_dd.p.usr.id", "a-long-enough-value");
    char buf[DDS_PROPAGATION_INJECT_MAX], v[128];
    size_t n = dds_propagation_inject(&t, 2, &c, buf, sizeof buf);
    assert_true(n > 0);
    assert_null(find_line(buf, "x-datadog-tags", v, sizeof v));
    assert_non_null(find_line(buf, "x-datadog-trace-id", v, sizeof v));
    assert_string_equal(TCTX(t).propagation_error, "inject_max_size");

    /* Exactly at the limit is fine. */
    c.x_datadog_tags_max_length = (int)strlen("_dd.p.dm=-0,_dd.p.usr.id=a-long-enough-value");
    TCTX(t).propagation_error[0] = '\0';
    dds_propagation_inject(&t, 2, &c, buf, sizeof buf);
    assert_string_equal(find_line(buf, "x-datadog-tags", v, sizeof v),
                        "_dd.p.dm=-0,_dd.p.usr.id=a-long-enough-value");
    assert_string_equal(TCTX(t).propagation_error, "");

    /* 0 disables the header, without an error. */
    c.x_datadog_tags_max_length = 0;
    dds_propagation_inject(&t, 2, &c, buf, sizeof buf);
    assert_null(find_line(buf, "x-datadog-tags", v, sizeof v));
    assert_string_equal(TCTX(t).propagation_error, "");
}

static size_t tags_512(char *buf);

static void fill_max(dds_trace_context *c)
{
    memset(c->origin, 'o', sizeof c->origin - 1);
    memset(c->dd_unknown, 'u', sizeof c->dd_unknown - 1);
    c->dd_unknown[1] = ':';
    memset(c->tracestate_other, 'x', sizeof c->tracestate_other - 1);
    c->tracestate_other[0] = 'k';
    c->tracestate_other[1] = '=';
}

/* Every field at its largest, every style: must fit in the documented size. */
static void test_inject_worst_case_fits(void **state)
{
    (void)state;
    int styles[4] = {DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT, DDS_STYLE_B3MULTI, DDS_STYLE_B3};
    dds_config c = mkcfg(4, styles);
    c.x_datadog_tags_max_length = 100000;
    dds_trace t;
    mktrace(&t, UINT64_MAX, UINT64_MAX, -2147483647 - 1, DDS_MECH_NONE);
    fill_max(&TCTX(t));
    for (int i = 0; i < DDS_MAX_TRACE_TAGS; i++) {
        snprintf(TCTX(t).tags[i].key, sizeof TCTX(t).tags[i].key, "_dd.p.%057d", i);
        memset(TCTX(t).tags[i].val, 'v', sizeof TCTX(t).tags[i].val - 1);
    }
    TCTX(t).ntags = DDS_MAX_TRACE_TAGS;
    char buf[DDS_PROPAGATION_INJECT_MAX + 1];
    size_t n = dds_propagation_inject(&t, UINT64_MAX, &c, buf, DDS_PROPAGATION_INJECT_MAX);
    assert_true(n > 0 && n < DDS_PROPAGATION_INJECT_MAX);
    dds_hdr h[16];
    parse_lines(buf, n, h, 16);
    /* The tags were too big for x-datadog-tags (hard cap 640). */
    assert_string_equal(TCTX(t).propagation_error, "inject_max_size");

    /* Now the largest x-datadog-tags that extraction can produce. */
    char big[600];
    tags_512(big);
    dds_config dc = cfg1(DDS_STYLE_DATADOG);
    dds_hdr in[] = {H("x-datadog-trace-id", "1"), H("x-datadog-parent-id", "2"), H("x-datadog-tags", big)};
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(in, NH(in), &dc, &x), 1);
    assert_int_equal(x.ntags, 3);
    TCTX(t) = x;
    fill_max(&TCTX(t));
    snprintf(TCTX(t).tags[3].key, sizeof TCTX(t).tags[3].key, "_dd.p.dm");
    snprintf(TCTX(t).tags[3].val, sizeof TCTX(t).tags[3].val, "-1");
    TCTX(t).ntags = 4;
    t.sampling.priority = 2;
    n = dds_propagation_inject(&t, UINT64_MAX, &c, buf, DDS_PROPAGATION_INJECT_MAX);
    assert_true(n > 0 && n < DDS_PROPAGATION_INJECT_MAX);
    char v[1024];
    assert_non_null(find_line(buf, "x-datadog-tags", v, sizeof v));
    assert_string_equal(TCTX(t).propagation_error, "");
}

static void test_inject_does_not_fit(void **state)
{
    (void)state;
    dds_config c = cfg2(DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT);
    dds_trace t;
    mktrace(&t, 0, 1, 1, DDS_MECH_DEFAULT);
    char buf[DDS_PROPAGATION_INJECT_MAX];
    size_t full = dds_propagation_inject(&t, 2, &c, buf, sizeof buf);
    assert_true(full > 0);
    memset(buf, 'Z', sizeof buf);
    assert_int_equal(dds_propagation_inject(&t, 2, &c, buf, full - 1), 0);
    assert_int_equal(buf[0], '\0');
    assert_int_equal(dds_propagation_inject(&t, 2, &c, buf, full), full); /* no room for the NUL: fine */
    assert_int_equal(dds_propagation_inject(&t, 2, &c, buf, 0), 0);
    /* No styles, or no trace id: nothing. */
    dds_config none = mkcfg(0, NULL);
    assert_int_equal(dds_propagation_inject(&t, 2, &none, buf, sizeof buf), 0);
    t.trace_id_lo = 0;
    assert_int_equal(dds_propagation_inject(&t, 2, &c, buf, sizeof buf), 0);
}

/* Hostile context content never reaches the wire. */
static void test_inject_sanitizes_context(void **state)
{
    (void)state;
    dds_config c = cfg2(DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT);
    dds_trace t;
    mktrace(&t, 0, 1, 1, DDS_MECH_DEFAULT);
    snprintf(TCTX(t).origin, sizeof TCTX(t).origin, "evil\r\nX-Injected: 1");
    add_ctx_tag(&TCTX(t), "_dd.p.a", "b\r\nc");
    add_ctx_tag(&TCTX(t), "not.propagated", "x");
    snprintf(TCTX(t).tracestate_other, sizeof TCTX(t).tracestate_other, "a=b\nc");
    snprintf(TCTX(t).dd_unknown, sizeof TCTX(t).dd_unknown, "q:\x01");
    char buf[DDS_PROPAGATION_INJECT_MAX];
    size_t n = dds_propagation_inject(&t, 2, &c, buf, sizeof buf);
    dds_hdr h[16];
    int nh = parse_lines(buf, n, h, 16);
    assert_int_equal(nh, 6); /* no origin; tags with _dd.p.dm only */
    char v[512];
    assert_null(find_line(buf, "x-datadog-origin", v, sizeof v));
    assert_string_equal(find_line(buf, "x-datadog-tags", v, sizeof v), "_dd.p.dm=-0");
    assert_string_equal(find_line(buf, "tracestate", v, sizeof v), "dd=s:1;p:0000000000000002;t.dm:-0");
}

/* ------------------------------------------------------------------------ */
/* traceparent */

static void test_traceparent_valid(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_TRACECONTEXT);
    dds_trace_context x;
    dds_hdr h1[] = {H("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")};
    assert_int_equal(dds_propagation_extract(h1, 1, &c, &x), 1);
    assert_true(x.trace_id_hi == 0x4bf92f3577b34da6ULL && x.trace_id_lo == 0xa3ce929d0e0e4736ULL);
    assert_true(x.parent_id == 0x00f067aa0ba902b7ULL);
    assert_int_equal(x.has_priority, 1);
    assert_int_equal(x.priority, 1);
    assert_string_equal(x.last_parent_id, "0000000000000000");
    assert_string_equal(x.w3c_extraction_error, "");

    const char *ok[] = {
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02-what-the-future-will-be-like",
        "00-00000000000000000000000000000001-0000000000000001-ff",
    };
    const int prio[] = {0, 0, 0, 0, 1};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        dds_hdr h[] = {H("traceparent", ok[i])};
        assert_int_equal(dds_propagation_extract(h, 1, &c, &x), 1);
        assert_int_equal(x.priority, prio[i]);
    }
}

static void test_traceparent_invalid(void **state)
{
    (void)state;
    static const struct {
        const char *v, *err;
    } cases[] = {
        {"", "malformed_traceparent"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", "malformed_traceparent"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", "malformed_traceparent"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-foo", "malformed_traceparent"},
        {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", "malformed_traceparent"},
        {"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "malformed_traceparent"},
        {"000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "malformed_traceparent"},
        {"00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", "malformed_traceparent"},
        {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "invalid_version"},
        {"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "invalid_version"},
        {"0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "invalid_version"},
        {".0-12345678901234567890123456789012-1234567890123456-01", "invalid_version"},
        {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "malformed_traceid"},
        {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "malformed_traceid"},
        {"00-abcdefghijklmnopqrstuvxyzabcdefg-00f067aa0ba902b7-01", "malformed_traceid"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "malformed_parentid"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-abcdefghijklmnop-01", "malformed_parentid"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", "malformed_parentid"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-xy", "malformed_traceflags"},
        {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0F", "malformed_traceflags"},
    };
    dds_config c = cfg1(DDS_STYLE_TRACECONTEXT);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dds_hdr h[] = {H("traceparent", cases[i].v), H("tracestate", "dd=s:2;o:rum,foo=bar")};
        dds_trace_context x;
        assert_int_equal(dds_propagation_extract(h, 2, &c, &x), 0);
        if (strcmp(x.w3c_extraction_error, cases[i].err) != 0)
            fail_msg("traceparent '%s': got '%s', want '%s'", cases[i].v, x.w3c_extraction_error,
                     cases[i].err);
        /* tracestate is not read when traceparent fails. */
        assert_string_equal(x.tracestate_other, "");
        assert_string_equal(x.origin, "");
        assert_int_equal(x.has_priority, 0);
    }
}

/* A bad traceparent does not stop another style; the error is still noted. */
static void test_traceparent_invalid_other_style_wins(void **state)
{
    (void)state;
    dds_config c = cfg2(DDS_STYLE_TRACECONTEXT, DDS_STYLE_DATADOG);
    dds_hdr h[] = {H("traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                   H("x-datadog-trace-id", "7"), H("x-datadog-parent-id", "8")};
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_true(x.trace_id_lo == 7 && x.parent_id == 8);
    assert_string_equal(x.w3c_extraction_error, "invalid_version");
}

/* ------------------------------------------------------------------------ */
/* tracestate */

static int extract_tc(const char *tp, const char *ts, dds_trace_context *x)
{
    dds_config c = cfg1(DDS_STYLE_TRACECONTEXT);
    dds_hdr h[] = {H("traceparent", tp), H("tracestate", ts ? ts : "")};
    return dds_propagation_extract(h, ts ? 2 : 1, &c, x);
}

#define TP1 "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define TP0 "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"

static void test_tracestate_dd_member(void **state)
{
    (void)state;
    dds_trace_context x;
    assert_int_equal(extract_tc(TP1, "foo=1,dd=s:2;p:0123456789abcdef;o:rum~x;t.dm:-4;t.usr.id:a~b;"
                                     "zz:keep;t.tid:4bf92f3577b34da6,bar=2",
                                &x),
                     1);
    assert_int_equal(x.priority, 2);
    assert_string_equal(x.origin, "rum=x");
    assert_string_equal(ctx_tag(&x, "_dd.p.dm"), "-4");
    assert_string_equal(ctx_tag(&x, "_dd.p.usr.id"), "a=b");
    assert_null(ctx_tag(&x, "_dd.p.tid"));
    assert_string_equal(x.last_parent_id, "0123456789abcdef");
    assert_string_equal(x.dd_unknown, "zz:keep");
    assert_string_equal(x.tracestate_other, "foo=1,bar=2");
    assert_string_equal(x.propagation_error, "");
}

static void test_tracestate_priority_reconciliation(void **state)
{
    (void)state;
    static const struct {
        const char *tp, *ts;
        int want;
    } cases[] = {
        {TP1, "dd=s:2", 2},  {TP1, "dd=s:1", 1},  {TP1, "dd=s:-1", 1}, {TP1, "dd=s:0", 1},
        {TP0, "dd=s:-1", -1}, {TP0, "dd=s:0", 0}, {TP0, "dd=s:2", 0},  {TP0, "dd=s:1", 0},
        {TP1, "dd=o:rum", 1}, {TP0, "dd=s:x", 0}, {TP1, NULL, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dds_trace_context x;
        assert_int_equal(extract_tc(cases[i].tp, cases[i].ts, &x), 1);
        assert_int_equal(x.has_priority, 1);
        assert_int_equal(x.priority, cases[i].want);
    }
}

static void test_tracestate_several_headers_and_junk(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_TRACECONTEXT);
    dds_hdr h[] = {H("TraceState", "a=1, ,b=2"), H("traceparent", TP1), H("x-other", "z"),
                   H("tracestate", "Bad=1,c=,=d,e,f=x y,dd=s:2,dd=s:-1,g@h=3,k=v\x01,l=ok")};
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_string_equal(x.tracestate_other, "a=1,b=2,f=x y,g@h=3,l=ok");
    assert_int_equal(x.priority, 2); /* the first dd member */
}

static void test_tracestate_dd_too_long(void **state)
{
    (void)state;
    char ts[800];
    int n = snprintf(ts, sizeof ts, "foo=bar,dd=s:2;o:rum;t.a:");
    memset(ts + n, 'x', 600);
    strcpy(ts + n + 600, ",baz=1");
    dds_trace_context x;
    assert_int_equal(extract_tc(TP0, ts, &x), 1);
    assert_string_equal(x.propagation_error, "extract_max_size");
    assert_int_equal(x.priority, 0);
    assert_string_equal(x.origin, "");
    assert_int_equal(x.ntags, 0);
    assert_string_equal(x.tracestate_other, "foo=bar,baz=1");
    /* 512 exactly is fine. */
    n = snprintf(ts, sizeof ts, "dd=s:2;t.a:");
    memset(ts + n, 'x', 512 - (size_t)(n - 3));
    ts[3 + 512] = '\0';
    assert_int_equal(extract_tc(TP1, ts, &x), 1);
    assert_string_equal(x.propagation_error, "");
    assert_int_equal(x.priority, 2);
}

static void test_tracestate_member_limits(void **state)
{
    (void)state;
    char ts[4096];
    size_t len = 0;
    /* 40 members: 31 kept (the dd member makes 32), from the left. */
    for (int i = 0; i < 40; i++)
        len += (size_t)snprintf(ts + len, sizeof ts - len, "%sk%d=v", i ? "," : "", i);
    dds_trace_context x;
    assert_int_equal(extract_tc(TP1, ts, &x), 1);
    int members = 1;
    for (char *p = x.tracestate_other; *p; p++)
        members += *p == ',';
    assert_int_equal(members, 31);
    assert_true(strncmp(x.tracestate_other, "k0=v,k1=v,", 10) == 0);
    assert_non_null(strstr(x.tracestate_other, ",k30=v"));
    assert_null(strstr(x.tracestate_other, ",k31=v"));

    /* Too many bytes: members over 128 chars go first, then from the right. */
    char longv[200];
    memset(longv, 'L', 150);
    longv[150] = '\0';
    len = (size_t)snprintf(ts, sizeof ts, "a=1,long=%s", longv);
    for (int i = 0; i < 4; i++)
        len += (size_t)snprintf(ts + len, sizeof ts - len, ",m%d=%.100s", i, longv);
    len += (size_t)snprintf(ts + len, sizeof ts - len, ",z=1");
    assert_int_equal(extract_tc(TP1, ts, &x), 1);
    assert_null(strstr(x.tracestate_other, "long="));
    assert_true(strncmp(x.tracestate_other, "a=1,m0=", 7) == 0);
    assert_non_null(strstr(x.tracestate_other, ",m3="));
    assert_non_null(strstr(x.tracestate_other, ",z=1"));
    assert_true(strlen(x.tracestate_other) <= 511);

    /* Still too long without the long ones: cut from the right. */
    len = 0;
    for (int i = 0; i < 6; i++)
        len += (size_t)snprintf(ts + len, sizeof ts - len, "%sm%d=%.100s", i ? "," : "", i, longv);
    assert_int_equal(extract_tc(TP1, ts, &x), 1);
    assert_non_null(strstr(x.tracestate_other, "m3="));
    assert_null(strstr(x.tracestate_other, "m4="));
}

/* ------------------------------------------------------------------------ */
/* x-datadog-tags and _dd.p.tid */

static int extract_dd(const char *tags, dds_trace_context *x)
{
    dds_config c = cfg1(DDS_STYLE_DATADOG);
    dds_hdr h[] = {H("x-datadog-trace-id", "1311768467294899695"), H("x-datadog-parent-id", "2"),
                   H("x-datadog-sampling-priority", "1"), H("x-datadog-tags", tags)};
    return dds_propagation_extract(h, NH(h), &c, x);
}

static void test_xdd_tags_valid(void **state)
{
    (void)state;
    dds_trace_context x;
    assert_int_equal(extract_dd("_dd.p.dm=-4,_dd.p.tid=640cfd8d00000000,other=x,_dd.p.a=b=c,"
                                "_dd.p.upstream_services=q,_dd.p.sp= ace,",
                                &x),
                     1);
    assert_true(x.trace_id_hi == 0x640cfd8d00000000ULL);
    assert_true(x.trace_id_lo == 1311768467294899695ULL);
    assert_int_equal(x.ntags, 3);
    assert_string_equal(ctx_tag(&x, "_dd.p.dm"), "-4");
    assert_string_equal(ctx_tag(&x, "_dd.p.a"), "b=c");
    assert_string_equal(ctx_tag(&x, "_dd.p.sp"), " ace");
    assert_null(ctx_tag(&x, "other"));
    assert_string_equal(x.propagation_error, "");
    assert_int_equal(extract_dd("", &x), 1);
    assert_int_equal(x.ntags, 0);
    assert_string_equal(x.propagation_error, "");
}

/* "_dd.p.tid=640cfd8d00000000" and three 162-char tags: exactly 512 bytes. */
static size_t tags_512(char *buf)
{
    size_t len = (size_t)sprintf(buf, "_dd.p.tid=640cfd8d00000000");
    for (int i = 0; i < 3; i++) {
        len += (size_t)sprintf(buf + len, ",_dd.p.k%d=", i);
        memset(buf + len, 'a', 152);
        len += 152;
    }
    buf[len] = '\0';
    return len;
}

static void test_xdd_tags_too_long(void **state)
{
    (void)state;
    char big[600];
    assert_int_equal(tags_512(big), 512);
    dds_trace_context x;
    assert_int_equal(extract_dd(big, &x), 1);
    assert_string_equal(x.propagation_error, "");
    assert_int_equal(x.ntags, 3);
    assert_true(x.trace_id_hi == 0x640cfd8d00000000ULL);
    strcat(big, "a");
    assert_int_equal(extract_dd(big, &x), 1);
    assert_string_equal(x.propagation_error, "extract_max_size");
    assert_int_equal(x.ntags, 0);
    assert_true(x.trace_id_hi == 0);
}

static void test_xdd_tags_decoding_error(void **state)
{
    (void)state;
    const char *bad[] = {"_dd.p.a", "=b", "_dd.p.a=", "_dd.p.a=1,,_dd.p.b=2", ",", "_dd.p.a=1,x",
                         "_dd.p.a b=1", "_dd.p.a=\x7f", "_dd.p.a=\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dds_trace_context x;
        assert_int_equal(extract_dd(bad[i], &x), 1);
        assert_string_equal(x.propagation_error, "decoding_error");
        assert_int_equal(x.ntags, 0);
    }
    /* A good tid before the error is not used either. */
    dds_trace_context x;
    assert_int_equal(extract_dd("_dd.p.tid=640cfd8d00000000,bad", &x), 1);
    assert_true(x.trace_id_hi == 0);
}

static void test_xdd_tags_malformed_tid(void **state)
{
    (void)state;
    static const struct {
        const char *tags, *err;
    } cases[] = {
        {"_dd.p.tid=640CFD8D00000000", "malformed_tid 640CFD8D00000000"},
        {"_dd.p.tid=640cfd8d0000000", "malformed_tid 640cfd8d0000000"},
        {"_dd.p.tid=640cfd8d000000000", "malformed_tid 640cfd8d000000000"},
        {"_dd.p.tid=0000000000000000", "malformed_tid 0000000000000000"},
        {"_dd.p.tid=xyz,_dd.p.dm=-1", "malformed_tid xyz"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dds_trace_context x;
        assert_int_equal(extract_dd(cases[i].tags, &x), 1);
        assert_string_equal(x.propagation_error, cases[i].err);
        assert_true(x.trace_id_hi == 0);
        assert_null(ctx_tag(&x, "_dd.p.tid"));
    }
}

static void test_inconsistent_tid(void **state)
{
    (void)state;
    /* tracestate t.tid disagrees with traceparent (system-tests' case). */
    dds_trace_context x;
    assert_int_equal(extract_tc("00-640cfd8d00000000abcdefab12345678-000000003ade68b1-01",
                                "dd=t.tid:640cfd8d0000ffff", &x),
                     1);
    assert_true(x.trace_id_hi == 0x640cfd8d00000000ULL);
    assert_string_equal(x.propagation_error, "inconsistent_tid 640cfd8d0000ffff");
    assert_null(ctx_tag(&x, "_dd.p.tid"));
    assert_int_equal(extract_tc("00-640cfd8d00000000abcdefab12345678-000000003ade68b1-01",
                                "dd=t.tid:640cfd8d00000000", &x),
                     1);
    assert_string_equal(x.propagation_error, "");
    assert_int_equal(extract_tc("00-640cfd8d00000000abcdefab12345678-000000003ade68b1-01",
                                "dd=t.tid:XYZ", &x),
                     1);
    assert_string_equal(x.propagation_error, "malformed_tid XYZ");

    /* datadog wins with a _dd.p.tid; traceparent has the same low half but
     * other high bits: not merged, and flagged. */
    dds_config c = cfg2(DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT);
    dds_hdr h[] = {H("x-datadog-trace-id", "12379814468735227512"), /* 0xabcdefab12345678 */
                   H("x-datadog-parent-id", "5"), H("x-datadog-tags", "_dd.p.tid=640cfd8d0000ffff"),
                   H("traceparent", "00-640cfd8d00000000abcdefab12345678-000000003ade68b1-01"),
                   H("tracestate", "foo=bar")};
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_true(x.trace_id_hi == 0x640cfd8d0000ffffULL && x.parent_id == 5);
    assert_string_equal(x.propagation_error, "inconsistent_tid 640cfd8d0000ffff");
    assert_string_equal(x.tracestate_other, "");
}

/* ------------------------------------------------------------------------ */
/* Precedence and merge (§3.7) */

#define DD_ID "12379814468735227512" /* 0xabcdefab12345678 */
#define TP_SAME "00-0000000000000000abcdefab12345678-1111111111111111-01"
#define TP_SAME128 "00-640cfd8d00000000abcdefab12345678-1111111111111111-01"

static void test_merge_same_trace_w3c_parent_and_p(void **state)
{
    (void)state;
    dds_config c = cfg2(DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT);
    dds_hdr h[] = {H("x-datadog-trace-id", DD_ID), H("x-datadog-parent-id", "5"),
                   H("x-datadog-sampling-priority", "2"), H("x-datadog-origin", "synthetics"),
                   H("x-datadog-tags", "_dd.p.dm=-3"), H("traceparent", TP_SAME),
                   H("tracestate", "dd=s:1;p:2222222222222222;o:rum;t.dm:-0;x:y,foo=bar")};
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_true(x.trace_id_lo == 0xabcdefab12345678ULL && x.trace_id_hi == 0);
    assert_true(x.parent_id == 0x1111111111111111ULL);
    assert_string_equal(x.last_parent_id, "2222222222222222");
    /* priority, origin and tags are datadog's; tracestate rides along. */
    assert_int_equal(x.priority, 2);
    assert_string_equal(x.origin, "synthetics");
    assert_string_equal(ctx_tag(&x, "_dd.p.dm"), "-3");
    assert_string_equal(x.tracestate_other, "foo=bar");
    assert_string_equal(x.dd_unknown, "x:y");
}

static void test_merge_same_trace_no_p_uses_datadog_parent(void **state)
{
    (void)state;
    dds_config c = cfg2(DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT);
    dds_hdr h[] = {H("x-datadog-trace-id", DD_ID), H("x-datadog-parent-id", "5"),
                   H("traceparent", TP_SAME), H("tracestate", "dd=s:1;p:0000000000000000")};
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_true(x.parent_id == 0x1111111111111111ULL);
    assert_string_equal(x.last_parent_id, "0000000000000005");

    /* 128-bit: datadog's tid makes the ids equal. */
    dds_hdr h2[] = {H("x-datadog-trace-id", DD_ID), H("x-datadog-parent-id", "5"),
                    H("x-datadog-tags", "_dd.p.tid=640cfd8d00000000"), H("traceparent", TP_SAME128)};
    assert_int_equal(dds_propagation_extract(h2, NH(h2), &c, &x), 1);
    assert_true(x.trace_id_hi == 0x640cfd8d00000000ULL && x.parent_id == 0x1111111111111111ULL);
    assert_string_equal(x.last_parent_id, "0000000000000005");
    assert_string_equal(x.propagation_error, "");

    /* Without the tid, datadog has only 64 bits: a different trace. */
    dds_hdr h3[] = {H("x-datadog-trace-id", DD_ID), H("x-datadog-parent-id", "5"),
                    H("traceparent", TP_SAME128), H("tracestate", "foo=bar")};
    assert_int_equal(dds_propagation_extract(h3, NH(h3), &c, &x), 1);
    assert_true(x.trace_id_hi == 0 && x.parent_id == 5);
    assert_string_equal(x.last_parent_id, "");
    assert_string_equal(x.tracestate_other, "");
}

static void test_merge_same_parent_changes_nothing(void **state)
{
    (void)state;
    dds_config c = cfg2(DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT);
    dds_hdr h[] = {H("x-datadog-trace-id", DD_ID), H("x-datadog-parent-id", "1229782938247303441"),
                   H("traceparent", TP_SAME), H("tracestate", "dd=p:2222222222222222,foo=bar")};
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_true(x.parent_id == 0x1111111111111111ULL);
    assert_string_equal(x.last_parent_id, "");
    assert_string_equal(x.tracestate_other, "foo=bar");
}

static void test_merge_different_trace_ignored(void **state)
{
    (void)state;
    dds_config c = cfg2(DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT);
    dds_hdr h[] = {H("x-datadog-trace-id", "99"), H("x-datadog-parent-id", "5"),
                   H("traceparent", TP_SAME), H("tracestate", "dd=s:2;p:2222222222222222,foo=bar")};
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_true(x.trace_id_lo == 99 && x.parent_id == 5);
    assert_int_equal(x.has_priority, 0);
    assert_string_equal(x.last_parent_id, "");
    assert_string_equal(x.tracestate_other, "");
    assert_string_equal(x.dd_unknown, "");
}

static void test_tracecontext_first_wins(void **state)
{
    (void)state;
    dds_config c = cfg2(DDS_STYLE_TRACECONTEXT, DDS_STYLE_DATADOG);
    dds_hdr h[] = {H("x-datadog-trace-id", DD_ID), H("x-datadog-parent-id", "5"),
                   H("x-datadog-sampling-priority", "2"), H("traceparent", TP_SAME)};
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_true(x.parent_id == 0x1111111111111111ULL);
    assert_int_equal(x.priority, 1);
    assert_string_equal(x.last_parent_id, "0000000000000000");

    /* datadog first but absent: tracecontext wins. */
    dds_config c2 = cfg2(DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT);
    dds_hdr h2[] = {H("x-datadog-parent-id", "5"), H("traceparent", TP_SAME)};
    assert_int_equal(dds_propagation_extract(h2, NH(h2), &c2, &x), 1);
    assert_true(x.parent_id == 0x1111111111111111ULL);
    /* ... and a datadog trace id that does not parse counts as absent. */
    dds_hdr h3[] = {H("x-datadog-trace-id", "12x"), H("x-datadog-parent-id", "5"),
                    H("traceparent", TP_SAME)};
    assert_int_equal(dds_propagation_extract(h3, NH(h3), &c2, &x), 1);
    assert_true(x.parent_id == 0x1111111111111111ULL);
}

static void test_extract_first(void **state)
{
    (void)state;
    dds_config c = cfg2(DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT);
    c.extract_first = 1;
    dds_hdr h[] = {H("x-datadog-trace-id", DD_ID), H("x-datadog-parent-id", "5"),
                   H("traceparent", TP_SAME), H("tracestate", "dd=p:2222222222222222,foo=bar")};
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_true(x.parent_id == 5);
    assert_string_equal(x.last_parent_id, "");
    assert_string_equal(x.tracestate_other, "");
    /* The first style that yields: datadog absent → tracecontext. */
    dds_hdr h2[] = {H("traceparent", TP_SAME)};
    assert_int_equal(dds_propagation_extract(h2, 1, &c, &x), 1);
    assert_true(x.parent_id == 0x1111111111111111ULL);
}

static void test_merge_b3_then_tracecontext(void **state)
{
    (void)state;
    int s[3] = {DDS_STYLE_B3MULTI, DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT};
    dds_config c = mkcfg(3, s);
    dds_hdr h[] = {H("x-b3-traceid", "abcdefab12345678"), H("x-b3-spanid", "0000000000000003"),
                   H("x-b3-sampled", "1"), H("x-datadog-trace-id", DD_ID),
                   H("x-datadog-parent-id", "5"), H("traceparent", TP_SAME),
                   H("tracestate", "foo=bar")};
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_true(x.parent_id == 0x1111111111111111ULL);
    assert_string_equal(x.last_parent_id, "0000000000000005");
    assert_string_equal(x.tracestate_other, "foo=bar");
    assert_int_equal(x.priority, 1);
}

/* ------------------------------------------------------------------------ */
/* Missing ids, behaviours, names */

static void test_datadog_missing_ids(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_DATADOG);
    dds_trace_context x;
    dds_hdr only_trace[] = {H("x-datadog-trace-id", "10")};
    assert_int_equal(dds_propagation_extract(only_trace, 1, &c, &x), 0);
    dds_hdr with_origin[] = {H("x-datadog-trace-id", "10"), H("x-datadog-origin", "synthetics"),
                             H("x-datadog-sampling-priority", "1")};
    assert_int_equal(dds_propagation_extract(with_origin, 3, &c, &x), 1);
    assert_true(x.trace_id_lo == 10 && x.parent_id == 0);
    assert_string_equal(x.origin, "synthetics");
    dds_hdr only_parent[] = {H("x-datadog-parent-id", "10")};
    assert_int_equal(dds_propagation_extract(only_parent, 1, &c, &x), 0);
    dds_hdr zero[] = {H("x-datadog-trace-id", "0"), H("x-datadog-parent-id", "10")};
    assert_int_equal(dds_propagation_extract(zero, 2, &c, &x), 0);
    dds_hdr parent0[] = {H("x-datadog-trace-id", "10"), H("x-datadog-parent-id", "0")};
    assert_int_equal(dds_propagation_extract(parent0, 2, &c, &x), 1);
    assert_true(x.parent_id == 0);
    const char *bad[] = {"-1", "+1", "18446744073709551616", "1 2", "0x10", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dds_hdr h[] = {H("x-datadog-trace-id", bad[i]), H("x-datadog-parent-id", "10")};
        assert_int_equal(dds_propagation_extract(h, 2, &c, &x), 0);
    }
    dds_hdr max[] = {H("x-datadog-trace-id", "18446744073709551615"), H("x-datadog-parent-id", " 10 "),
                     H("x-datadog-sampling-priority", "x")};
    assert_int_equal(dds_propagation_extract(max, 3, &c, &x), 1);
    assert_true(x.trace_id_lo == UINT64_MAX && x.parent_id == 10);
    assert_int_equal(x.has_priority, 0);
    /* A bad parent id spoils the style. */
    dds_hdr badparent[] = {H("x-datadog-trace-id", "10"), H("x-datadog-parent-id", "z"),
                           H("x-datadog-origin", "synthetics")};
    assert_int_equal(dds_propagation_extract(badparent, 3, &c, &x), 0);
    /* An origin that is not printable or too long is ignored. */
    char longo[100];
    memset(longo, 'o', 99);
    longo[99] = '\0';
    dds_hdr o1[] = {H("x-datadog-trace-id", "10"), H("x-datadog-parent-id", "1"), H("x-datadog-origin", longo)};
    assert_int_equal(dds_propagation_extract(o1, 3, &c, &x), 1);
    assert_string_equal(x.origin, "");
    dds_hdr o2[] = {H("x-datadog-trace-id", "10"), H("x-datadog-parent-id", "1"),
                    H("x-datadog-origin", "a\x01")};
    assert_int_equal(dds_propagation_extract(o2, 3, &c, &x), 1);
    assert_string_equal(x.origin, "");
}

static void test_behaviour_restart_ignore(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_DATADOG);
    dds_hdr h[] = {H("x-datadog-trace-id", "10"), H("x-datadog-parent-id", "1"),
                   H("x-datadog-tags", "bad")};
    dds_trace_context x;
    c.extract_behavior = DDS_EXTRACT_RESTART;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 0);
    assert_string_equal(x.propagation_error, "");
    assert_true(x.trace_id_lo == 0);
    c.extract_behavior = DDS_EXTRACT_IGNORE;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 0);
    c.extract_behavior = DDS_EXTRACT_CONTINUE;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_string_equal(x.propagation_error, "decoding_error");
    dds_config none = mkcfg(0, NULL);
    assert_int_equal(dds_propagation_extract(h, NH(h), &none, &x), 0);
    assert_int_equal(dds_propagation_extract(NULL, 0, &c, &x), 0);
    assert_int_equal(dds_propagation_extract(h, -1, &c, &x), 0);
}

static void test_case_insensitive_names(void **state)
{
    (void)state;
    int s[3] = {DDS_STYLE_B3MULTI, DDS_STYLE_DATADOG, DDS_STYLE_TRACECONTEXT};
    dds_config c = mkcfg(3, s);
    dds_hdr h[] = {H("X-Datadog-Trace-Id", "10"), H("X-DATADOG-PARENT-ID", "1"),
                   H("x-Datadog-Sampling-Priority", "2"), H("X-Datadog-Origin", "rum"),
                   H("X-Datadog-Tags", "_dd.p.dm=-4"), H("TraceParent", TP_SAME),
                   H("TRACESTATE", "foo=bar")};
    dds_trace_context x;
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_true(x.trace_id_lo == 10 && x.parent_id == 1);
    assert_int_equal(x.priority, 2);
    assert_string_equal(x.origin, "rum");
    assert_string_equal(ctx_tag(&x, "_dd.p.dm"), "-4");
    dds_hdr b[] = {H("X-B3-TraceId", "ABC"), H("X-B3-SpanId", "DEF"), H("X-B3-Sampled", "0")};
    assert_int_equal(dds_propagation_extract(b, NH(b), &c, &x), 1);
    assert_true(x.trace_id_lo == 0xabc && x.parent_id == 0xdef);
    assert_int_equal(x.priority, 0);
    /* Near misses are not matches. */
    dds_hdr m[] = {H("x-datadog-trace-id2", "10"), H("x-datadog-trace-i", "10"), H("x-datadog-parent-id", "1")};
    assert_int_equal(dds_propagation_extract(m, NH(m), &c, &x), 0);
}

static void test_b3_single(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_B3);
    dds_trace_context x;
    dds_hdr one[] = {H("b3", "1")};
    assert_int_equal(dds_propagation_extract(one, 1, &c, &x), 0);
    dds_hdr one_d[] = {H("b3", "d")};
    assert_int_equal(dds_propagation_extract(one_d, 1, &c, &x), 0);
    dds_hdr two[] = {H("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1")};
    assert_int_equal(dds_propagation_extract(two, 1, &c, &x), 1);
    assert_true(x.trace_id_hi == 0x80f198ee56343ba8ULL && x.trace_id_lo == 0x64fe8b2a57d3eff7ULL);
    assert_true(x.parent_id == 0xe457b5a2e4d86bd1ULL);
    assert_int_equal(x.has_priority, 0);
    const char *states[] = {"0", "1", "d", "x"};
    const int want[] = {0, 1, 2, -99};
    for (int i = 0; i < 4; i++) {
        char v[128];
        snprintf(v, sizeof v, "64fe8b2a57d3eff7-e457b5a2e4d86bd1-%s", states[i]);
        dds_hdr three[] = {H("b3", v)};
        assert_int_equal(dds_propagation_extract(three, 1, &c, &x), 1);
        assert_true(x.trace_id_hi == 0 && x.trace_id_lo == 0x64fe8b2a57d3eff7ULL);
        if (want[i] == -99) {
            assert_int_equal(x.has_priority, 0);
        } else {
            assert_int_equal(x.has_priority, 1);
            assert_int_equal(x.priority, want[i]);
        }
    }
    dds_hdr four[] = {H("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")};
    assert_int_equal(dds_propagation_extract(four, 1, &c, &x), 1);
    assert_true(x.parent_id == 0xe457b5a2e4d86bd1ULL);
    assert_int_equal(x.priority, 1);
    const char *bad[] = {"", "-", "x-y", "0-1", "0000000000000000-e457b5a2e4d86bd1",
                         "80f198ee56343ba864fe8b2a57d3eff7a-e457b5a2e4d86bd1",
                         "64fe8b2a57d3eff7-e457b5a2e4d86bd11", "64fe8b2a57d3eff7-"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dds_hdr h[] = {H("b3", bad[i])};
        assert_int_equal(dds_propagation_extract(h, 1, &c, &x), 0);
    }
}

static void test_b3_multi(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_B3MULTI);
    dds_trace_context x;
    dds_hdr h[] = {H("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"), H("x-b3-spanid", "e457b5a2e4d86bd1"),
                   H("x-b3-sampled", "true"), H("x-b3-flags", "1")};
    assert_int_equal(dds_propagation_extract(h, NH(h), &c, &x), 1);
    assert_true(x.trace_id_hi == 0x80f198ee56343ba8ULL && x.trace_id_lo == 0x64fe8b2a57d3eff7ULL);
    assert_int_equal(x.priority, 2);
    assert_int_equal(dds_propagation_extract(h, 3, &c, &x), 1);
    assert_int_equal(x.priority, 1);
    assert_int_equal(dds_propagation_extract(h, 2, &c, &x), 1);
    assert_int_equal(x.has_priority, 0);
    /* No span id: only with... b3 has no origin, so nothing. */
    assert_int_equal(dds_propagation_extract(h, 1, &c, &x), 0);
    dds_hdr bad[] = {H("x-b3-traceid", "zz"), H("x-b3-spanid", "1")};
    assert_int_equal(dds_propagation_extract(bad, 2, &c, &x), 0);
}

/* "b3" alone: dd-trace-js 5 (Node.js < 22), cpp, Go and Java read it as the
 * x-b3-* headers, py/js 6 as the single header. ddshim writes both and reads
 * either, so "b3" interoperates with all of them. */
static void test_b3_both_forms(void **state)
{
    (void)state;
    dds_config c = cfg1(DDS_STYLE_B3);
    dds_trace t;
    mktrace(&t, 0x6b03819800000000ULL, 0xabcULL, 2, DDS_MECH_RULE);
    char buf[DDS_PROPAGATION_INJECT_MAX];
    size_t n = dds_propagation_inject(&t, 0xdefULL, &c, buf, sizeof buf);
    const char *want = "b3: 6b038198000000000000000000000abc-0000000000000def-d\r\n"
                       "x-b3-traceid: 6b038198000000000000000000000abc\r\n"
                       "x-b3-spanid: 0000000000000def\r\n"
                       "x-b3-sampled: 1\r\n";
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));

    /* What dd-trace-js 5 sends with DD_TRACE_PROPAGATION_STYLE=b3. */
    dds_trace_context x;
    dds_hdr js5[] = {H("x-b3-traceid", "6b038198000000000000000000000abc"),
                     H("x-b3-spanid", "0000000000000def"), H("x-b3-sampled", "0"),
                     H("x-b3-parentspanid", "0000000000000001")};
    assert_int_equal(dds_propagation_extract(js5, NH(js5), &c, &x), 1);
    assert_true(x.trace_id_hi == 0x6b03819800000000ULL && x.trace_id_lo == 0xabcULL);
    assert_true(x.parent_id == 0xdefULL);
    assert_int_equal(x.has_priority, 1);
    assert_int_equal(x.priority, 0);
    /* Both present: the single header wins. */
    dds_hdr both[] = {H("x-b3-traceid", "0000000000000001"), H("x-b3-spanid", "0000000000000002"),
                      H("b3", "0000000000000003-0000000000000004-1")};
    assert_int_equal(dds_propagation_extract(both, NH(both), &c, &x), 1);
    assert_true(x.trace_id_lo == 3 && x.parent_id == 4 && x.priority == 1);
    /* A broken single header falls back to the multi headers. */
    both[2] = H("b3", "zz-0000000000000004-1");
    assert_int_equal(dds_propagation_extract(both, NH(both), &c, &x), 1);
    assert_true(x.trace_id_lo == 1 && x.parent_id == 2 && x.has_priority == 0);

    /* With b3multi also configured the x-b3-* lines are written once. */
    int s[2] = {DDS_STYLE_B3, DDS_STYLE_B3MULTI};
    dds_config c2 = mkcfg(2, s);
    mktrace(&t, 0, 0xabcULL, 1, DDS_MECH_DEFAULT);
    dds_propagation_inject(&t, 0xdefULL, &c2, buf, sizeof buf);
    assert_string_equal(buf, "b3: 0000000000000abc-0000000000000def-1\r\n"
                             "x-b3-traceid: 0000000000000abc\r\n"
                             "x-b3-spanid: 0000000000000def\r\n"
                             "x-b3-sampled: 1\r\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b3_both_forms),
        cmocka_unit_test(test_roundtrip_every_style),
        cmocka_unit_test(test_roundtrip_all_styles_at_once),
        cmocka_unit_test(test_inject_datadog_exact),
        cmocka_unit_test(test_inject_datadog_decimal_ids),
        cmocka_unit_test(test_inject_tracecontext_exact),
        cmocka_unit_test(test_inject_b3_exact),
        cmocka_unit_test(test_inject_tracestate_trimmed_to_256),
        cmocka_unit_test(test_inject_tracestate_other_members_capped_at_31),
        cmocka_unit_test(test_inject_max_size),
        cmocka_unit_test(test_inject_worst_case_fits),
        cmocka_unit_test(test_inject_does_not_fit),
        cmocka_unit_test(test_inject_sanitizes_context),
        cmocka_unit_test(test_traceparent_valid),
        cmocka_unit_test(test_traceparent_invalid),
        cmocka_unit_test(test_traceparent_invalid_other_style_wins),
        cmocka_unit_test(test_tracestate_dd_member),
        cmocka_unit_test(test_tracestate_priority_reconciliation),
        cmocka_unit_test(test_tracestate_several_headers_and_junk),
        cmocka_unit_test(test_tracestate_dd_too_long),
        cmocka_unit_test(test_tracestate_member_limits),
        cmocka_unit_test(test_xdd_tags_valid),
        cmocka_unit_test(test_xdd_tags_too_long),
        cmocka_unit_test(test_xdd_tags_decoding_error),
        cmocka_unit_test(test_xdd_tags_malformed_tid),
        cmocka_unit_test(test_inconsistent_tid),
        cmocka_unit_test(test_merge_same_trace_w3c_parent_and_p),
        cmocka_unit_test(test_merge_same_trace_no_p_uses_datadog_parent),
        cmocka_unit_test(test_merge_same_parent_changes_nothing),
        cmocka_unit_test(test_merge_different_trace_ignored),
        cmocka_unit_test(test_tracecontext_first_wins),
        cmocka_unit_test(test_extract_first),
        cmocka_unit_test(test_merge_b3_then_tracecontext),
        cmocka_unit_test(test_datadog_missing_ids),
        cmocka_unit_test(test_behaviour_restart_ignore),
        cmocka_unit_test(test_case_insensitive_names),
        cmocka_unit_test(test_b3_single),
        cmocka_unit_test(test_b3_multi),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
