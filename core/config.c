/* See config.h. */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const dds_config *dds_cfg;

static const char *env_get(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

/* Set and non-empty. */
static const char *env_val(char *const *envp, const char *name)
{
    const char *v = env_get(envp, name);
    return (v && v[0]) ? v : NULL;
}

static char *xstrdup(const char *s) { return strdup(s ? s : ""); }

int dds_config_parse_bool(const char *s)
{
    static const char *t[] = {"1", "true", "yes", "on", "y", "t"};
    static const char *f[] = {"0", "false", "no", "off", "n", "f"};
    if (s == NULL)
        return -1;
    while (isspace((unsigned char)*s))
        s++;
    size_t len = strlen(s);
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    for (size_t i = 0; i < sizeof t / sizeof *t; i++)
        if (len == strlen(t[i]) && strncasecmp(s, t[i], len) == 0)
            return 1;
    for (size_t i = 0; i < sizeof f / sizeof *f; i++)
        if (len == strlen(f[i]) && strncasecmp(s, f[i], len) == 0)
            return 0;
    return -1;
}

static void load_bool(char *const *envp, const char *name, int *out)
{
    const char *v = env_val(envp, name);
    if (v == NULL)
        return;
    int b = dds_config_parse_bool(v);
    if (b < 0)
        dds_log(DDS_LOG_WARN, "%s=\"%.64s\" is not a boolean (true/false); using %s", name, v,
                *out ? "true" : "false");
    else
        *out = b;
}

static int parse_long(const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    while (*end && isspace((unsigned char)*end))
        end++;
    if (errno || end == v || *end || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

static void load_int(char *const *envp, const char *name, long lo, long hi, int *out)
{
    const char *v = env_val(envp, name);
    long x;
    if (v == NULL)
        return;
    if (parse_long(v, lo, hi, &x) < 0)
        dds_log(DDS_LOG_WARN, "%s=\"%.64s\" is not an integer in [%ld, %ld]; using %d", name, v, lo, hi,
                *out);
    else
        *out = (int)x;
}

static int parse_double(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    while (*end && isspace((unsigned char)*end))
        end++;
    if (errno || end == v || *end || isnan(x) || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

static char *trim_dup(const char *s, size_t len)
{
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    char *r = malloc(len + 1);
    if (r) {
        memcpy(r, s, len);
        r[len] = '\0';
    }
    return r;
}

/* DD_TAGS: split on ',' if any, else on spaces; key:value on the first ':'. */
static void load_tags(dds_config *c, const char *v)
{
    char sep = strchr(v, ',') ? ',' : ' ';
    const char *p = v;
    while (*p) {
        const char *e = strchr(p, sep);
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const char *colon = memchr(p, ':', len);
        char *key = trim_dup(p, colon ? (size_t)(colon - p) : len);
        char *val = colon ? trim_dup(colon + 1, len - (size_t)(colon - p) - 1) : xstrdup("");
        if (key && val && key[0]) {
            int i;
            for (i = 0; i < c->ntags; i++)
                if (strcmp(c->tags[i].key, key) == 0)
                    break;
            if (i < c->ntags) { /* last duplicate wins */
                free(c->tags[i].val);
                c->tags[i].val = val;
                free(key);
            } else {
                dds_kv *nt = realloc(c->tags, (size_t)(c->ntags + 1) * sizeof *nt);
                if (nt) {
                    c->tags = nt;
                    c->tags[c->ntags++] = (dds_kv){key, val};
                } else {
                    free(key);
                    free(val);
                }
            }
        } else {
            if (key && !key[0] && len > 0 && !(len == 1 && isspace((unsigned char)*p)))
                dds_log(DDS_LOG_WARN, "DD_TAGS: item \"%.*s\" has an empty key; skipped", (int)len, p);
            free(key);
            free(val);
        }
        if (!e)
            break;
        p = e + 1;
    }
}

int dds_config_parse_styles(const char *s, dds_style_list *out)
{
    int rc = 0;
    out->n = 0;
    const char *p = s;
    while (*p) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        const char *b = p;
        while (*p && *p != ',' && !isspace((unsigned char)*p))
            p++;
        size_t len = (size_t)(p - b);
        int st = 0;
        if (len == 7 && strncasecmp(b, "datadog", 7) == 0)
            st = DDS_STYLE_DATADOG;
        else if (len == 12 && strncasecmp(b, "tracecontext", 12) == 0)
            st = DDS_STYLE_TRACECONTEXT;
        else if (len == 7 && strncasecmp(b, "b3multi", 7) == 0)
            st = DDS_STYLE_B3MULTI;
        else if (len == 2 && strncasecmp(b, "b3", 2) == 0)
            st = DDS_STYLE_B3;
        else if ((len == 4 && strncasecmp(b, "none", 4) == 0) ||
                 (len == 7 && strncasecmp(b, "baggage", 7) == 0))
            continue; /* none: nothing; baggage: forwarded untouched, never injected */
        else {
            rc = -1;
            continue;
        }
        int dup = 0;
        for (int i = 0; i < out->n; i++)
            dup |= out->style[i] == st;
        if (!dup && out->n < 4)
            out->style[out->n++] = st;
    }
    return rc;
}

static void load_styles(char *const *envp, const char *which, dds_style_list *out)
{
    char name[64], dep[64];
    snprintf(name, sizeof name, "DD_TRACE_PROPAGATION_STYLE_%s", which);
    snprintf(dep, sizeof dep, "DD_PROPAGATION_STYLE_%s", which);
    const char *used = name;
    const char *v = env_get(envp, name);
    if (v == NULL) {
        used = dep;
        v = env_get(envp, dep);
    }
    if (v == NULL) {
        used = "DD_TRACE_PROPAGATION_STYLE";
        v = env_get(envp, used);
    }
    if (v == NULL)
        return;
    dds_style_list l;
    if (dds_config_parse_styles(v, &l) < 0)
        dds_log(DDS_LOG_WARN, "%s=\"%.128s\" names an unknown style (known: datadog, tracecontext, b3multi, b3, none); unknown ones ignored",
                used, v);
    *out = l;
}

/* DD_TRACE_AGENT_URL > DD_AGENT_HOST/DD_TRACE_AGENT_PORT > http://localhost:8126 */
static void load_agent(dds_config *c, char *const *envp)
{
    const char *url = env_val(envp, "DD_TRACE_AGENT_URL");
    const char *host = env_val(envp, "DD_AGENT_HOST");
    int port = 8126;
    load_int(envp, "DD_TRACE_AGENT_PORT", 1, 65535, &port);
    if (url) {
        const char *path = NULL;
        if (strncmp(url, "unix://", 7) == 0)
            path = url + 7;
        else if (strncmp(url, "http+unix://", 12) == 0)
            path = url + 12;
        if (path) {
            if (path[0] == '/') {
                c->agent_is_unix = 1;
                c->agent_unix_path = xstrdup(path);
                goto build;
            }
            dds_log(DDS_LOG_WARN, "DD_TRACE_AGENT_URL=\"%.128s\": a unix socket path must be absolute; using the default agent", url);
        } else if (strncmp(url, "http://", 7) == 0) {
            const char *h = url + 7, *end = h + strcspn(h, "/?#");
            const char *hp_end = end, *colon = NULL;
            if (*h == '[') {
                const char *rb = memchr(h, ']', (size_t)(end - h));
                if (rb) {
                    c->agent_host = trim_dup(h + 1, (size_t)(rb - h - 1));
                    colon = (rb + 1 < end && rb[1] == ':') ? rb + 1 : NULL;
                }
            } else {
                colon = memchr(h, ':', (size_t)(end - h));
                c->agent_host = trim_dup(h, (size_t)((colon ? colon : hp_end) - h));
            }
            long p = 80;
            int ok = c->agent_host && c->agent_host[0];
            if (ok && colon) {
                char buf[16];
                size_t n = (size_t)(end - colon - 1);
                if (n == 0 || n >= sizeof buf)
                    ok = 0;
                else {
                    memcpy(buf, colon + 1, n);
                    buf[n] = '\0';
                    ok = parse_long(buf, 1, 65535, &p) == 0;
                }
            }
            if (ok) {
                c->agent_port = (int)p;
                goto build;
            }
            free(c->agent_host);
            c->agent_host = NULL;
            dds_log(DDS_LOG_WARN, "DD_TRACE_AGENT_URL=\"%.128s\" is not a valid http:// URL; using the default agent", url);
        } else {
            dds_log(DDS_LOG_WARN, "DD_TRACE_AGENT_URL=\"%.128s\": unsupported scheme (use http:// or unix://); using the default agent", url);
        }
    }
    c->agent_host = xstrdup(host ? host : "localhost");
    c->agent_port = port;
build:;
    char buf[600];
    if (c->agent_is_unix)
        snprintf(buf, sizeof buf, "unix://%s", c->agent_unix_path);
    else if (strchr(c->agent_host, ':'))
        snprintf(buf, sizeof buf, "http://[%s]:%d", c->agent_host, c->agent_port);
    else
        snprintf(buf, sizeof buf, "http://%s:%d", c->agent_host, c->agent_port);
    c->agent_url = xstrdup(buf);
}

void dds_config_load(dds_config *c, char *const *envp, const char *prog_name)
{
    memset(c, 0, sizeof *c);
    c->enabled = 1;
    c->startup_logs = 1;
    c->trace_id_128 = 1;
    c->rate_limit = 100;
    c->x_datadog_tags_max_length = 512;
    c->max_queued_spans = 10000;
    c->flush_interval_ms = 1000;
    c->exit_timeout_ms = 1000;
    c->integrations = DDS_INTEG_ALL;
    c->inject.n = c->extract.n = 2;
    c->inject.style[0] = c->extract.style[0] = DDS_STYLE_DATADOG;
    c->inject.style[1] = c->extract.style[1] = DDS_STYLE_TRACECONTEXT;

    /* The log first, so that every warning below reaches it. */
    load_bool(envp, "DD_TRACE_DEBUG", &c->debug);
    const char *lf = env_val(envp, "DD_TRACE_LOG_FILE");
    c->log_file = lf ? xstrdup(lf) : NULL;
    dds_log_configure(c->log_file, c->debug);

    load_bool(envp, "DD_TRACE_ENABLED", &c->enabled);
    load_bool(envp, "DD_TRACE_STARTUP_LOGS", &c->startup_logs);
    load_bool(envp, "DD_TRACE_128_BIT_TRACEID_GENERATION_ENABLED", &c->trace_id_128);

    const char *v = env_val(envp, "DD_SERVICE");
    c->service = xstrdup(v ? v : (prog_name && prog_name[0] ? prog_name : "unnamed-c-service"));
    c->env = xstrdup(env_val(envp, "DD_ENV"));
    c->version = xstrdup(env_val(envp, "DD_VERSION"));
    if ((v = env_val(envp, "DD_TAGS")) != NULL)
        load_tags(c, v);

    load_agent(c, envp);

    load_styles(envp, "INJECT", &c->inject);
    load_styles(envp, "EXTRACT", &c->extract);
    if ((v = env_val(envp, "DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT")) != NULL) {
        if (strcasecmp(v, "continue") == 0)
            c->extract_behavior = DDS_EXTRACT_CONTINUE;
        else if (strcasecmp(v, "restart") == 0)
            c->extract_behavior = DDS_EXTRACT_RESTART;
        else if (strcasecmp(v, "ignore") == 0)
            c->extract_behavior = DDS_EXTRACT_IGNORE;
        else
            dds_log(DDS_LOG_WARN, "DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT=\"%.64s\" is not continue/restart/ignore; using continue", v);
    }
    load_bool(envp, "DD_TRACE_PROPAGATION_EXTRACT_FIRST", &c->extract_first);
    load_int(envp, "DD_TRACE_X_DATADOG_TAGS_MAX_LENGTH", 0, 512, &c->x_datadog_tags_max_length);

    if ((v = env_val(envp, "DD_TRACE_SAMPLE_RATE")) != NULL) {
        if (parse_double(v, 0.0, 1.0, &c->sample_rate) < 0)
            dds_log(DDS_LOG_WARN, "DD_TRACE_SAMPLE_RATE=\"%.64s\" is not a number in [0, 1]; ignored", v);
        else
            c->has_sample_rate = 1;
    }
    if ((v = env_val(envp, "DD_TRACE_SAMPLING_RULES")) != NULL)
        c->sampling_rules_json = xstrdup(v);
    if ((v = env_val(envp, "DD_TRACE_RATE_LIMIT")) != NULL) {
        double r;
        if (parse_double(v, 0.0, 1e9, &r) < 0 || r <= 0)
            dds_log(DDS_LOG_WARN, "DD_TRACE_RATE_LIMIT=\"%.64s\" is not a positive number; using 100", v);
        else
            c->rate_limit = r;
    }

    v = env_get(envp, "DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP");
    c->query_regexp = v ? xstrdup(v) : NULL;

    int q = (int)c->max_queued_spans;
    load_int(envp, "DDSHIM_MAX_QUEUED_SPANS", 1, 10000000, &q);
    c->max_queued_spans = (size_t)q;
    load_int(envp, "DDSHIM_FLUSH_INTERVAL_MS", 10, 600000, &c->flush_interval_ms);
    load_int(envp, "DDSHIM_EXIT_TIMEOUT_MS", 0, 60000, &c->exit_timeout_ms);
    if ((v = env_val(envp, "DDSHIM_INTEGRATIONS")) != NULL) {
        int mask = 0, bad = 0;
        const char *p = v;
        while (*p) {
            while (*p == ',' || isspace((unsigned char)*p))
                p++;
            const char *b = p;
            while (*p && *p != ',' && !isspace((unsigned char)*p))
                p++;
            size_t len = (size_t)(p - b);
            if (!len)
                break;
            if (len == 11 && !strncasecmp(b, "http_client", len)) mask |= DDS_INTEG_HTTP_CLIENT;
            else if (len == 11 && !strncasecmp(b, "http_server", len)) mask |= DDS_INTEG_HTTP_SERVER;
            else if (len == 4 && !strncasecmp(b, "http", len)) mask |= DDS_INTEG_HTTP_CLIENT | DDS_INTEG_HTTP_SERVER;
            else if (len == 8 && !strncasecmp(b, "postgres", len)) mask |= DDS_INTEG_POSTGRES;
            else if (len == 5 && !strncasecmp(b, "redis", len)) mask |= DDS_INTEG_REDIS;
            else if (len == 3 && !strncasecmp(b, "all", len)) mask |= DDS_INTEG_ALL;
            else if (len == 4 && !strncasecmp(b, "none", len)) ;
            else bad = 1;
        }
        if (bad)
            dds_log(DDS_LOG_WARN, "DDSHIM_INTEGRATIONS=\"%.64s\" names an unknown integration (known: http, http_client, http_server, postgres, redis, all, none); unknown ones ignored", v);
        c->integrations = mask;
    }
}

void dds_config_free(dds_config *c)
{
    free(c->service);
    free(c->env);
    free(c->version);
    for (int i = 0; i < c->ntags; i++) {
        free(c->tags[i].key);
        free(c->tags[i].val);
    }
    free(c->tags);
    free(c->agent_url);
    free(c->agent_host);
    free(c->agent_unix_path);
    free(c->sampling_rules_json);
    free(c->query_regexp);
    free(c->log_file);
    memset(c, 0, sizeof *c);
}

/* JSON string escaping into a bounded buffer. */
static size_t json_str(char *buf, size_t cap, size_t off, const char *s)
{
    if (off < cap)
        buf[off] = '"';
    off++;
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[8];
        const char *out = esc;
        if (ch == '"' || ch == '\\')
            snprintf(esc, sizeof esc, "\\%c", ch);
        else if (ch < 0x20)
            snprintf(esc, sizeof esc, "\\u%04x", ch);
        else {
            esc[0] = (char)ch;
            esc[1] = '\0';
        }
        for (; *out; out++, off++)
            if (off < cap)
                buf[off] = *out;
    }
    if (off < cap)
        buf[off] = '"';
    return off + 1;
}

static size_t json_raw(char *buf, size_t cap, size_t off, const char *s)
{
    for (; *s; s++, off++)
        if (off < cap)
            buf[off] = *s;
    return off;
}

static const char *style_name(int st)
{
    switch (st) {
    case DDS_STYLE_DATADOG: return "datadog";
    case DDS_STYLE_TRACECONTEXT: return "tracecontext";
    case DDS_STYLE_B3MULTI: return "b3multi";
    case DDS_STYLE_B3: return "b3";
    }
    return "?";
}

static size_t json_styles(char *buf, size_t cap, size_t off, const dds_style_list *l)
{
    off = json_raw(buf, cap, off, "[");
    for (int i = 0; i < l->n; i++) {
        if (i)
            off = json_raw(buf, cap, off, ",");
        off = json_str(buf, cap, off, style_name(l->style[i]));
    }
    return json_raw(buf, cap, off, "]");
}

size_t dds_config_to_json(const dds_config *c, char *buf, size_t cap)
{
    char num[64];
    size_t off = 0;
    if (cap == 0)
        return 0;
#define KEY(k) off = json_raw(buf, cap, off, off > 1 ? ",\"" k "\":" : "\"" k "\":")
#define STR(k, v) do { KEY(k); off = json_str(buf, cap, off, v); } while (0)
#define BOOL(k, v) do { KEY(k); off = json_raw(buf, cap, off, (v) ? "true" : "false"); } while (0)
#define NUM(k, fmt, v) do { KEY(k); snprintf(num, sizeof num, fmt, v); off = json_raw(buf, cap, off, num); } while (0)
    off = json_raw(buf, cap, off, "{");
    STR("version", "ddshim-0.1.0");
    STR("lang", "cpp");
    STR("service", c->service);
    STR("env", c->env);
    STR("dd_version", c->version);
    KEY("tags");
    off = json_raw(buf, cap, off, "{");
    for (int i = 0; i < c->ntags; i++) {
        if (i)
            off = json_raw(buf, cap, off, ",");
        off = json_str(buf, cap, off, c->tags[i].key);
        off = json_raw(buf, cap, off, ":");
        off = json_str(buf, cap, off, c->tags[i].val);
    }
    off = json_raw(buf, cap, off, "}");
    STR("agent_url", c->agent_url);
    BOOL("enabled", c->enabled);
    BOOL("debug", c->debug);
    BOOL("trace_128_bit_generation", c->trace_id_128);
    KEY("propagation_style_inject");
    off = json_styles(buf, cap, off, &c->inject);
    KEY("propagation_style_extract");
    off = json_styles(buf, cap, off, &c->extract);
    STR("propagation_behavior_extract",
        c->extract_behavior == DDS_EXTRACT_RESTART ? "restart"
        : c->extract_behavior == DDS_EXTRACT_IGNORE ? "ignore" : "continue");
    if (c->has_sample_rate)
        NUM("sample_rate", "%g", c->sample_rate);
    STR("sampling_rules", c->sampling_rules_json ? c->sampling_rules_json : "[]");
    NUM("rate_limit", "%g", c->rate_limit);
    BOOL("query_string_obfuscation", !(c->query_regexp && c->query_regexp[0] == '\0'));
    STR("log_file", dds_log_path());
    NUM("max_queued_spans", "%zu", c->max_queued_spans);
    NUM("flush_interval_ms", "%d", c->flush_interval_ms);
#undef KEY
#undef STR
#undef BOOL
#undef NUM
    off = json_raw(buf, cap, off, "}");
    if (off >= cap) {
        buf[cap - 1] = '\0';
        return cap - 1;
    }
    buf[off] = '\0';
    return off;
}
