/* Unit tests for core/sampler.c: the Knuth vectors of wire spec §4.3, rules
 * (§4.4), the limiter with an injected clock (§4.5), agent rates (§1.6). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <time.h>

#include "config.h"
#include "sampler.h"
#include "span.h"

static dds_config cfg;
static int64_t fake_now;

static int64_t fake_clock(void)
{
    return fake_now;
}

static int setup(void **state)
{
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    cfg.service = "web-store";
    cfg.env = "prod";
    cfg.rate_limit = 100;
    dds_cfg = &cfg;
    fake_now = 5 * 1000000000LL;
    dds_sampler_set_clock(fake_clock);
    dds_sampler_update_rates("{\"rate_by_service\":{}}", 22);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    dds_sampler_shutdown();
    dds_sampler_set_clock(NULL);
    dds_cfg = NULL;
    return 0;
}

static void init_rules(const char *json, int want_rc)
{
    cfg.sampling_rules_json = (char *)json;
    assert_int_equal(dds_sampler_init(&cfg), want_rc);
}

/* Decide for a fresh trace whose local root has the given name, resource and
 * one meta tag. */
static dds_sampling decide(uint64_t lo, const char *name, const char *resource, const char *tk,
                           const char *tv)
{
    dds_span *root = dds_span_start(name, "web", NULL, NULL);
    assert_non_null(root);
    if (resource)
        dds_span_set_resource(root, resource);
    if (tk)
        dds_span_set_meta(root, tk, tv);
    dds_trace t;
    memset(&t, 0, sizeof t);
    t.ctx = &dds_context_none;
    t.trace_id_lo = lo;
    dds_sampler_decide(&t, root);
    dds_span_finish(root);
    assert_int_equal(t.sampling.decided, 1);
    return t.sampling;
}

/* An id the hash keeps at any rate > ~0.06 and one it drops below ~0.94. */
#define KEEP_ID 1ULL                   /* hash 1111111111111111111 */
#define DROP_ID 1311768467294899695ULL /* hash 17382725068285514697 */

/* ------------------------------------------------------------------------ */

static void test_knuth_vectors(void **state)
{
    (void)state;
    assert_true(dds_knuth_hash(1) == 1111111111111111111ULL);
    assert_true(dds_knuth_hash(12345678901234567890ULL) == 1908804064858086206ULL);
    assert_true(dds_knuth_hash(0x1234567890abcdefULL) == 17382725068285514697ULL);
    assert_true(dds_sampled_by_rate(1, 0.5));
    assert_true(dds_sampled_by_rate(1, 0.1));
    assert_true(dds_sampled_by_rate(12345678901234567890ULL, 0.5));
    assert_false(dds_sampled_by_rate(12345678901234567890ULL, 0.1));
    assert_false(dds_sampled_by_rate(0x1234567890abcdefULL, 0.5));
    assert_false(dds_sampled_by_rate(0x1234567890abcdefULL, 0.1));
    /* Thresholds: 0.5 → 2^63 exactly; 1.0 keeps everything; 0 drops all but
     * hash 0. */
    assert_true((uint64_t)(0.5 * (double)UINT64_MAX) == 9223372036854775808ULL);
    assert_true((uint64_t)(0.1 * (double)UINT64_MAX) == 1844674407370955264ULL);
    assert_true(dds_sampled_by_rate(0x1234567890abcdefULL, 1.0));
    assert_true(dds_sampled_by_rate(UINT64_MAX, 1.0));
    assert_false(dds_sampled_by_rate(1, 0.0));
    assert_false(dds_sampled_by_rate(1, -1.0));
    assert_true(dds_sampled_by_rate(1, 2.0));
    /* Only the low 64 bits matter, and the rate is monotonic. */
    int kept_low = 0, kept_high = 0;
    for (uint64_t id = 1; id <= 100000; id++) {
        kept_low += dds_sampled_by_rate(id * 7919, 0.25);
        kept_high += dds_sampled_by_rate(id * 7919, 0.75);
        if (dds_sampled_by_rate(id * 7919, 0.25))
            assert_true(dds_sampled_by_rate(id * 7919, 0.75));
    }
    assert_true(kept_low > 24000 && kept_low < 26000);
    assert_true(kept_high > 74000 && kept_high < 76000);
}

static void test_glob(void **state)
{
    (void)state;
    assert_true(dds_glob_match("*", ""));
    assert_true(dds_glob_match("*", "anything"));
    assert_true(dds_glob_match("", ""));
    assert_false(dds_glob_match("", "a"));
    assert_true(dds_glob_match("web-*", "web-store"));
    assert_true(dds_glob_match("WEB-*", "web-Store"));
    assert_false(dds_glob_match("web-*", "api-store"));
    assert_true(dds_glob_match("?eb", "web"));
    assert_false(dds_glob_match("?eb", "eb"));
    assert_true(dds_glob_match("a*b*c", "aXXbYYc"));
    assert_true(dds_glob_match("a*b*c", "abc"));
    assert_false(dds_glob_match("a*b*c", "aXXbYY"));
    assert_true(dds_glob_match("*a", "banana"));
    assert_true(dds_glob_match("**a**", "a"));
    assert_true(dds_glob_match("a*?", "ab"));
    assert_false(dds_glob_match("a*?", "a"));
    assert_true(dds_glob_match("http.*.request", "http.client.request"));
    assert_true(dds_glob_match(NULL, NULL));
    assert_true(dds_glob_match("*", NULL));
    assert_false(dds_glob_match("\\*", "*"));   /* no escapes: '\' is literal */
    assert_true(dds_glob_match("\\*", "\\x"));

    /* The classic exponential case must stay fast. */
    static char s[20001], p[64];
    memset(s, 'a', 20000);
    s[20000] = '\0';
    strcpy(p, "a*a*a*a*a*a*a*a*a*a*a*a*b");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_false(dds_glob_match(p, s));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms < 200);
}

static void test_limiter(void **state)
{
    (void)state;
    dds_limiter l;
    const int64_t S = 1000000000LL;
    int64_t t0 = 100 * S; /* on a second boundary */
    double eff;
    dds_limiter_init(&l, 2, t0);
    /* Capacity ceil(2) = 2, full at start. */
    assert_true(dds_limiter_allow(&l, t0, &eff));
    assert_true(eff == 1.0);
    assert_true(dds_limiter_allow(&l, t0 + 1, &eff));
    assert_false(dds_limiter_allow(&l, t0 + 2, &eff));
    assert_true(eff > 0.9666 && eff < 0.9667); /* (9 + 2/3) / 10 */
    /* One token every 0.5 s. */
    assert_false(dds_limiter_allow(&l, t0 + S / 2 - 1, &eff));
    assert_true(dds_limiter_allow(&l, t0 + S / 2, &eff));
    assert_false(dds_limiter_allow(&l, t0 + S / 2 + 1, &eff));
    /* Second 100 ended with 3 allowed of 6. A new second: 1 token refilled
     * (t0+1s), the window holds 8 x 1.0 and 0.5. */
    assert_true(dds_limiter_allow(&l, t0 + S, &eff));
    assert_true(eff > 0.95 - 1e-9 && eff < 0.95 + 1e-9); /* (8.5 + 1/1) / 10 */
    assert_false(dds_limiter_allow(&l, t0 + S + 1, &eff));
    assert_true(eff > 0.9 - 1e-9 && eff < 0.9 + 1e-9); /* (8.5 + 1/2) / 10 */
    /* A long pause refills to capacity, not beyond; old seconds age out. */
    assert_true(dds_limiter_allow(&l, t0 + 60 * S, &eff));
    assert_true(dds_limiter_allow(&l, t0 + 60 * S, &eff));
    assert_false(dds_limiter_allow(&l, t0 + 60 * S, &eff));
    assert_true(eff > (9 + 2.0 / 3) / 10 - 1e-9 && eff < (9 + 2.0 / 3) / 10 + 1e-9);
    /* effective_rate may be NULL. */
    assert_true(dds_limiter_allow(&l, t0 + 61 * S, NULL));

    /* Fractional limit: capacity ceil(0.5) = 1, one token every 2 s. */
    dds_limiter_init(&l, 0.5, 0);
    assert_true(dds_limiter_allow(&l, 0, NULL));
    assert_false(dds_limiter_allow(&l, S, NULL));
    assert_true(dds_limiter_allow(&l, 2 * S, NULL));
    /* Nonsense limits mean the default 100. */
    dds_limiter_init(&l, 0, 0);
    int n = 0;
    for (int i = 0; i < 150; i++)
        n += dds_limiter_allow(&l, 0, NULL);
    assert_int_equal(n, 100);
}

static void test_rules_first_match_wins(void **state)
{
    (void)state;
    init_rules("[{\"service\":\"web-*\",\"name\":\"http.server.*\",\"sample_rate\":0.0},"
               " {\"service\":\"WEB-STORE\",\"sample_rate\":1},"
               " {\"sample_rate\":0.5}]",
               0);
    dds_sampling s = decide(KEEP_ID, "http.server.request", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_USER_REJECT);
    assert_int_equal(s.mechanism, DDS_MECH_RULE);
    assert_true(s.rule_psr == 0.0);
    assert_true(s.ksr == 0.0);
    assert_true(s.limit_psr < 0); /* the hash dropped it: no limiter */
    assert_true(s.agent_psr < 0);

    s = decide(DROP_ID, "postgresql.query", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_USER_KEEP);
    assert_int_equal(s.mechanism, DDS_MECH_RULE);
    assert_true(s.rule_psr == 1.0 && s.ksr == 1.0);
    assert_true(s.limit_psr == 1.0);

    cfg.service = "other";
    s = decide(DROP_ID, "postgresql.query", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_USER_REJECT);
    assert_true(s.rule_psr == 0.5);
    s = decide(KEEP_ID, "postgresql.query", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_USER_KEEP);
}

static void test_rules_resource_and_tags(void **state)
{
    (void)state;
    init_rules("[{\"resource\":\"GET /health*\",\"sample_rate\":0},"
               " {\"tags\":{\"http.method\":\"P?ST\",\"peer.service\":\"*\"},\"sample_rate\":0},"
               " {\"name\":\"redis.command\",\"resource\":\"*\",\"tags\":{},\"sample_rate\":0}]",
               0);
    assert_int_equal(decide(KEEP_ID, "http.server.request", "get /healthz", NULL, NULL).priority,
                     DDS_PRIO_USER_REJECT);
    assert_int_equal(decide(KEEP_ID, "http.server.request", "GET /users", NULL, NULL).mechanism,
                     DDS_MECH_DEFAULT);
    /* Resource defaults to the name. */
    assert_int_equal(decide(KEEP_ID, "redis.command", NULL, NULL, NULL).mechanism, DDS_MECH_RULE);
    /* Every listed tag must be present: peer.service is missing. */
    assert_int_equal(decide(KEEP_ID, "x", NULL, "http.method", "post").mechanism, DDS_MECH_DEFAULT);
    dds_span *root = dds_span_start("x", "web", NULL, NULL);
    dds_span_set_meta(root, "http.method", "PoST");
    dds_span_set_meta(root, "peer.service", "db");
    dds_trace t;
    memset(&t, 0, sizeof t);
    t.ctx = &dds_context_none;
    t.trace_id_lo = KEEP_ID;
    dds_sampler_decide(&t, root);
    assert_int_equal(t.sampling.mechanism, DDS_MECH_RULE);
    assert_int_equal(t.sampling.priority, DDS_PRIO_USER_REJECT);
    dds_span_set_meta(root, "http.method", "PUT");
    dds_sampler_decide(&t, root);
    assert_int_equal(t.sampling.mechanism, DDS_MECH_DEFAULT);
    dds_span_finish(root);
    /* A NULL root matches only rules without tags. */
    memset(&t, 0, sizeof t);
    t.ctx = &dds_context_none;
    t.trace_id_lo = KEEP_ID;
    dds_sampler_decide(&t, NULL);
    assert_int_equal(t.sampling.mechanism, DDS_MECH_DEFAULT);
}

static void test_sample_rate_rule_is_last(void **state)
{
    (void)state;
    cfg.has_sample_rate = 1;
    cfg.sample_rate = 0.0;
    init_rules("[{\"name\":\"keep.me\",\"sample_rate\":1}]", 0);
    dds_sampling s = decide(KEEP_ID, "keep.me", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_USER_KEEP);
    s = decide(KEEP_ID, "other", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_USER_REJECT);
    assert_int_equal(s.mechanism, DDS_MECH_RULE);
    assert_true(s.rule_psr == 0.0);
    /* Only the sample rate. */
    init_rules(NULL, 0);
    s = decide(KEEP_ID, "keep.me", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_USER_REJECT);
    init_rules("  ", 0);
    cfg.has_sample_rate = 0;
    init_rules("[]", 0);
    s = decide(KEEP_ID, "keep.me", NULL, NULL, NULL);
    assert_int_equal(s.mechanism, DDS_MECH_DEFAULT);
}

static void test_bad_rules(void **state)
{
    (void)state;
    cfg.has_sample_rate = 1;
    cfg.sample_rate = 0.0;
    const char *bad[] = {
        "not json",
        "{\"sample_rate\":1}",
        "[{\"sample_rate\":1.5}]",
        "[{\"sample_rate\":\"1\"}]",
        "[{\"service\":3}]",
        "[{\"tags\":{\"a\":1}}]",
        "[{\"tags\":[\"a\"]}]",
        "[{\"max_per_second\":10}]",
        "[{\"name\":\"a\"}, 7]",
        "[{\"sample_rate\":1},{\"bogus\":true}]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        init_rules(bad[i], -1);
        /* No rules from the bad value, but the sample rate still applies. */
        dds_sampling s = decide(KEEP_ID, "a", NULL, NULL, NULL);
        assert_int_equal(s.mechanism, DDS_MECH_RULE);
        assert_true(s.rule_psr == 0.0);
    }
    cfg.has_sample_rate = 0;
    init_rules("[{\"sample_rate\":1},{\"bogus\":true}]", -1);
    assert_int_equal(decide(KEEP_ID, "a", NULL, NULL, NULL).mechanism, DDS_MECH_DEFAULT);
    /* provenance is tolerated. */
    init_rules("[{\"sample_rate\":0,\"provenance\":\"customer\"}]", 0);
    assert_int_equal(decide(KEEP_ID, "a", NULL, NULL, NULL).priority, DDS_PRIO_USER_REJECT);
}

static void test_rules_limiter(void **state)
{
    (void)state;
    cfg.rate_limit = 1;
    init_rules("[{\"sample_rate\":1}]", 0);
    dds_sampling s = decide(KEEP_ID, "a", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_USER_KEEP);
    assert_true(s.limit_psr == 1.0);
    s = decide(KEEP_ID, "a", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_USER_REJECT);
    assert_int_equal(s.mechanism, DDS_MECH_RULE);
    assert_true(s.limit_psr > 0.9499 && s.limit_psr < 0.9501); /* (9 + 1/2) / 10 */
    fake_now += 1000000000LL;
    s = decide(KEEP_ID, "a", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_USER_KEEP);
    /* Not applied without a rule. */
    init_rules("[{\"name\":\"nothing\"}]", 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(decide(KEEP_ID, "a", NULL, NULL, NULL).priority, DDS_PRIO_AUTO_KEEP);
}

static void test_agent_rates(void **state)
{
    (void)state;
    init_rules(NULL, 0);
    /* Nothing received: 1.0, DEFAULT, no ksr. */
    dds_sampling s = decide(DROP_ID, "a", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_AUTO_KEEP);
    assert_int_equal(s.mechanism, DDS_MECH_DEFAULT);
    assert_true(s.agent_psr == 1.0);
    assert_true(s.ksr < 0 && s.rule_psr < 0 && s.limit_psr < 0);

    const char *j = "{\"rate_by_service\":{\"service:web-store,env:prod\":0.5,"
                    "\"service:web-store,env:\":0.0,\"service:,env:\":0.25}}";
    dds_sampler_update_rates(j, strlen(j));
    s = decide(KEEP_ID, "a", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_AUTO_KEEP);
    assert_int_equal(s.mechanism, DDS_MECH_AGENT_RATE);
    assert_true(s.agent_psr == 0.5 && s.ksr == 0.5);
    s = decide(DROP_ID, "a", NULL, NULL, NULL);
    assert_int_equal(s.priority, DDS_PRIO_AUTO_REJECT);
    /* The default key. */
    cfg.env = "staging";
    s = decide(DROP_ID, "a", NULL, NULL, NULL);
    assert_int_equal(s.mechanism, DDS_MECH_AGENT_RATE);
    assert_true(s.agent_psr == 0.25);
    /* Exact match is exact (no prefix, no case folding). */
    cfg.service = "WEB-STORE";
    cfg.env = "prod";
    assert_true(decide(DROP_ID, "a", NULL, NULL, NULL).agent_psr == 0.25);
    cfg.service = "web-stor";
    assert_true(decide(DROP_ID, "a", NULL, NULL, NULL).agent_psr == 0.25);
    cfg.service = "web-store";
    /* A root's own env tag is looked up every time: the next span's value
     * may sit at the same address (recycled span memory). */
    for (int i = 0; i < 3; i++) {
        assert_true(decide(DROP_ID, "a", NULL, "env", "prod").agent_psr == 0.5);
        assert_true(decide(DROP_ID, "a", NULL, "env", "qrod").agent_psr == 0.25);
    }

    /* "{}", bad JSON, a bad rate: the previous map stays. */
    dds_sampler_update_rates("{}", 2);
    dds_sampler_update_rates("{\"rate_by_service\":", 19);
    const char *bad = "{\"rate_by_service\":{\"service:web-store,env:prod\":1.5}}";
    dds_sampler_update_rates(bad, strlen(bad));
    bad = "{\"rate_by_service\":{\"service:web-store,env:prod\":\"0.1\"}}";
    dds_sampler_update_rates(bad, strlen(bad));
    dds_sampler_update_rates(NULL, 0);
    assert_true(decide(DROP_ID, "a", NULL, NULL, NULL).agent_psr == 0.5);

    /* A new map replaces the whole old one: no default any more. */
    j = "{\"rate_by_service\":{\"service:other,env:prod\":0.1}}";
    dds_sampler_update_rates(j, strlen(j));
    s = decide(DROP_ID, "a", NULL, NULL, NULL);
    assert_int_equal(s.mechanism, DDS_MECH_DEFAULT);
    assert_true(s.agent_psr == 1.0);
    /* Only a default. */
    j = "{\"rate_by_service\":{\"service:,env:\":0}}";
    dds_sampler_update_rates(j, strlen(j));
    s = decide(KEEP_ID, "a", NULL, NULL, NULL);
    assert_int_equal(s.mechanism, DDS_MECH_AGENT_RATE);
    assert_int_equal(s.priority, DDS_PRIO_AUTO_REJECT);
    /* No dds_cfg: service and env are "". */
    dds_cfg = NULL;
    s = decide(KEEP_ID, "a", NULL, NULL, NULL);
    assert_true(s.agent_psr == 0.0);
    dds_cfg = &cfg;
}

static void test_extracted_priority_kept(void **state)
{
    (void)state;
    init_rules("[{\"sample_rate\":0}]", 0);
    for (int p = -1; p <= 2; p++) {
        dds_trace t;
        dds_trace_context c;
        memset(&t, 0, sizeof t);
        memset(&c, 0, sizeof c);
        t.ctx = &c;
        t.trace_id_lo = KEEP_ID;
        c.has_priority = 1;
        c.priority = p;
        dds_sampler_decide(&t, NULL);
        assert_int_equal(t.sampling.decided, 1);
        assert_int_equal(t.sampling.priority, p);
        assert_int_equal(t.sampling.mechanism, DDS_MECH_NONE);
        assert_true(t.sampling.rule_psr < 0 && t.sampling.agent_psr < 0 &&
                    t.sampling.limit_psr < 0 && t.sampling.ksr < 0);
    }
}

/* decide on several threads while the rates change under them. */
static int stop_writer;

static void *rates_writer(void *arg)
{
    (void)arg;
    const char *a = "{\"rate_by_service\":{\"service:web-store,env:prod\":0.5,\"service:,env:\":1}}";
    const char *b = "{\"rate_by_service\":{\"service:x,env:y\":0.1}}";
    for (int i = 0; !__atomic_load_n(&stop_writer, __ATOMIC_RELAXED); i++) {
        const char *j = (i & 1) ? a : b;
        dds_sampler_update_rates(j, strlen(j));
    }
    return NULL;
}

static void *decider(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        dds_trace t;
        memset(&t, 0, sizeof t);
        t.ctx = &dds_context_none;
        t.trace_id_lo = (uint64_t)i * 7919 + 1;
        dds_sampler_decide(&t, NULL);
        assert_true(t.sampling.agent_psr == 0.5 || t.sampling.agent_psr == 1.0);
    }
    return NULL;
}

static void test_concurrent_rates(void **state)
{
    (void)state;
    init_rules(NULL, 0);
    pthread_t w, d[4];
    __atomic_store_n(&stop_writer, 0, __ATOMIC_RELAXED);
    pthread_create(&w, NULL, rates_writer, NULL);
    for (int i = 0; i < 4; i++)
        pthread_create(&d[i], NULL, decider, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(d[i], NULL);
    __atomic_store_n(&stop_writer, 1, __ATOMIC_RELAXED);
    pthread_join(w, NULL);
}

/* The env of the agent's rate key and the tags rules match are the root's
 * tags as sent: its own meta, else DD_ENV / DD_VERSION, else DD_TAGS. */
static void test_process_tags_for_rules_and_rates(void **state)
{
    (void)state;
    dds_kv tags[2] = {{"env", "prod"}, {"team", "pay"}};
    cfg.env = "";
    cfg.version = "";
    cfg.tags = tags;
    cfg.ntags = 2;
    const char *j = "{\"rate_by_service\":{\"service:web-store,env:prod\":0,"
                    "\"service:web-store,env:qa\":1,\"service:,env:\":1}}";
    dds_sampler_update_rates(j, strlen(j));
    init_rules("[{\"tags\":{\"team\":\"pa?\",\"version\":\"1.*\"},\"sample_rate\":0.25}]", 0);
    /* env from DD_TAGS: the "env:prod" key, not the default. */
    dds_sampling s = decide(KEEP_ID, "a", NULL, NULL, NULL);
    assert_int_equal(s.mechanism, DDS_MECH_AGENT_RATE);
    assert_true(s.agent_psr == 0.0);
    assert_int_equal(s.priority, DDS_PRIO_AUTO_REJECT);
    /* DD_ENV wins over DD_TAGS; the span's own tag over both. */
    cfg.env = "qa";
    assert_true(decide(DROP_ID, "a", NULL, NULL, NULL).agent_psr == 1.0);
    assert_true(decide(DROP_ID, "a", NULL, "env", "prod").agent_psr == 0.0);
    /* Rule tags: team from DD_TAGS, version from DD_VERSION. */
    cfg.version = "1.4";
    s = decide(KEEP_ID, "a", NULL, NULL, NULL);
    assert_int_equal(s.mechanism, DDS_MECH_RULE);
    assert_true(s.rule_psr == 0.25);
    assert_int_equal(decide(KEEP_ID, "a", NULL, "team", "ops").mechanism, DDS_MECH_AGENT_RATE);
    cfg.version = "";
    assert_int_equal(decide(KEEP_ID, "a", NULL, NULL, NULL).mechanism, DDS_MECH_AGENT_RATE);
    tags[1].key = "version";
    tags[1].val = "1.9";
    assert_int_equal(decide(KEEP_ID, "a", NULL, "team", "pat").mechanism, DDS_MECH_RULE);
    cfg.tags = NULL;
    cfg.ntags = 0;
}

static void test_atfork_handlers(void **state)
{
    (void)state;
    init_rules("[{\"sample_rate\":1}]", 0);
    dds_sampler_atfork_prepare();
    dds_sampler_atfork_parent();
    dds_sampler_atfork_prepare();
    dds_sampler_atfork_child();
    assert_int_equal(decide(KEEP_ID, "a", NULL, NULL, NULL).priority, DDS_PRIO_USER_KEEP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_knuth_vectors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_glob, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limiter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules_first_match_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules_resource_and_tags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sample_rate_rule_is_last, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules_limiter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_rates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extracted_priority_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_rates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_process_tags_for_rules_and_rates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atfork_handlers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
