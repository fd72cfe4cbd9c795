/* See sampler.h. */
#include "sampler.h"
#include "tagset.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KNUTH_FACTOR 1111111111111111111ULL
#define NS_PER_S 1000000000LL
#define LIMITER_WINDOW 9

typedef struct rule_tag {
    char *key;
    char *glob;
} rule_tag;

/* A NULL glob means "*": the common case needs no matching at all. */
typedef struct rule {
    char *service, *name, *resource;
    rule_tag *tags;
    int ntags;
    double rate;
} rule;

typedef struct rate_entry {
    char *key; /* "service:<svc>,env:<env>" as the agent wrote it */
    size_t len;
    double rate;
} rate_entry;

/* Immutable once published; replaced whole. */
typedef struct rate_table {
    int n;
    rate_entry *e;
    int has_default; /* "service:,env:" */
    double default_rate;
} rate_table;

/* Rules and limiter: written by init only, before any decide. */
static rule *g_rules;
static int g_nrules;
static dds_limiter g_limiter = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Agent rates: the lock covers a pointer swap (writer) or one lookup
 * (application threads); the old table is freed outside it. */
static pthread_mutex_t g_rates_mu = PTHREAD_MUTEX_INITIALIZER;
static rate_table *g_rates;
static unsigned g_rates_gen; /* bumped, under the lock, whenever g_rates changes */

/* The last lookup of this thread, for a service and env that are the
 * configuration's own strings (the same pointers every time): valid while
 * the table is the one it was made with. Most decisions are for the same
 * service and env; this spares them the lock and the scan. */
static __thread struct {
    unsigned gen;
    int valid;
    const char *svc, *env;
    double rate;
    int mech;
} rate_cache __attribute__((tls_model("initial-exec")));

static int64_t (*g_clock)(void);

static int64_t mono_now(void)
{
    int64_t (*clk)(void) = __atomic_load_n(&g_clock, __ATOMIC_ACQUIRE);
    if (clk != NULL)
        return clk();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

void dds_sampler_set_clock(int64_t (*now_ns)(void))
{
    __atomic_store_n(&g_clock, now_ns, __ATOMIC_RELEASE);
}

/* ------------------------------------------------------------------------ */
/* Hash and glob */

uint64_t dds_knuth_hash(uint64_t trace_id_lo)
{
    return trace_id_lo * KNUTH_FACTOR; /* mod 2^64 by unsigned wrap-around */
}

int dds_sampled_by_rate(uint64_t trace_id_lo, double rate)
{
    uint64_t threshold;
    if (rate >= 1.0)
        threshold = UINT64_MAX;
    else if (!(rate > 0.0)) /* 0, negative, NaN: the conversion below would be UB for NaN */
        threshold = 0;
    else
        threshold = (uint64_t)(rate * (double)UINT64_MAX);
    return dds_knuth_hash(trace_id_lo) <= threshold;
}

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

int dds_glob_match(const char *pattern, const char *s)
{
    const char *p = pattern ? pattern : "";
    s = s ? s : "";
    /* On a mismatch, retry from the last '*' with one more char swallowed:
     * later stars supersede earlier ones, so one backtrack point is enough. */
    const char *star = NULL, *resume = NULL;
    while (*s != '\0') {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p == '?' || (*p != '\0' && lower((unsigned char)*p) == lower((unsigned char)*s))) {
            p++;
            s++;
        } else if (star != NULL) {
            p = star + 1;
            s = ++resume;
        } else {
            return 0;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

/* ------------------------------------------------------------------------ */
/* Limiter */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

void dds_limiter_init(dds_limiter *l, double per_second, int64_t now_ns)
{
    memset(l, 0, sizeof *l);
    pthread_mutex_init(&l->mu, NULL);
    if (!(per_second > 0.0))
        per_second = 100.0;
    if (per_second > 1e9)
        per_second = 1e9;
    /* ceil() without libm, which the shim does not link. */
    l->capacity = (int64_t)per_second;
    if ((double)l->capacity < per_second)
        l->capacity++;
    if (l->capacity < 1)
        l->capacity = 1;
    l->tokens = l->capacity;
    l->interval_ns = (int64_t)((double)NS_PER_S / per_second);
    if (l->interval_ns < 1)
        l->interval_ns = 1;
    l->next_refill_ns = now_ns + l->interval_ns;
    l->second = floor_div(now_ns, NS_PER_S);
    for (int i = 0; i < LIMITER_WINDOW; i++)
        l->prev[i] = 1.0;
}

int dds_limiter_allow(dds_limiter *l, int64_t now_ns, double *effective_rate)
{
    pthread_mutex_lock(&l->mu);

    int64_t sec = floor_div(now_ns, NS_PER_S);
    if (sec > l->second) {
        /* The second that ended moves into the window; any seconds skipped
         * since had no request and count as 1.0. prev[0] is the newest. */
        int64_t k = sec - l->second;
        double cur = l->requested ? (double)l->allowed / (double)l->requested : 1.0;
        double np[LIMITER_WINDOW];
        for (int64_t i = 0; i < LIMITER_WINDOW; i++) {
            if (i < k - 1)
                np[i] = 1.0;
            else if (i == k - 1)
                np[i] = cur;
            else
                np[i] = l->prev[i - k];
        }
        memcpy(l->prev, np, sizeof np);
        l->second = sec;
        l->allowed = 0;
        l->requested = 0;
    }

    if (now_ns >= l->next_refill_ns) {
        int64_t k = (now_ns - l->next_refill_ns) / l->interval_ns + 1;
        l->tokens = k >= l->capacity - l->tokens ? l->capacity : l->tokens + k;
        l->next_refill_ns += k * l->interval_ns;
    }

    l->requested++;
    int ok = l->tokens > 0;
    if (ok) {
        l->tokens--;
        l->allowed++;
    }
    if (effective_rate != NULL) {
        double sum = 0;
        for (int i = 0; i < LIMITER_WINDOW; i++)
            sum += l->prev[i];
        *effective_rate = (sum + (double)l->allowed / (double)l->requested) / (LIMITER_WINDOW + 1);
    }

    pthread_mutex_unlock(&l->mu);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Rules */

static void free_rule(rule *r)
{
    free(r->service);
    free(r->name);
    free(r->resource);
    for (int i = 0; i < r->ntags; i++) {
        free(r->tags[i].key);
        free(r->tags[i].glob);
    }
    free(r->tags);
    memset(r, 0, sizeof *r);
}

static void free_rules(void)
{
    for (int i = 0; i < g_nrules; i++)
        free_rule(&g_rules[i]);
    free(g_rules);
    g_rules = NULL;
    g_nrules = 0;
}

/* "*" is stored as NULL so matching skips it. */
static int take_glob(json_t *v, char **out)
{
    if (!json_is_string(v))
        return -1;
    const char *s = json_string_value(v);
    free(*out);
    *out = NULL;
    if (strcmp(s, "*") == 0)
        return 0;
    *out = strdup(s);
    return *out ? 0 : -1;
}

static int parse_rule(json_t *obj, rule *r)
{
    const char *key;
    json_t *v;
    r->rate = 1.0;
    if (!json_is_object(obj))
        return -1;
    json_object_foreach(obj, key, v) {
        if (strcmp(key, "service") == 0) {
            if (take_glob(v, &r->service) < 0)
                return -1;
        } else if (strcmp(key, "name") == 0) {
            if (take_glob(v, &r->name) < 0)
                return -1;
        } else if (strcmp(key, "resource") == 0) {
            if (take_glob(v, &r->resource) < 0)
                return -1;
        } else if (strcmp(key, "sample_rate") == 0) {
            if (!json_is_number(v))
                return -1;
            double rate = json_number_value(v);
            if (!(rate >= 0.0 && rate <= 1.0))
                return -1;
            r->rate = rate;
        } else if (strcmp(key, "tags") == 0) {
            if (!json_is_object(v) || r->tags != NULL)
                return -1;
            size_t n = json_object_size(v);
            if (n == 0)
                continue;
            r->tags = calloc(n, sizeof *r->tags);
            if (r->tags == NULL)
                return -1;
            const char *tk;
            json_t *tv;
            json_object_foreach(v, tk, tv) {
                if (!json_is_string(tv))
                    return -1;
                rule_tag *t = &r->tags[r->ntags++];
                t->key = strdup(tk);
                t->glob = strdup(json_string_value(tv));
                if (t->key == NULL || t->glob == NULL)
                    return -1;
            }
        } else if (strcmp(key, "provenance") == 0) {
            /* py's remote-rule marker: harmless here. */
            if (!json_is_string(v))
                return -1;
        } else {
            return -1; /* as cpp: an unknown property is a configuration error */
        }
    }
    return 0;
}

static int only_space(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return 0;
    return 1;
}

int dds_sampler_init(const dds_config *cfg)
{
    int rc = 0;
    free_rules();
    /* A new configuration: no thread's cached rate lookup holds (its
     * strings may sit where the old one's were). */
    pthread_mutex_lock(&g_rates_mu);
    __atomic_store_n(&g_rates_gen, g_rates_gen + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_rates_mu);
    const char *json = cfg ? cfg->sampling_rules_json : NULL;
    size_t n = 0;
    json_t *root = NULL;
    if (json != NULL && !only_space(json)) {
        json_error_t err;
        root = json_loads(json, 0, &err);
        if (root == NULL || !json_is_array(root))
            rc = -1;
        else
            n = json_array_size(root);
    }
    g_rules = calloc(n + 1, sizeof *g_rules); /* + the DD_TRACE_SAMPLE_RATE rule */
    if (g_rules == NULL) {
        rc = -1;
    } else if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            rule *r = &g_rules[g_nrules++];
            if (parse_rule(json_array_get(root, i), r) < 0) {
                free_rules();
                rc = -1;
                break;
            }
        }
    }
    json_decref(root);
    if (rc < 0 && g_rules == NULL)
        g_rules = calloc(1, sizeof *g_rules);
    if (g_rules != NULL && cfg != NULL && cfg->has_sample_rate) {
        rule *r = &g_rules[g_nrules++];
        memset(r, 0, sizeof *r);
        double rate = cfg->sample_rate;
        r->rate = rate >= 0.0 && rate <= 1.0 ? rate : 1.0;
    }
    /* Set up under the lock, never re-initialising the mutex: the fork
     * handlers may hold it right now (another thread forking while this one
     * starts tracing). */
    dds_limiter fresh;
    dds_limiter_init(&fresh, cfg ? cfg->rate_limit : 100.0, mono_now());
    pthread_mutex_lock(&g_limiter.mu);
    g_limiter.capacity = fresh.capacity;
    g_limiter.tokens = fresh.tokens;
    g_limiter.interval_ns = fresh.interval_ns;
    g_limiter.next_refill_ns = fresh.next_refill_ns;
    g_limiter.second = fresh.second;
    g_limiter.allowed = fresh.allowed;
    g_limiter.requested = fresh.requested;
    memcpy(g_limiter.prev, fresh.prev, sizeof g_limiter.prev);
    pthread_mutex_unlock(&g_limiter.mu);
    pthread_mutex_destroy(&fresh.mu);
    return rc;
}

/* A tag of the local root as core/encode.c will send it: the span's own meta,
 * else DD_ENV / DD_VERSION for env / version, else DD_TAGS. Rules' tags and
 * the agent's rate keys are about these, as in cpp where they are span tags. */
static const char *root_tag(const dds_config *cfg, const dds_span *root, const char *key)
{
    const char *v = root ? dds_span_get_meta(root, key) : NULL;
    if (v != NULL || cfg == NULL)
        return v;
    if (strcmp(key, "env") == 0 && cfg->env && cfg->env[0])
        return cfg->env;
    if (strcmp(key, "version") == 0 && cfg->version && cfg->version[0])
        return cfg->version;
    for (int i = 0; i < cfg->ntags; i++)
        if (cfg->tags[i].key && strcmp(cfg->tags[i].key, key) == 0)
            return cfg->tags[i].val ? cfg->tags[i].val : "";
    return NULL;
}

/* root_tag(cfg, root, "env") in two halves, per chunk: the root's own
 * (or its tag set's), the key bits telling at once that it has none. */
static const char *root_env(const dds_span *root)
{
    uint64_t bit = dds_key_bit("env");
    if (root == NULL || (!(root->keys & bit) && !(root->tagset && (root->tagset->keys & bit))))
        return NULL;
    return dds_span_get_meta(root, "env");
}

/* The configuration's: DD_ENV, else DD_TAGS's env. */
static const char *cfg_env(const dds_config *cfg)
{
    if (cfg == NULL)
        return NULL;
    if (cfg->env && cfg->env[0])
        return cfg->env;
    for (int i = 0; i < cfg->ntags; i++)
        if (cfg->tags[i].key && strcmp(cfg->tags[i].key, "env") == 0)
            return cfg->tags[i].val ? cfg->tags[i].val : "";
    return NULL;
}

static int rule_matches(const rule *r, const char *service, const char *name,
                        const char *resource, const dds_config *cfg, const dds_span *root)
{
    if (r->service && !dds_glob_match(r->service, service))
        return 0;
    if (r->name && !dds_glob_match(r->name, name))
        return 0;
    if (r->resource && !dds_glob_match(r->resource, resource))
        return 0;
    for (int i = 0; i < r->ntags; i++) {
        const char *v = root_tag(cfg, root, r->tags[i].key);
        if (v == NULL || !dds_glob_match(r->tags[i].glob, v))
            return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Agent rates */

static void free_table(rate_table *t)
{
    if (t == NULL)
        return;
    for (int i = 0; i < t->n; i++)
        free(t->e[i].key);
    free(t->e);
    free(t);
}

static int key_is(const rate_entry *e, const char *svc, size_t sl, const char *env, size_t el)
{
    return e->len == 8 + sl + 5 + el && memcmp(e->key, "service:", 8) == 0 &&
           memcmp(e->key + 8, svc, sl) == 0 && memcmp(e->key + 8 + sl, ",env:", 5) == 0 &&
           memcmp(e->key + 13 + sl, env, el) == 0;
}

/* Exact key, then the agent's default; 1.0 / DEFAULT when neither.
 * stable: svc and env are strings that live as long as the configuration
 * (not a span's tag, whose memory is reused), so the answer may be cached. */
static void agent_rate(const char *svc, const char *env, int stable, double *rate, int *mech)
{
    if (stable && rate_cache.valid && rate_cache.svc == svc && rate_cache.env == env &&
        rate_cache.gen == __atomic_load_n(&g_rates_gen, __ATOMIC_ACQUIRE)) {
        *rate = rate_cache.rate;
        *mech = rate_cache.mech;
        return;
    }
    size_t sl = strlen(svc), el = strlen(env);
    *rate = 1.0;
    *mech = DDS_MECH_DEFAULT;
    pthread_mutex_lock(&g_rates_mu);
    unsigned gen = g_rates_gen;
    const rate_table *t = g_rates;
    if (t != NULL) {
        int found = 0;
        for (int i = 0; i < t->n; i++) {
            if (key_is(&t->e[i], svc, sl, env, el)) {
                *rate = t->e[i].rate;
                *mech = DDS_MECH_AGENT_RATE;
                found = 1;
                break;
            }
        }
        if (!found && t->has_default) {
            *rate = t->default_rate;
            *mech = DDS_MECH_AGENT_RATE;
        }
    }
    pthread_mutex_unlock(&g_rates_mu);
    if (stable) {
        rate_cache.gen = gen;
        rate_cache.svc = svc;
        rate_cache.env = env;
        rate_cache.rate = *rate;
        rate_cache.mech = *mech;
        rate_cache.valid = 1;
    }
}

void dds_sampler_update_rates(const char *json, size_t len)
{
    if (json == NULL || len == 0)
        return;
    json_error_t err;
    json_t *root = json_loadb(json, len, 0, &err);
    rate_table *t = NULL;
    json_t *rbs = root && json_is_object(root) ? json_object_get(root, "rate_by_service") : NULL;
    if (rbs == NULL || !json_is_object(rbs))
        goto out;
    t = calloc(1, sizeof *t);
    if (t == NULL)
        goto out;
    size_t n = json_object_size(rbs);
    t->e = calloc(n ? n : 1, sizeof *t->e);
    if (t->e == NULL)
        goto fail;
    const char *key;
    json_t *v;
    json_object_foreach(rbs, key, v) {
        if (!json_is_number(v))
            goto fail;
        double r = json_number_value(v);
        if (!(r >= 0.0 && r <= 1.0))
            goto fail;
        if (strcmp(key, "service:,env:") == 0) {
            t->has_default = 1;
            t->default_rate = r;
            continue;
        }
        rate_entry *e = &t->e[t->n];
        e->key = strdup(key);
        if (e->key == NULL)
            goto fail;
        e->len = strlen(key);
        e->rate = r;
        t->n++;
    }
    pthread_mutex_lock(&g_rates_mu);
    rate_table *old = g_rates;
    g_rates = t;
    __atomic_store_n(&g_rates_gen, g_rates_gen + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_rates_mu);
    free_table(old);
    t = NULL;
    goto out;
fail:
    free_table(t);
out:
    json_decref(root);
}

/* ------------------------------------------------------------------------ */

void dds_sampler_decide(dds_trace *t, const dds_span *root)
{
    if (t == NULL)
        return;
    dds_sampling *s = &t->sampling;
    s->decided = 1;
    s->rule_psr = s->agent_psr = s->limit_psr = s->ksr = -1;
    if (t->ctx->has_priority) {
        s->priority = t->ctx->priority;
        s->mechanism = DDS_MECH_NONE;
        return;
    }
    const dds_config *cfg = dds_cfg;
    const char *service = cfg && cfg->service ? cfg->service : "";
    /* The root's own env tag, else the configuration's (DD_ENV, DD_TAGS). */
    const char *span_env = root_env(root);
    const char *env = span_env ? span_env : cfg_env(cfg);
    if (env == NULL)
        env = "";
    const char *name = root && root->name ? root->name : "";
    const char *resource = root && root->resource ? root->resource : name;

    for (int i = 0; i < g_nrules; i++) {
        const rule *r = &g_rules[i];
        if (!rule_matches(r, service, name, resource, cfg, root))
            continue;
        s->mechanism = DDS_MECH_RULE;
        s->rule_psr = r->rate;
        s->ksr = r->rate;
        if (dds_sampled_by_rate(t->trace_id_lo, r->rate)) {
            double eff = 1.0;
            int ok = dds_limiter_allow(&g_limiter, mono_now(), &eff);
            s->limit_psr = eff;
            s->priority = ok ? DDS_PRIO_USER_KEEP : DDS_PRIO_USER_REJECT;
        } else {
            s->priority = DDS_PRIO_USER_REJECT;
        }
        return;
    }

    double rate;
    int mech;
    agent_rate(service, env, span_env == NULL, &rate, &mech);
    s->mechanism = mech;
    s->agent_psr = rate;
    if (mech != DDS_MECH_DEFAULT)
        s->ksr = rate;
    s->priority = dds_sampled_by_rate(t->trace_id_lo, rate) ? DDS_PRIO_AUTO_KEEP
                                                            : DDS_PRIO_AUTO_REJECT;
}

void dds_sampler_shutdown(void)
{
    free_rules();
    pthread_mutex_lock(&g_rates_mu);
    rate_table *old = g_rates;
    g_rates = NULL;
    __atomic_store_n(&g_rates_gen, g_rates_gen + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_rates_mu);
    free_table(old);
}

void dds_sampler_atfork_prepare(void)
{
    pthread_mutex_lock(&g_rates_mu);
    pthread_mutex_lock(&g_limiter.mu);
}

void dds_sampler_atfork_parent(void)
{
    pthread_mutex_unlock(&g_limiter.mu);
    pthread_mutex_unlock(&g_rates_mu);
}

void dds_sampler_atfork_child(void)
{
    pthread_mutex_unlock(&g_limiter.mu);
    pthread_mutex_unlock(&g_rates_mu);
}
