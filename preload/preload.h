/*
 * preload.h — process-level state the hooks need besides real.h.
 */
#ifndef DDS_PRELOAD_H
#define DDS_PRELOAD_H

#include <sys/types.h>

/* The pid as of the constructor or the last fork child handler. A hook on a
 * tracked fd that sees getpid() != dds_pid runs in a vfork/posix_spawn child,
 * which shares the parent's memory: it must change nothing. */
extern pid_t dds_pid;

#endif
