/*
 * init.c — ddshim's life inside the host process.
 *
 * The constructor only reads the environment (config) and registers the fork
 * handlers; everything heavier (sampler rules, the query regexp, the writer
 * thread, libcurl) starts on the first span, in dds_ready(). A setuid process
 * (AT_SECURE) or DD_TRACE_ENABLED=false leaves ddshim inert: every hook passes
 * straight through. At exit, queued spans get one flush with a deadline.
 */
#define _GNU_SOURCE
#include "real.h"
#include "preload.h"

#include "config.h"
#include "conn.h"
#include "guard.h"
#include "ids.h"
#include "log.h"
#include "queue.h"
#include "sampler.h"
#include "span.h"
#include "url.h"
#include "writer.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int dds_active;
pid_t dds_pid;
static dds_config config;
static pthread_once_t ready_once = PTHREAD_ONCE_INIT;
/* 0 not started, 1 running, 2 done; init_here marks the thread running it. */
static int init_state;
static __thread int init_here __attribute__((tls_model("initial-exec")));

static void lazy_init(void)
{
    int was = dds_in_shim;
    dds_in_shim = 1;
    init_here = 1;
    __atomic_store_n(&init_state, 1, __ATOMIC_RELEASE);
    if (dds_url_init(config.query_regexp) < 0)
        dds_log(DDS_LOG_WARN, "DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP does not compile; using the default");
    if (dds_sampler_init(&config) < 0)
        dds_log(DDS_LOG_WARN, "DD_TRACE_SAMPLING_RULES is not a valid JSON array of rules; sampling rules ignored");
    dds_trace_decide_hook = dds_sampler_decide;
    dds_writer_rates_hook = dds_sampler_update_rates;
    dds_trace_complete_hook = dds_writer_enqueue;
    dds_writer_start();
    __atomic_store_n(&init_state, 2, __ATOMIC_RELEASE);
    init_here = 0;
    dds_in_shim = was;
}

/* A fork while another thread is inside lazy_init would leave the child with
 * pthread_once "in progress" from an older fork generation, so the child runs
 * lazy_init again, on the locks (PCRE2's JIT allocator, jansson, malloc
 * arenas of the libraries it calls) that the vanished thread held: a hang.
 * So the fork waits for the initialisation to finish. Bounded: past 2 s the
 * fork goes on as it would without ddshim. */
static void wait_for_lazy_init(void)
{
    if (init_here)
        return;
    for (int i = 0; i < 2000 && __atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 1; i++) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int dds_ready(void)
{
    if (!dds_active)
        return 0;
    pthread_once(&ready_once, lazy_init);
    return __atomic_load_n(&init_state, __ATOMIC_ACQUIRE) == 2;
}

static void atfork_prepare(void)
{
    if (dds_active) {
        wait_for_lazy_init(); /* first: lazy_init takes the locks below */
        dds_sampler_atfork_prepare();
        dds_writer_atfork_prepare();
        dds_conn_atfork_prepare();
    }
}

static void atfork_parent(void)
{
    if (dds_active) {
        dds_conn_atfork_release();
        dds_writer_atfork_parent();
        dds_sampler_atfork_parent();
    }
}

static void atfork_child(void)
{
    dds_pid = getpid();
    dds_id_reseed();
    if (!dds_active)
        return;
    dds_log_reset_after_fork();
    dds_conn_atfork_release();
    dds_sampler_atfork_child();
    dds_writer_atfork_child();
}

__attribute__((constructor)) static void dds_constructor(void)
{
    int saved = errno;
    dds_in_shim = 1;
    dds_pid = getpid();
    if (getauxval(AT_SECURE)) {
        /* setuid/setgid: stay inert, read nothing from the environment. */
        dds_in_shim = 0;
        errno = saved;
        return;
    }
    dds_config_load(&config, environ, program_invocation_short_name);
    dds_cfg = &config;
    if (config.enabled) {
        dds_writer_init(&config);
        pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
        __atomic_store_n(&dds_active, 1, __ATOMIC_RELEASE);
    } else {
        DDS_DEBUG("DD_TRACE_ENABLED=false: ddshim is passive");
    }
    dds_in_shim = 0;
    errno = saved;
}

__attribute__((destructor)) static void dds_destructor(void)
{
    if (!dds_active || getpid() != dds_pid)
        return;
    int saved = errno;
    dds_in_shim = 1;
    dds_writer_flush_at_exit();
    dds_in_shim = 0;
    errno = saved;
}
