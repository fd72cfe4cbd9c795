/*
 * process.c — the ways a process ends or becomes another program without
 * running its exit handlers: _exit/_Exit (fork-per-connection servers and
 * daemons end their children this way) and the exec family. ddshim's
 * destructor never runs there, so spans still queued get one flush with the
 * usual exit deadline (DDSHIM_EXIT_TIMEOUT_MS) — only when something is
 * queued, and never in a vfork/posix_spawn child, which shares its parent's
 * memory. The real call then proceeds unchanged.
 */
#define _GNU_SOURCE
#include "guard.h"
#include "preload/preload.h"
#include "preload/real.h"
#include "queue.h"
#include "writer.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static void flush_before_leaving(void)
{
    /* Not from a signal handler: the flush locks and allocates, and the
     * handler may have interrupted malloc or ddshim itself. */
    if (!dds_active || dds_in_shim || dds_in_signal || dds_queue_pending_spans() == 0 ||
        getpid() != dds_pid)
        return;
    int e = errno;
    dds_in_shim = 1;
    dds_writer_flush_at_exit();
    dds_in_shim = 0;
    errno = e;
}

DDS_EXPORT void _exit(int status)
{
    DDS_REAL(_exit);
    flush_before_leaving();
    if (real__exit)
        real__exit(status);
    syscall(SYS_exit_group, status);
    __builtin_unreachable();
}

DDS_EXPORT void _Exit(int status)
{
    DDS_REAL(_Exit);
    flush_before_leaving();
    if (real__Exit)
        real__Exit(status);
    syscall(SYS_exit_group, status);
    __builtin_unreachable();
}

DDS_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    DDS_REAL(execve);
    flush_before_leaving();
    if (real_execve == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real_execve(path, argv, envp);
}

DDS_EXPORT int execv(const char *path, char *const argv[])
{
    DDS_REAL(execv);
    flush_before_leaving();
    if (real_execv == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real_execv(path, argv);
}

DDS_EXPORT int execvp(const char *file, char *const argv[])
{
    DDS_REAL(execvp);
    flush_before_leaving();
    if (real_execvp == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real_execvp(file, argv);
}

DDS_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    DDS_REAL(execvpe);
    flush_before_leaving();
    if (real_execvpe == NULL) {
        errno = ENOSYS;
        return -1;
    }
    return real_execvpe(file, argv, envp);
}
