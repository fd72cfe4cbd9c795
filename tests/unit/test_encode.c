/* Unit tests for core/encode.c: every payload is decoded back with msgpack-c
 * and compared field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "encode.h"
#include "span.h"
#include "tagset.h"

#define RUNTIME_ID "0b7e1c6a-3f9d-4c2e-9a51-7d2f0c9e4b13"
#define PID 4242

static dds_trace *finished_chunk;
static void capture(dds_trace *t) { finished_chunk = t; }

static dds_kv tags[] = {
    {(char *)"team", (char *)"core"},
    {(char *)"region", (char *)"eu"},
    {(char *)"env", (char *)"from-dd-tags"}, /* DD_ENV wins */
};

static dds_config cfg = {
    .enabled = 1,
    .service = (char *)"checkout",
    .env = (char *)"prod",
    .version = (char *)"1.2.3",
    .ntags = 3,
    .tags = tags,
};

static dds_encode_opts opts = {.cfg = &cfg, .runtime_id = RUNTIME_ID, .pid = PID};

static int setup(void **state)
{
    (void)state;
    dds_trace_complete_hook = capture;
    finished_chunk = NULL;
    return 0;
}

/* ---- decoding helpers -------------------------------------------------- */

typedef struct decoded {
    msgpack_unpacked up;
    const msgpack_object *root;
} decoded;

static void decode(decoded *d, const msgpack_sbuffer *sb)
{
    size_t off = 0;
    msgpack_unpacked_init(&d->up);
    assert_int_equal(msgpack_unpack_next(&d->up, sb->data, sb->size, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, sb->size);
    d->root = &d->up.data;
    assert_int_equal(d->root->type, MSGPACK_OBJECT_ARRAY);
}

static const msgpack_object *get(const msgpack_object *map, const char *key)
{
    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        assert_int_equal(k->type, MSGPACK_OBJECT_STR);
        if (k->via.str.size == strlen(key) && memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static const msgpack_object *span_at(const decoded *d, uint32_t chunk, uint32_t i)
{
    assert_true(chunk < d->root->via.array.size);
    const msgpack_object *c = &d->root->via.array.ptr[chunk];
    assert_int_equal(c->type, MSGPACK_OBJECT_ARRAY);
    assert_true(i < c->via.array.size);
    return &c->via.array.ptr[i];
}

static void assert_str(const msgpack_object *o, const char *want)
{
    assert_non_null(o);
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    char *got = strndup(o->via.str.ptr, o->via.str.size);
    assert_string_equal(got, want);
    free(got);
}

static const char *meta_of(const msgpack_object *span, const char *key, char *buf, size_t cap)
{
    const msgpack_object *v = get(get(span, "meta"), key);
    if (v == NULL)
        return NULL;
    assert_int_equal(v->type, MSGPACK_OBJECT_STR);
    assert_true(v->via.str.size < cap);
    memcpy(buf, v->via.str.ptr, v->via.str.size);
    buf[v->via.str.size] = '\0';
    return buf;
}

static void assert_meta(const msgpack_object *span, const char *key, const char *want)
{
    char buf[256];
    const char *got = meta_of(span, key, buf, sizeof buf);
    if (want == NULL) {
        if (got)
            fail_msg("meta %s = \"%s\", expected none", key, got);
        return;
    }
    if (got == NULL)
        fail_msg("meta %s missing, expected \"%s\"", key, want);
    assert_string_equal(got, want);
}

static void assert_metric(const msgpack_object *span, const char *key, double want)
{
    const msgpack_object *v = get(get(span, "metrics"), key);
    if (isnan(want)) {
        assert_null(v);
        return;
    }
    if (v == NULL)
        fail_msg("metric %s missing", key);
    assert_int_equal(v->type, MSGPACK_OBJECT_FLOAT64);
    assert_true(v->via.f64 == want);
}

static int utf8_ok(const char *s, size_t n) { return dds_utf8_valid_prefix(s, n) == n; }

/* No bin anywhere and every str valid UTF-8, recursively. */
static void assert_clean(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_BIN:
    case MSGPACK_OBJECT_EXT:
        fail_msg("bin/ext in the payload");
        break;
    case MSGPACK_OBJECT_STR:
        assert_true(utf8_ok(o->via.str.ptr, o->via.str.size));
        break;
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            assert_clean(&o->via.array.ptr[i]);
        break;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            assert_int_equal(o->via.map.ptr[i].key.type, MSGPACK_OBJECT_STR);
            assert_clean(&o->via.map.ptr[i].key);
            assert_clean(&o->via.map.ptr[i].val);
        }
        break;
    default:
        break;
    }
}

/* The 12 keys, their wire types, on every span. */
static void assert_span_shape(const msgpack_object *s)
{
    static const char *const strs[] = {"service", "name", "resource", "type"};
    static const char *const uints[] = {"trace_id", "span_id", "parent_id"};
    static const char *const ints[] = {"start", "duration", "error"};
    assert_int_equal(s->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(s->via.map.size, 12);
    for (int i = 0; i < 4; i++)
        assert_int_equal(get(s, strs[i])->type, MSGPACK_OBJECT_STR);
    for (int i = 0; i < 3; i++)
        assert_int_equal(get(s, uints[i])->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    for (int i = 0; i < 3; i++) {
        const msgpack_object *v = get(s, ints[i]);
        assert_true(v->type == MSGPACK_OBJECT_POSITIVE_INTEGER || v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER);
    }
    assert_int_equal(get(s, "meta")->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(get(s, "metrics")->type, MSGPACK_OBJECT_MAP);
    assert_clean(s);
}

/* ---- chunks ------------------------------------------------------------- */

static dds_trace *finish_root(dds_span *root)
{
    finished_chunk = NULL;
    dds_span_finish(root);
    assert_non_null(finished_chunk);
    return finished_chunk;
}

static void set_tag(dds_trace *t, const char *k, const char *v)
{
    dds_trace_context *c = dds_trace_ctx_mut(t);
    dds_trace_tag *tg = &c->tags[c->ntags++];
    snprintf(tg->key, sizeof tg->key, "%s", k);
    snprintf(tg->val, sizeof tg->val, "%s", v);
}

static void free_list(dds_trace *t)
{
    while (t) {
        dds_trace *n = t->qnext;
        dds_trace_free(t);
        t = n;
    }
}

/* Encode one chunk (alone in its payload) and decode it back. */
static void encode_decode(const dds_trace *t, msgpack_sbuffer *sb, decoded *d)
{
    dds_encode_result r;
    msgpack_sbuffer_init(sb);
    assert_int_equal(dds_encode_traces(sb, t, &opts, &r), 0);
    assert_int_equal(r.traces, 1);
    decode(d, sb);
}

static void test_chunk_fields_and_tags(void **state)
{
    (void)state;
    dds_span *root = dds_span_start("http.server.request", "web", NULL, NULL);
    dds_span_set_resource(root, "GET /users/?");
    dds_span_set_meta(root, "http.method", "GET");
    dds_span_set_meta(root, "http.status_code", "200");
    dds_span_set_meta(root, "region", "us"); /* the span's own beats DD_TAGS */
    dds_span_set_meta(root, "language", "rust"); /* reserved: ours wins */
    dds_span_set_metric(root, "_sampling_priority_v1", 99); /* reserved too */
    dds_span_set_metric(root, "http.body_bytes", 512);
    dds_span *child = dds_span_start("postgresql.query", "sql", root, NULL);
    dds_span_set_error(child, "relation \"x\" does not exist\n");
    dds_span_set_metric(child, "db.row_count", 3);
    dds_span_set_metric(child, "bad", NAN);
    dds_span_finish(child);
    dds_trace *t = finish_root(root);

    t->trace_id_hi = 0x6553f0ab00000000ULL;
    t->sampling = (dds_sampling){.decided = 1, .priority = 2, .mechanism = DDS_MECH_RULE,
                                 .rule_psr = 0.5, .agent_psr = -1, .limit_psr = 0.75, .ksr = 0.5};
    dds_trace_context *c = dds_trace_ctx_mut(t);
    snprintf(c->origin, sizeof c->origin, "synthetics");
    set_tag(t, "_dd.p.usr.id", "dXNlcg==");
    set_tag(t, "_dd.p.dm", "-4"); /* a local decision replaces the extracted one */
    snprintf(c->last_parent_id, sizeof c->last_parent_id, "00f067aa0ba902b7");
    snprintf(c->propagation_error, sizeof c->propagation_error, "inject_max_size");
    snprintf(c->w3c_extraction_error, sizeof c->w3c_extraction_error, "malformed_traceparent");

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dds_encode_result r;
    assert_int_equal(dds_encode_traces(&sb, t, &opts, &r), 0);
    assert_int_equal(r.consumed, 1);
    assert_int_equal(r.traces, 1);
    assert_int_equal(r.spans, 2);
    assert_int_equal(r.dropped_spans, 0);

    decoded d;
    decode(&d, &sb);
    assert_int_equal(d.root->via.array.size, 1);
    assert_int_equal(d.root->via.array.ptr[0].via.array.size, 2);
    const msgpack_object *s0 = span_at(&d, 0, 0), *s1 = span_at(&d, 0, 1);
    assert_span_shape(s0);
    assert_span_shape(s1);

    /* Fields. */
    assert_str(get(s0, "service"), "checkout");
    assert_str(get(s0, "name"), "http.server.request");
    assert_str(get(s0, "resource"), "GET /users/?");
    assert_str(get(s0, "type"), "web");
    assert_true(get(s0, "trace_id")->via.u64 == t->trace_id_lo);
    assert_true(get(s0, "span_id")->via.u64 == root->span_id);
    assert_true(get(s0, "parent_id")->via.u64 == 0);
    assert_true((int64_t)get(s0, "start")->via.u64 == root->start_ns);
    assert_true((int64_t)get(s0, "duration")->via.u64 == root->duration_ns);
    assert_true(get(s0, "error")->via.u64 == 0);
    assert_str(get(s1, "service"), "checkout");
    assert_str(get(s1, "name"), "postgresql.query");
    assert_str(get(s1, "resource"), "postgresql.query"); /* no resource: the name */
    assert_str(get(s1, "type"), "sql");
    assert_true(get(s1, "trace_id")->via.u64 == t->trace_id_lo);
    assert_true(get(s1, "parent_id")->via.u64 == root->span_id);
    assert_true(get(s1, "span_id")->via.u64 == child->span_id);
    assert_true(get(s1, "error")->via.u64 == 1);

    /* Tags common to every span. */
    const msgpack_object *both[2] = {s0, s1};
    for (int i = 0; i < 2; i++) {
        assert_meta(both[i], "language", "cpp");
        assert_meta(both[i], "runtime-id", RUNTIME_ID);
        assert_meta(both[i], "env", "prod");
        assert_meta(both[i], "version", "1.2.3");
        assert_meta(both[i], "team", "core");
        assert_meta(both[i], "_dd.origin", "synthetics");
        assert_metric(both[i], "process_id", PID);
    }
    assert_meta(s0, "region", "us");
    assert_meta(s1, "region", "eu");
    assert_meta(s0, "http.method", "GET");
    assert_meta(s0, "http.status_code", "200");
    assert_meta(s1, "error.message", "relation \"x\" does not exist");
    assert_metric(s0, "http.body_bytes", 512);
    assert_metric(s1, "db.row_count", 3);
    assert_metric(s1, "bad", NAN);

    /* Root only. */
    assert_metric(s0, "_sampling_priority_v1", 2);
    assert_metric(s0, "_dd.rule_psr", 0.5);
    assert_metric(s0, "_dd.limit_psr", 0.75);
    assert_metric(s0, "_dd.agent_psr", NAN);
    assert_meta(s0, "_dd.p.dm", "-3");
    assert_meta(s0, "_dd.p.tid", "6553f0ab00000000");
    assert_meta(s0, "_dd.p.ksr", "0.5");
    assert_meta(s0, "_dd.p.usr.id", "dXNlcg==");
    assert_meta(s0, "_dd.parent_id", "00f067aa0ba902b7");
    assert_meta(s0, "_dd.propagation_error", "inject_max_size");
    assert_meta(s0, "_dd.w3c_extraction_error", "malformed_traceparent");
    static const char *const root_only[] = {"_dd.p.dm", "_dd.p.tid", "_dd.p.ksr", "_dd.p.usr.id",
                                            "_dd.parent_id", "_dd.propagation_error",
                                            "_dd.w3c_extraction_error"};
    for (size_t i = 0; i < sizeof root_only / sizeof *root_only; i++)
        assert_meta(s1, root_only[i], NULL);
    assert_metric(s1, "_sampling_priority_v1", NAN);
    assert_metric(s1, "_dd.rule_psr", NAN);
    /* Exactly what we expect, nothing duplicated: 16 meta on the root. */
    assert_int_equal(get(s0, "meta")->via.map.size, 16);
    assert_int_equal(get(s0, "metrics")->via.map.size, 5);
    assert_int_equal(get(s1, "meta")->via.map.size, 8);
    assert_int_equal(get(s1, "metrics")->via.map.size, 2);

    msgpack_unpacked_destroy(&d.up);
    msgpack_sbuffer_destroy(&sb);
    dds_trace_free(t);
}

static dds_trace *one_span_chunk(void)
{
    return finish_root(dds_span_start("redis.command", "redis", NULL, NULL));
}

static void test_decision_maker_rules(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dds_encode_result r;
    decoded d;

    /* Dropped locally: no _dd.p.dm, not even the extracted one; no tid, no ksr. */
    dds_trace *t = one_span_chunk();
    t->trace_id_hi = 0;
    t->sampling = (dds_sampling){.decided = 1, .priority = 0, .mechanism = DDS_MECH_AGENT_RATE,
                                 .agent_psr = 0.25, .rule_psr = -1, .limit_psr = -1, .ksr = -1};
    set_tag(t, "_dd.p.dm", "-1");
    assert_int_equal(dds_encode_traces(&sb, t, &opts, &r), 0);
    decode(&d, &sb);
    const msgpack_object *s = span_at(&d, 0, 0);
    assert_meta(s, "_dd.p.dm", NULL);
    assert_meta(s, "_dd.p.tid", NULL);
    assert_meta(s, "_dd.p.ksr", NULL);
    assert_metric(s, "_sampling_priority_v1", 0);
    assert_metric(s, "_dd.agent_psr", 0.25);
    msgpack_unpacked_destroy(&d.up);
    dds_trace_free(t);

    /* Extracted keep: the incoming decision maker travels on. */
    t = one_span_chunk();
    t->sampling = (dds_sampling){.decided = 1, .priority = 2, .mechanism = DDS_MECH_NONE,
                                 .agent_psr = -1, .rule_psr = -1, .limit_psr = -1, .ksr = -1};
    set_tag(t, "_dd.p.dm", "-4");
    assert_int_equal(dds_encode_traces(&sb, t, &opts, &r), 0);
    decode(&d, &sb);
    s = span_at(&d, 0, 0);
    assert_meta(s, "_dd.p.dm", "-4");
    assert_metric(s, "_sampling_priority_v1", 2);
    msgpack_unpacked_destroy(&d.up);
    dds_trace_free(t);

    /* Default mechanism. */
    t = one_span_chunk();
    t->sampling = (dds_sampling){.decided = 1, .priority = 1, .mechanism = DDS_MECH_DEFAULT,
                                 .agent_psr = 1, .rule_psr = -1, .limit_psr = -1, .ksr = -1};
    assert_int_equal(dds_encode_traces(&sb, t, &opts, &r), 0);
    decode(&d, &sb);
    s = span_at(&d, 0, 0);
    assert_meta(s, "_dd.p.dm", "-0");
    assert_metric(s, "_dd.agent_psr", 1);
    assert_meta(s, "_dd.origin", NULL);
    msgpack_unpacked_destroy(&d.up);
    dds_trace_free(t);
    msgpack_sbuffer_destroy(&sb);
}

/* A child that outlives its local root (the server answered, then the call it
 * made returned) finishes last, yet the trace-level tags belong on the local
 * root, and the root comes first in its chunk (the agent and the local agent
 * read the chunk's decision there). */
static void test_local_root_first_even_when_it_finished_first(void **state)
{
    (void)state;
    dds_span *root = dds_span_start("http.server.request", "web", NULL, NULL);
    dds_span *child = dds_span_start("http.client.request", "http", root, NULL);
    dds_span *grandchild = dds_span_start("redis.command", "redis", child, NULL);
    finished_chunk = NULL;
    dds_span_finish(grandchild);
    dds_span_finish(root);
    assert_null(finished_chunk);
    dds_span_finish(child);
    dds_trace *t = finished_chunk;
    assert_non_null(t);
    assert_int_equal(t->nfinished, 3);
    /* Whatever order core/span.c keeps, the encoder must find the root: put
     * it last in the list. */
    dds_span *others[2];
    int k = 0;
    for (dds_span *s = t->finished; s != NULL; s = s->next)
        if (s != root)
            others[k++] = s;
    assert_int_equal(k, 2);
    t->finished = others[0];
    others[0]->next = others[1];
    others[1]->next = root;
    root->next = NULL;
    t->finished_tail = root;
    t->trace_id_hi = 0x6553f0ab00000000ULL;
    t->sampling = (dds_sampling){.decided = 1, .priority = 2, .mechanism = DDS_MECH_RULE,
                                 .rule_psr = 1, .agent_psr = -1, .limit_psr = 1, .ksr = 1};

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dds_encode_result r;
    assert_int_equal(dds_encode_traces(&sb, t, &opts, &r), 0);
    assert_int_equal(r.spans, 3);
    decoded d;
    decode(&d, &sb);
    assert_int_equal(d.root->via.array.ptr[0].via.array.size, 3);
    const msgpack_object *s0 = span_at(&d, 0, 0);
    assert_true(get(s0, "span_id")->via.u64 == root->span_id);
    assert_metric(s0, "_sampling_priority_v1", 2);
    assert_meta(s0, "_dd.p.dm", "-3");
    assert_meta(s0, "_dd.p.tid", "6553f0ab00000000");
    /* The others follow, without the root tags. */
    uint64_t a = get(span_at(&d, 0, 1), "span_id")->via.u64, b = get(span_at(&d, 0, 2), "span_id")->via.u64;
    assert_true((a == child->span_id && b == grandchild->span_id) ||
                (a == grandchild->span_id && b == child->span_id));
    for (int i = 1; i <= 2; i++) {
        const msgpack_object *s = span_at(&d, 0, (uint32_t)i);
        assert_span_shape(s);
        assert_metric(s, "_sampling_priority_v1", NAN);
        assert_meta(s, "_dd.p.dm", NULL);
        assert_meta(s, "_dd.p.tid", NULL);
    }
    msgpack_unpacked_destroy(&d.up);
    msgpack_sbuffer_destroy(&sb);
    dds_trace_free(t);
}

static void test_invalid_utf8_is_repaired(void **state)
{
    (void)state;
    dds_span *root = dds_span_start("http.client.request", "http", NULL, NULL);
    dds_span_set_resource(root, "GET /caf\xc3\xa9/\xff");
    dds_span_set_meta(root, "http.url", "http://h/\xfe\xff?q=\xc3");     /* bad bytes, cut sequence */
    dds_span_set_meta(root, "overlong", "\xc0\xaf|\xe0\x80\x80|\xed\xa0\x80|\xf4\x90\x80\x80");
    dds_span_set_meta(root, "ok", "\xe2\x82\xac \xf0\x9f\x98\x80");          /* € 😀 stay */
    dds_span_set_meta_dyn(root, "key\xff", "v");
    /* A value with a NUL inside ends at it; long ones take the word loop. */
    dds_span_set_meta_n(root, "nul", "abc\0def", 7);
    dds_span_set_meta_n(root, "nul_long", "0123456789abcdef01\0tail-that-is-not-sent", 40);
    dds_span_set_meta_n(root, "ascii_long", "0123456789abcdef0123456789", 26);
    dds_trace *t = finish_root(root);

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dds_encode_result r;
    assert_int_equal(dds_encode_traces(&sb, t, &opts, &r), 0);
    decoded d;
    decode(&d, &sb);
    const msgpack_object *s = span_at(&d, 0, 0);
    assert_span_shape(s); /* walks everything: no bin, all valid UTF-8 */
    assert_str(get(s, "resource"), "GET /caf\xc3\xa9/\xef\xbf\xbd");
    assert_meta(s, "http.url", "http://h/\xef\xbf\xbd\xef\xbf\xbd?q=\xef\xbf\xbd");
    assert_meta(s, "overlong",
                "\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|"
                "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_meta(s, "ok", "\xe2\x82\xac \xf0\x9f\x98\x80");
    assert_meta(s, "key\xef\xbf\xbd", "v");
    const char *want[][2] = {{"nul", "abc"}, {"nul_long", "0123456789abcdef01"},
                             {"ascii_long", "0123456789abcdef0123456789"}};
    for (int i = 0; i < 3; i++) {
        const msgpack_object *v = get(get(s, "meta"), want[i][0]);
        assert_non_null(v);
        assert_int_equal(v->type, MSGPACK_OBJECT_STR);
        assert_int_equal(v->via.str.size, strlen(want[i][1])); /* no NUL or tail sent */
        assert_memory_equal(v->via.str.ptr, want[i][1], v->via.str.size);
    }
    msgpack_unpacked_destroy(&d.up);
    msgpack_sbuffer_destroy(&sb);
    dds_trace_free(t);
}

static void test_long_values_are_capped(void **state)
{
    (void)state;
    size_t big = 30000;
    char *ascii = malloc(big + 1), *accents = malloc(big + 1);
    memset(ascii, 'a', big);
    ascii[big] = '\0';
    for (size_t i = 0; i < big; i += 2)
        accents[i] = (char)0xc3, accents[i + 1] = (char)0xa9; /* é */
    accents[big] = '\0';
    accents[25001] = (char)0xff; /* an invalid byte just past the cut */

    dds_span *root = dds_span_start("postgresql.query", "sql", NULL, NULL);
    dds_span_set_resource(root, ascii);
    dds_span_set_meta(root, "long", ascii);
    dds_span_set_meta(root, "accents", accents);
    dds_trace *t = finish_root(root);

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dds_encode_result r;
    assert_int_equal(dds_encode_traces(&sb, t, &opts, &r), 0);
    decoded d;
    decode(&d, &sb);
    const msgpack_object *s = span_at(&d, 0, 0);
    assert_span_shape(s);
    const msgpack_object *res = get(s, "resource"), *lng = get(get(s, "meta"), "long"),
                         *acc = get(get(s, "meta"), "accents");
    assert_int_equal(res->via.str.size, DDS_RESOURCE_MAX);
    assert_memory_equal(res->via.str.ptr + DDS_RESOURCE_MAX - 3, "...", 3);
    assert_int_equal(lng->via.str.size, DDS_META_VALUE_MAX);
    assert_memory_equal(lng->via.str.ptr + DDS_META_VALUE_MAX - 3, "...", 3);
    /* Cut on a character boundary: 24996 bytes of é pairs + "...". */
    assert_true(acc->via.str.size <= DDS_META_VALUE_MAX);
    assert_int_equal(acc->via.str.size, 24996 + 3);
    assert_true(utf8_ok(acc->via.str.ptr, acc->via.str.size));
    msgpack_unpacked_destroy(&d.up);
    msgpack_sbuffer_destroy(&sb);
    dds_trace_free(t);
    free(ascii);
    free(accents);
}

static dds_trace *chunk_of(int nspans, size_t meta_len)
{
    char *v = malloc(meta_len + 1);
    memset(v, 'x', meta_len);
    v[meta_len] = '\0';
    dds_span *root = dds_span_start("root", "web", NULL, NULL);
    for (int i = 1; i < nspans; i++) {
        dds_span *c = dds_span_start("child", "http", root, NULL);
        dds_span_set_meta(c, "blob", v);
        dds_span_finish(c);
    }
    dds_span_set_meta(root, "blob", v);
    free(v);
    return finish_root(root);
}

static void test_payload_cap_leaves_the_rest(void **state)
{
    (void)state;
    /* Five chunks of ~20 KB each against a 50 KB cap: 2 + 2 + 1. */
    dds_trace *list = NULL, **tail = &list;
    for (int i = 0; i < 5; i++) {
        *tail = chunk_of(2, 10000);
        tail = &(*tail)->qnext;
    }
    dds_encode_opts o = opts;
    o.max_bytes = 50000;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    size_t calls = 0, total = 0;
    size_t want[] = {2, 2, 1};
    dds_trace *rest = list;
    while (rest) {
        dds_encode_result r;
        assert_int_equal(dds_encode_traces(&sb, rest, &o, &r), 0);
        assert_true(calls < 3);
        assert_int_equal(r.consumed, want[calls]);
        assert_int_equal(r.traces, want[calls]);
        assert_int_equal(r.spans, 2 * want[calls]);
        assert_true(sb.size <= o.max_bytes);
        decoded d;
        decode(&d, &sb);
        assert_int_equal(d.root->via.array.size, r.traces);
        for (uint32_t c = 0; c < d.root->via.array.size; c++)
            assert_true(get(span_at(&d, c, 0), "trace_id")->via.u64 == rest->trace_id_lo ||
                        c > 0);
        msgpack_unpacked_destroy(&d.up);
        for (size_t i = 0; i < r.consumed; i++)
            rest = rest->qnext;
        total += r.traces;
        calls++;
    }
    assert_int_equal(total, 5);
    free_list(list);

    /* One chunk bigger than the cap is still sent, alone. */
    list = chunk_of(8, 10000);
    list->qnext = chunk_of(1, 10);
    dds_encode_result r;
    assert_int_equal(dds_encode_traces(&sb, list, &o, &r), 0);
    assert_int_equal(r.consumed, 1);
    assert_int_equal(r.traces, 1);
    assert_true(sb.size > o.max_bytes);
    free_list(list);

    /* Nothing to send. */
    assert_int_equal(dds_encode_traces(&sb, NULL, &o, &r), 0);
    assert_int_equal(r.consumed + r.traces, 0);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- keys: the fast path for known keys, the full one for the rest ------ */

/* The same key as a static string and as a copy at another address, keys of
 * 31 and 32 bytes (fixstr / str8), a key that needs repair, keys sharing a
 * reserved key's first bytes, and a propagated tag that is no fixed key:
 * each on the root (where the reserved ones are ours) and on a child (where
 * they are not), so that the second sight of a key comes from what the
 * encoder kept. */
static void test_keys_known_and_unknown(void **state)
{
    (void)state;
    static const char k31[] = "a.key.that.is.exactly.31.bytes.";
    static const char k32[] = "a.key.that.is.exactly.32.bytes..";
    dds_span *spans[2];
    spans[0] = dds_span_start("http.server.request", "web", NULL, NULL);
    spans[1] = dds_span_start("redis.command", "redis", spans[0], NULL);
    for (int i = 0; i < 2; i++) {
        dds_span *s = spans[i];
        dds_span_set_meta(s, "_dd.peer.service.source", "out.host"); /* '_' like _dd.p.dm */
        dds_span_set_meta_dyn(s, "_dd.p.dmx", "a");                  /* a reserved key's prefix */
        dds_span_set_meta_dyn(s, "_dd.p.dm", "-9");                  /* ours on the root */
        dds_span_set_meta_dyn(s, "_dd.p.usr.id", "span");            /* propagated: root's */
        dds_span_set_meta_dyn(s, "language", "rust");                /* ours everywhere */
        dds_span_set_meta(s, k31, "31");
        dds_span_set_meta(s, k32, "32");
        dds_span_set_meta_dyn(s, "k\xff", "bad");
        dds_span_set_metric(s, "_dd.measured", 1);                   /* '_' like _dd.rule_psr */
        dds_span_set_metric(s, "_dd.rule_psr", 7);                   /* ours on the root */
    }
    dds_span_finish(spans[1]);
    dds_trace *t = finish_root(spans[0]);
    t->sampling = (dds_sampling){.decided = 1, .priority = 1, .mechanism = DDS_MECH_DEFAULT,
                                 .agent_psr = 1, .rule_psr = -1, .limit_psr = -1, .ksr = -1};
    set_tag(t, "_dd.p.usr.id", "ctx");

    msgpack_sbuffer sb;
    decoded d;
    encode_decode(t, &sb, &d);
    /* The 31-byte key is a fixstr, the 32-byte one a str8, on both spans. */
    char want31[33] = {(char)(0xa0 | 31)}, want32[34] = {(char)0xd9, 32};
    memcpy(want31 + 1, k31, 31);
    memcpy(want32 + 2, k32, 32);
    int n31 = 0, n32 = 0;
    for (size_t i = 0; i + sizeof want32 <= sb.size; i++) {
        n31 += memcmp(sb.data + i, want31, sizeof want31 - 1) == 0;
        n32 += memcmp(sb.data + i, want32, sizeof want32) == 0;
    }
    assert_int_equal(n31, 2);
    assert_int_equal(n32, 2);
    for (uint32_t i = 0; i < 2; i++) {
        const msgpack_object *s = span_at(&d, 0, i);
        int root = i == 0;
        assert_span_shape(s);
        assert_meta(s, "_dd.peer.service.source", "out.host");
        assert_meta(s, "_dd.p.dmx", "a");
        assert_meta(s, "_dd.p.dm", root ? "-0" : "-9");
        assert_meta(s, "_dd.p.usr.id", root ? "ctx" : "span");
        assert_meta(s, "language", "cpp");
        assert_meta(s, k31, "31");
        assert_meta(s, k32, "32");
        assert_meta(s, "k\xef\xbf\xbd", "bad");
        assert_metric(s, "_dd.measured", 1);
        assert_metric(s, "_dd.rule_psr", root ? NAN : 7);
    }
    msgpack_unpacked_destroy(&d.up);
    msgpack_sbuffer_destroy(&sb);
    dds_trace_free(t);
}

/* More distinct keys than the encoder keeps (they evict one another): every
 * one still goes out with its own value. */
static void test_many_keys(void **state)
{
    (void)state;
    enum { KEYS = 300 };
    dds_span *root = dds_span_start("root", "web", NULL, NULL);
    dds_span *child = dds_span_start("child", "web", root, NULL);
    char k[32], v[32];
    for (int i = 0; i < KEYS; i++) {
        snprintf(k, sizeof k, "key.%d", i);
        snprintf(v, sizeof v, "value.%d", i);
        dds_span_set_meta_dyn(root, k, v);
        dds_span_set_meta_dyn(child, k, v);
    }
    dds_span_finish(child);
    dds_trace *t = finish_root(root);
    msgpack_sbuffer sb;
    decoded d;
    encode_decode(t, &sb, &d);
    for (uint32_t s = 0; s < 2; s++)
        for (int i = 0; i < KEYS; i++) {
            snprintf(k, sizeof k, "key.%d", i);
            snprintf(v, sizeof v, "value.%d", i);
            assert_meta(span_at(&d, 0, s), k, v);
        }
    msgpack_unpacked_destroy(&d.up);
    msgpack_sbuffer_destroy(&sb);
    dds_trace_free(t);
}

/* The exact bytes of a payload, as the encoder wrote them before its fast
 * paths (keys kept by address, the fixed fields as one block): a span like
 * hiredis's, the chunk root, and a child with what takes the slow paths. Ids
 * and times are set so the bytes are always the same. */
static const char golden_hex[] =
    "dd00000001dd000000028ca773657276696365a8636865636b6f7574a46e616d65ad72656469732e636f6d6d616e64a8"
    "7265736f75726365a3474554a874726163655f6964cf0102030405060708a77370616e5f6964cf1111111111111111a9"
    "706172656e745f6964cf0000000000000000a57374617274d317979cfe362a0000a86475726174696f6ed30000000000"
    "01e240a56572726f72d30000000000000000a474797065a57265646973a46d657461df00000014a86c616e6775616765"
    "a3637070aa72756e74696d652d6964d92430623765316336612d336639642d346332652d396135312d37643266306339"
    "6534623133aa5f64642e6f726967696eaa73796e74686574696373a85f64642e702e646da22d31a95f64642e702e7469"
    "64b036353533663061623030303030303030a95f64642e702e6b7372a3302e35ac5f64642e702e7573722e6964a86458"
    "4e6c63673d3db172656469732e7261775f636f6d6d616e64ad4745542062656e63683a6b6579a964622e73797374656d"
    "a57265646973a9636f6d706f6e656e74a768697265646973a97370616e2e6b696e64a6636c69656e74a86f75742e686f"
    "7374a93132372e302e302e31ac706565722e73657276696365a93132372e302e302e31b75f64642e706565722e736572"
    "766963652e736f75726365a86f75742e686f7374ac6f75742e72656469735f6462a130b764622e72656469732e646174"
    "61626173655f696e646578a130a3656e76a470726f64a776657273696f6ea5312e322e33a47465616da4636f7265a672"
    "6567696f6ea26575a76d657472696373df00000006aa70726f636573735f6964cb40b0920000000000b55f73616d706c"
    "696e675f7072696f726974795f7631cb3ff0000000000000ad5f64642e6167656e745f707372cb3fe0000000000000b1"
    "72656469732e617267735f6c656e677468cb4000000000000000ac5f64642e6d65617375726564cb3ff0000000000000"
    "b86e6574776f726b2e64657374696e6174696f6e2e706f7274cb40b8eb00000000008ca773657276696365a863686563"
    "6b6f7574a46e616d65b3687474702e636c69656e742e72657175657374a87265736f75726365ae474554202f636166c3"
    "a92fefbfbda874726163655f6964cf0102030405060708a77370616e5f6964cf2222222222222222a9706172656e745f"
    "6964cf1111111111111111a57374617274d317979cfe362a03e8a86475726174696f6ed300000000000003e8a5657272"
    "6f72d30000000000000001a474797065a0a46d657461df0000000aa86c616e6775616765a3637070aa72756e74696d65"
    "2d6964d92430623765316336612d336639642d346332652d396135312d376432663063396534623133aa5f64642e6f72"
    "6967696eaa73796e74686574696373a36e756ca3616263a6726567696f6ea27573a4636cc3a9a3e282acad6572726f72"
    "2e6d657373616765a4626f6f6da3656e76a470726f64a776657273696f6ea5312e322e33a47465616da4636f7265a76d"
    "657472696373df00000001aa70726f636573735f6964cb40b0920000000000";

static void test_golden_bytes(void **state)
{
    (void)state;
    dds_span *root = dds_span_start("redis.command", "redis", NULL, NULL);
    dds_span_set_resource(root, "GET");
    dds_span_set_meta(root, "redis.raw_command", "GET bench:key");
    dds_span_set_metric(root, "redis.args_length", 2);
    dds_span_set_meta(root, "db.system", "redis");
    dds_span_set_meta(root, "component", "hiredis");
    dds_span_set_meta(root, "span.kind", "client");
    dds_span_set_metric(root, "_dd.measured", 1);
    dds_span_set_meta(root, "out.host", "127.0.0.1");
    dds_span_set_meta(root, "peer.service", "127.0.0.1");
    dds_span_set_meta(root, "_dd.peer.service.source", "out.host");
    dds_span_set_metric(root, "network.destination.port", 6379);
    dds_span_set_meta(root, "out.redis_db", "0");
    dds_span_set_meta(root, "db.redis.database_index", "0");
    dds_span *child = dds_span_start("http.client.request", NULL, root, NULL);
    dds_span_set_resource(child, "GET /caf\xc3\xa9/\xff");
    dds_span_set_meta_n(child, "nul", "abc\0def", 7);
    dds_span_set_meta(child, "region", "us");
    dds_span_set_meta_dyn(child, "cl\xc3\xa9", "\xe2\x82\xac");
    dds_span_set_metric(child, "process_id", 1);
    dds_span_set_metric(child, "inf", INFINITY);
    dds_span_set_error(child, "boom");
    dds_span_finish(child);
    dds_trace *t = finish_root(root);
    t->trace_id_hi = 0x6553f0ab00000000ULL;
    t->trace_id_lo = 0x0102030405060708ULL;
    t->sampling = (dds_sampling){.decided = 1, .priority = 1, .mechanism = DDS_MECH_AGENT_RATE,
                                 .agent_psr = 0.5, .rule_psr = -1, .limit_psr = -1, .ksr = 0.5};
    set_tag(t, "_dd.p.usr.id", "dXNlcg==");
    snprintf(dds_trace_ctx_mut(t)->origin, sizeof t->ctx->origin, "synthetics");
    root->span_id = t->root_span_id = 0x1111111111111111ULL;
    child->span_id = 0x2222222222222222ULL;
    child->parent_id = root->span_id;
    root->start_ns = 1700000000000000000LL;
    root->duration_ns = 123456;
    child->start_ns = 1700000000000001000LL;
    child->duration_ns = 1000;

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dds_encode_result r;
    assert_int_equal(dds_encode_traces(&sb, t, &opts, &r), 0);
    char *hex = malloc(2 * sb.size + 1);
    for (size_t i = 0; i < sb.size; i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)sb.data[i]);
    if (strcmp(hex, golden_hex) != 0) {
        printf("payload: %s\n", hex);
        fail_msg("payload differs from golden_hex (printed above)");
    }
    free(hex);
    msgpack_sbuffer_destroy(&sb);
    dds_trace_free(t);
}

/* A root span carrying every computed tag at once: the most propagated tags
 * a context holds and all of origin, tid, ksr, parent id and both errors.
 * None may be crowded out (the fixed keys once counted against the room kept
 * for the propagated ones, and the last of them was dropped). */
static void test_every_reserved_tag_at_once(void **state)
{
    (void)state;
    dds_span *root = dds_span_start("web.request", "web", NULL, NULL);
    dds_trace *t = finish_root(root);
    t->trace_id_hi = 0x6553f0ab00000000ULL;
    t->sampling = (dds_sampling){.decided = 1, .priority = 2, .mechanism = DDS_MECH_RULE,
                                 .rule_psr = 0.5, .agent_psr = -1, .limit_psr = -1, .ksr = 0.5};
    dds_trace_context *c = dds_trace_ctx_mut(t);
    char k[32];
    for (int i = 0; i < DDS_MAX_TRACE_TAGS; i++) {
        snprintf(k, sizeof k, "_dd.p.k%02d", i);
        set_tag(t, k, "v");
    }
    snprintf(c->origin, sizeof c->origin, "synthetics");
    snprintf(c->last_parent_id, sizeof c->last_parent_id, "00f067aa0ba902b7");
    snprintf(c->propagation_error, sizeof c->propagation_error, "inject_max_size");
    snprintf(c->w3c_extraction_error, sizeof c->w3c_extraction_error, "malformed_traceparent");

    msgpack_sbuffer sb;
    decoded d;
    encode_decode(t, &sb, &d);
    const msgpack_object *s0 = span_at(&d, 0, 0);
    for (int i = 0; i < DDS_MAX_TRACE_TAGS; i++) {
        snprintf(k, sizeof k, "_dd.p.k%02d", i);
        assert_meta(s0, k, "v");
    }
    assert_meta(s0, "_dd.origin", "synthetics");
    assert_meta(s0, "_dd.p.tid", "6553f0ab00000000");
    assert_meta(s0, "_dd.p.ksr", "0.5");
    assert_meta(s0, "_dd.p.dm", "-3");
    assert_meta(s0, "_dd.parent_id", "00f067aa0ba902b7");
    assert_meta(s0, "_dd.propagation_error", "inject_max_size");
    assert_meta(s0, "_dd.w3c_extraction_error", "malformed_traceparent");
    assert_meta(s0, "language", "cpp");
    assert_meta(s0, "runtime-id", RUNTIME_ID);
    msgpack_unpacked_destroy(&d.up);
    msgpack_sbuffer_destroy(&sb);
    dds_trace_free(t);
}

/* ---- shared tag sets (tagset.h) ------------------------------------------ */

/* Maps equal as maps: same size, and every key of a in b with an equal value
 * (key order may differ). */
static void assert_same_map(const msgpack_object *a, const msgpack_object *b, const char *what)
{
    assert_int_equal(a->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(b->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < a->via.map.size; i++) {
        const msgpack_object_kv *kv = &a->via.map.ptr[i];
        int found = 0;
        for (uint32_t j = 0; j < b->via.map.size && !found; j++)
            if (msgpack_object_equal(kv->key, b->via.map.ptr[j].key)) {
                found = 1;
                if (!msgpack_object_equal(kv->val, b->via.map.ptr[j].val))
                    fail_msg("%s: %.*s differs", what, (int)kv->key.via.str.size,
                             kv->key.via.str.ptr);
            }
        if (!found)
            fail_msg("%s: %.*s only on one side", what, (int)kv->key.via.str.size,
                     kv->key.via.str.ptr);
    }
    assert_int_equal(a->via.map.size, b->via.map.size);
}

/* A chunk of a root and a child, each with the span's own tags; with ts,
 * the tag set's tags come from ts, else they are set on the spans one by
 * one, before the own ones (which therefore win, as they do over a set). */
static dds_trace *tagged_chunk(dds_tagset *ts, const dds_tag *meta, int nmeta,
                               const dds_tag_num *num, int nnum)
{
    dds_span *spans[2];
    spans[0] = dds_span_start("redis.command", "redis", NULL, NULL);
    spans[1] = dds_span_start("redis.command", "redis", spans[0], NULL);
    for (int i = 0; i < 2; i++) {
        dds_span *s = spans[i];
        if (ts) {
            dds_span_set_tagset(s, ts);
        } else {
            dds_span_put_tags(s, meta, nmeta, num, nnum); /* what hooks do without a set */
        }
        dds_span_set_meta(s, "redis.raw_command", "GET k");
        dds_span_set_meta(s, "span.kind", "own"); /* also in the set: this one wins */
        dds_span_set_metric(s, "redis.args_length", 2);
        dds_span_set_metric(s, "overlap.num", 7);
    }
    dds_span_finish(spans[1]);
    dds_trace *t = finish_root(spans[0]);
    t->trace_id_hi = 0x6553f0ab00000000ULL;
    t->sampling = (dds_sampling){.decided = 1, .priority = 1, .mechanism = DDS_MECH_DEFAULT,
                                 .rule_psr = -1, .agent_psr = 1, .limit_psr = -1, .ksr = -1};
    dds_trace_context *c = dds_trace_ctx_mut(t);
    snprintf(c->origin, sizeof c->origin, "synthetics");
    set_tag(t, "_dd.p.usr.id", "dXNlcg==");
    return t;
}

/* The payload of spans given a tag set decodes to the same maps as that of
 * spans given the same tags one by one, whatever the keys: the span's own,
 * DD_ENV / DD_VERSION / DD_TAGS, reserved keys (fixed and propagated), bad
 * UTF-8, over-long values, non-finite metrics, a key given twice. */
static void check_tagset_as_own(const dds_tag *meta, int nmeta, const dds_tag_num *num, int nnum)
{
    dds_tagset *ts = dds_tagset_new(meta, nmeta, num, nnum);
    assert_non_null(ts);
    dds_trace *with = tagged_chunk(ts, meta, nmeta, num, nnum);
    dds_trace *own = tagged_chunk(NULL, meta, nmeta, num, nnum);
    msgpack_sbuffer sa, sb;
    decoded a, b;
    encode_decode(with, &sa, &a);
    encode_decode(own, &sb, &b);
    for (uint32_t i = 0; i < 2; i++) {
        const msgpack_object *x = span_at(&a, 0, i), *y = span_at(&b, 0, i);
        assert_span_shape(x);
        assert_same_map(get(x, "meta"), get(y, "meta"), i ? "child meta" : "root meta");
        assert_same_map(get(x, "metrics"), get(y, "metrics"), i ? "child metrics" : "root metrics");
        assert_meta(x, "span.kind", "own");
        assert_metric(x, "overlap.num", 7);
    }
    msgpack_unpacked_destroy(&a.up);
    msgpack_unpacked_destroy(&b.up);
    msgpack_sbuffer_destroy(&sa);
    msgpack_sbuffer_destroy(&sb);
    assert_int_equal(ts->refs, 3); /* ours and the two spans' */
    dds_trace_free(with);
    dds_trace_free(own);
    assert_int_equal(ts->refs, 1);
    dds_tagset_unref(ts);
}

static void test_tagset_plain(void **state)
{
    (void)state;
    /* No key of the spans' own, none reserved: one copy of the bytes. */
    const dds_tag meta[] = {{"db.system", "redis", 5}, {"out.host", "127.0.0.1", 9},
                            {"peer.service", "127.0.0.1", 9}};
    const dds_tag_num num[] = {{"_dd.measured", 1}, {"network.destination.port", 6379}};
    check_tagset_as_own(meta, 3, num, 2);
}

static void test_tagset_process_tags(void **state)
{
    (void)state;
    /* env / version / a DD_TAGS key in the set: the set's value, as a
     * span's own would be; the other DD_TAGS still come. */
    const dds_tag meta[] = {{"db.system", "redis", 5}, {"env", "from-set", 8},
                            {"version", "9", 1}, {"team", "set-team", 8}};
    const dds_tag_num num[] = {{"_dd.measured", 1}};
    check_tagset_as_own(meta, 4, num, 1);
}

static void test_tagset_overlap_and_reserved(void **state)
{
    (void)state;
    static char longv[DDS_META_VALUE_MAX + 100];
    memset(longv, 'x', sizeof longv);
    const dds_tag meta[] = {
        {"span.kind", "client", 6},          /* the spans set it too */
        {"language", "rust", 4},             /* reserved */
        {"runtime-id", "nope", 4},           /* reserved */
        {"_dd.origin", "set", 3},            /* reserved: the trace has an origin */
        {"_dd.p.dm", "-9", 2},               /* reserved on the root */
        {"_dd.p.usr.id", "other", 5},        /* a propagated tag's key */
        {"_dd.p.tid", "0000000000000001", 16},
        {"bad", "a\xff\xfe" "b", 4},         /* invalid UTF-8 */
        {"nul", "ab\0cd", 5},                /* ends at its NUL */
        {"long", longv, sizeof longv},       /* capped */
        {"dup", "first", 5},
        {"dup", "second", 6},                /* a key twice: the last value */
        {"env", "from-set", 8},
    };
    const dds_tag_num num[] = {
        {"overlap.num", 1},                  /* the spans set it too */
        {"process_id", 1},                   /* reserved */
        {"_sampling_priority_v1", 5},        /* reserved on the root */
        {"_dd.agent_psr", 0.5},
        {"nan", NAN},                        /* left out */
        {"inf", INFINITY},
        {"_dd.measured", 1},
        {"dupn", 1},
        {"dupn", 2},
    };
    check_tagset_as_own(meta, (int)(sizeof meta / sizeof *meta), num,
                        (int)(sizeof num / sizeof *num));
}

/* A span sees its set's tags as its own (hooks and sampling rules read them
 * back), its own first. */
static void test_tagset_get(void **state)
{
    (void)state;
    const dds_tag meta[] = {{"out.host", "db1", 3}, {"span.kind", "client", 6}};
    const dds_tag_num num[] = {{"network.destination.port", 5432}};
    dds_tagset *ts = dds_tagset_new(meta, 2, num, 1);
    assert_non_null(ts);
    dds_span *s = dds_span_start("q", "sql", NULL, NULL);
    assert_null(dds_span_get_meta(s, "out.host"));
    dds_span_set_tagset(s, ts);
    dds_span_set_meta(s, "span.kind", "own");
    assert_string_equal(dds_span_get_meta(s, "out.host"), "db1");
    assert_string_equal(dds_span_get_meta(s, "span.kind"), "own");
    assert_null(dds_span_get_meta(s, "db.name"));
    double v = 0;
    assert_true(dds_span_get_metric(s, "network.destination.port", &v));
    assert_true(v == 5432);
    assert_false(dds_span_get_metric(s, "db.row_count", &v));
    /* Another set replaces it and releases the first. */
    dds_tagset *ts2 = dds_tagset_new(NULL, 0, num, 1);
    assert_non_null(ts2);
    dds_span_take_tagset(s, ts2);
    assert_int_equal(ts->refs, 1);
    assert_null(dds_span_get_meta(s, "out.host"));
    dds_trace_free(finish_root(s));
    dds_tagset_unref(ts);
}

static void test_format_rate(void **state)
{
    (void)state;
    static const struct { double v; const char *s; } cases[] = {
        {1, "1"}, {0.1, "0.1"}, {0.5, "0.5"}, {0, "0"}, {0.123456789, "0.123457"},
        {0.0000001, "0"}, {0.25, "0.25"}, {0.999999, "0.999999"}, {0.9999999, "1"},
    };
    char buf[32];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        dds_format_rate(cases[i].v, buf);
        assert_string_equal(buf, cases[i].s);
    }
}

/* Not a pass/fail benchmark: prints the cost per span of a realistic chunk
 * (8 meta, 2 metrics) so regressions show in the test log; fails only if it
 * is absurd. */
static void test_encode_speed(void **state)
{
    (void)state;
    enum { CHUNKS = 200, SPANS = 50 };
    dds_trace *list = NULL, **tail = &list;
    for (int c = 0; c < CHUNKS; c++) {
        dds_span *root = dds_span_start("http.server.request", "web", NULL, NULL);
        dds_span_set_resource(root, "GET /api/v1/users/?");
        for (int i = 1; i < SPANS; i++) {
            dds_span *s = dds_span_start("postgresql.query", "sql", root, NULL);
            dds_span_set_resource(s, "SELECT id, name, email FROM users WHERE id = ? AND org = ?");
            dds_span_set_meta(s, "db.system", "postgresql");
            dds_span_set_meta(s, "db.name", "app");
            dds_span_set_meta(s, "db.user", "app_rw");
            dds_span_set_meta(s, "out.host", "db.internal.example");
            dds_span_set_meta(s, "component", "libpq");
            dds_span_set_meta(s, "span.kind", "client");
            dds_span_set_meta(s, "peer.service", "app");
            dds_span_set_meta(s, "server.address", "db.internal.example");
            dds_span_set_metric(s, "network.destination.port", 5432);
            dds_span_set_metric(s, "db.row_count", 1);
            dds_span_finish(s);
        }
        *tail = finish_root(root);
        tail = &(*tail)->qnext;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dds_encode_result r;
    struct timespec a, b;
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        clock_gettime(CLOCK_MONOTONIC, &a);
        assert_int_equal(dds_encode_traces(&sb, list, &opts, &r), 0);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
        if (ns / (double)r.spans < best)
            best = ns / (double)r.spans;
    }
    assert_int_equal(r.spans, CHUNKS * SPANS);
    printf("encode: %.0f ns per span, %.0f bytes per span (%zu spans, %zu bytes)\n", best,
           (double)sb.size / (double)r.spans, r.spans, sb.size);
    assert_true(best < 200000); /* generous: sanitizer builds run this too */
    msgpack_sbuffer_destroy(&sb);
    free_list(list);
}

/* The encoder reserves a span's room once and writes its fast items without
 * a check, the rest through the checked writers (after which the room is
 * made again): whatever room the buffer starts with, every growth boundary
 * falling anywhere among fast and slow items, the bytes are the same. */
static void test_every_buffer_boundary(void **state)
{
    (void)state;
    static const dds_tag set_meta[] = {{"peer.service", "127.0.0.1", 9}, {"span.kind", "client", 6}};
    static const dds_tag_num set_num[] = {{"network.destination.port", 6379}};
    dds_tagset *ts = dds_tagset_new(set_meta, 2, set_num, 1);
    assert_non_null(ts);
    char v256[257], v257[258], vlong[600];
    memset(v256, 'a', 256), v256[256] = 0;
    memset(v257, 'b', 257), v257[257] = 0;
    memset(vlong, 'c', 599), vlong[599] = 0;
    dds_span *root = dds_span_start("web.request", "web", NULL, NULL);
    dds_span *child = dds_span_start("redis.command", "redis", root, NULL);
    dds_span *spans[2] = {root, child};
    for (int i = 0; i < 2; i++) {
        dds_span *s = spans[i];
        dds_span_set_tagset(s, ts);
        dds_span_set_meta(s, "fast", "value");
        dds_span_set_meta(s, "v256", v256);        /* the longest fast value */
        dds_span_set_meta(s, "v257", v257);        /* checked */
        dds_span_set_meta(s, "utf8", "caf\xc3\xa9");  /* checked: not ASCII */
        dds_span_set_meta(s, "bad", "\xff\xfe");     /* checked: repaired */
        dds_span_set_meta_dyn(s, "a-key-that-is-much-longer-than-thirty-two-bytes", "k");
        dds_span_set_meta(s, "team", "own");       /* DD_TAGS' key: the span's wins */
        dds_span_set_meta(s, "after", vlong);
        dds_span_set_metric(s, "m", 1.5);
        dds_span_set_resource(s, i ? vlong : "GET /");
    }
    dds_span_set_meta(child, "span.kind", "server"); /* collides with the set */
    dds_span_finish(child);
    dds_trace *t = finish_root(root);
    t->trace_id_hi = 0x6553f0ab00000000ULL;
    t->sampling = (dds_sampling){.decided = 1, .priority = 2, .mechanism = DDS_MECH_RULE,
                                 .rule_psr = 0.5, .agent_psr = -1, .limit_psr = -1, .ksr = 0.5};
    dds_trace_context *c = dds_trace_ctx_mut(t);
    snprintf(c->origin, sizeof c->origin, "synthetics");
    set_tag(t, "_dd.p.usr.id", "dXNlcg==");

    msgpack_sbuffer ref;
    dds_encode_result r0, r;
    msgpack_sbuffer_init(&ref);
    assert_int_equal(dds_encode_traces(&ref, t, &opts, &r0), 0);
    assert_int_equal(r0.spans, 2);
    for (size_t a = 1; a <= ref.size + 64; a++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        sb.data = malloc(a);
        assert_non_null(sb.data);
        sb.alloc = a;
        assert_int_equal(dds_encode_traces(&sb, t, &opts, &r), 0);
        assert_int_equal(sb.size, ref.size);
        assert_memory_equal(sb.data, ref.data, ref.size);
        assert_memory_equal(&r, &r0, sizeof r);
        msgpack_sbuffer_destroy(&sb);
    }
    msgpack_sbuffer_destroy(&ref);
    dds_trace_free(t);
    dds_tagset_unref(ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_chunk_fields_and_tags, setup),
        cmocka_unit_test_setup(test_decision_maker_rules, setup),
        cmocka_unit_test_setup(test_local_root_first_even_when_it_finished_first, setup),
        cmocka_unit_test_setup(test_invalid_utf8_is_repaired, setup),
        cmocka_unit_test_setup(test_long_values_are_capped, setup),
        cmocka_unit_test_setup(test_payload_cap_leaves_the_rest, setup),
        cmocka_unit_test_setup(test_keys_known_and_unknown, setup),
        cmocka_unit_test_setup(test_many_keys, setup),
        cmocka_unit_test_setup(test_golden_bytes, setup),
        cmocka_unit_test_setup(test_every_reserved_tag_at_once, setup),
        cmocka_unit_test_setup(test_tagset_plain, setup),
        cmocka_unit_test_setup(test_tagset_process_tags, setup),
        cmocka_unit_test_setup(test_tagset_overlap_and_reserved, setup),
        cmocka_unit_test_setup(test_tagset_get, setup),
        cmocka_unit_test_setup(test_every_buffer_boundary, setup),
        cmocka_unit_test(test_format_rate),
        cmocka_unit_test_setup(test_encode_speed, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
