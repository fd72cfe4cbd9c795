/*
 * guard.h — the per-thread "ddshim is working" flag.
 *
 * Set around ddshim's own work and for the whole life of its writer thread, so
 * that any libc call made while it is set (the agent connection, log writes,
 * libcurl) passes straight through the hooks untraced. Initial-exec TLS: one
 * load, no allocation, safe in a signal handler.
 */
#ifndef DDS_GUARD_H
#define DDS_GUARD_H

extern __thread int dds_in_shim __attribute__((tls_model("initial-exec")));

/* Depth of the program's own signal handlers running on this thread (see
 * hooks/signal.c). While it is non-zero the hooks pass everything through:
 * the handler may have interrupted malloc or ddshim itself. */
extern __thread int dds_in_signal __attribute__((tls_model("initial-exec")));

#endif
