/*
 * config.h — the tracer's configuration, parsed once from the standard DD_*
 * environment variables (and a few DDSHIM_* ones of ddshim's own) into an
 * immutable struct.
 *
 * A bad value never stops anything: one warning line goes to the log
 * (core/log.h) and the default applies. preload/ loads the config in the
 * constructor and publishes it as dds_cfg; everything else only reads it.
 */
#ifndef DDS_CONFIG_H
#define DDS_CONFIG_H

#include <stddef.h>
#include "context.h"

enum { DDS_EXTRACT_CONTINUE = 0, DDS_EXTRACT_RESTART = 1, DDS_EXTRACT_IGNORE = 2 };

typedef struct dds_kv {
    char *key;
    char *val;
} dds_kv;

typedef struct dds_config {
    int enabled;           /* DD_TRACE_ENABLED (true) */
    int debug;             /* DD_TRACE_DEBUG (false) */
    int startup_logs;      /* DD_TRACE_STARTUP_LOGS (true) */
    int trace_id_128;      /* DD_TRACE_128_BIT_TRACEID_GENERATION_ENABLED (true) */
    char *service;         /* DD_SERVICE (program name) */
    char *env;             /* DD_ENV ("") */
    char *version;         /* DD_VERSION ("") */
    int ntags;             /* DD_TAGS */
    dds_kv *tags;

    /* Agent: DD_TRACE_AGENT_URL, else DD_AGENT_HOST / DD_TRACE_AGENT_PORT. */
    char *agent_url;       /* normalised: "http://host:port" or "unix:///path" */
    int agent_is_unix;
    char *agent_host;      /* TCP only; IPv6 without brackets */
    int agent_port;        /* TCP only */
    char *agent_unix_path; /* unix only */

    /* Propagation (DD_TRACE_PROPAGATION_STYLE[_INJECT|_EXTRACT]). */
    dds_style_list inject;
    dds_style_list extract;
    int extract_behavior;          /* DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT */
    int extract_first;             /* DD_TRACE_PROPAGATION_EXTRACT_FIRST (false) */
    int x_datadog_tags_max_length; /* DD_TRACE_X_DATADOG_TAGS_MAX_LENGTH (512) */

    /* Sampling. */
    int has_sample_rate;
    double sample_rate;            /* DD_TRACE_SAMPLE_RATE */
    char *sampling_rules_json;     /* DD_TRACE_SAMPLING_RULES, raw (parsed by core/sampler.c) */
    double rate_limit;             /* DD_TRACE_RATE_LIMIT (100) */

    /* HTTP. */
    char *query_regexp;            /* DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP; NULL = default, "" = off */

    /* ddshim's own. */
    char *log_file;                /* DD_TRACE_LOG_FILE: path, "stderr", "off"; NULL = default file */
    size_t max_queued_spans;       /* DDSHIM_MAX_QUEUED_SPANS (10000) */
    int flush_interval_ms;         /* DDSHIM_FLUSH_INTERVAL_MS (1000) */
    int exit_timeout_ms;           /* DDSHIM_EXIT_TIMEOUT_MS (1000): longest wait for the agent at exit */
    int integrations;              /* DDSHIM_INTEGRATIONS: bit set of DDS_INTEG_* (all) */
} dds_config;

enum { DDS_INTEG_HTTP_CLIENT = 1, DDS_INTEG_HTTP_SERVER = 2, DDS_INTEG_POSTGRES = 4,
       DDS_INTEG_REDIS = 8, DDS_INTEG_ALL = 15 };

/* Parse from a NULL-terminated environment array (environ, or a test's own).
 * prog_name: default service. Always succeeds; bad values are logged. */
void dds_config_load(dds_config *c, char *const *envp, const char *prog_name);
void dds_config_free(dds_config *c);
/* Parse a style list ("datadog,tracecontext b3"); returns 0 on success, -1 if
 * any item was unknown (known items are kept). */
int dds_config_parse_styles(const char *s, dds_style_list *out);
/* Boolean as Datadog's tracers read it: 0/false/no/off → 0, 1/true/yes/on → 1,
 * anything else → -1 (the caller logs and keeps the default). */
int dds_config_parse_bool(const char *s);
/* One-line JSON of the effective configuration (the startup log). Returns the
 * length written (truncated to cap). */
size_t dds_config_to_json(const dds_config *c, char *buf, size_t cap);

/* The process-wide configuration, set once by preload/ before any hook traces. */
extern const dds_config *dds_cfg;

#endif
