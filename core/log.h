/*
 * log.h — ddshim's own log: warnings about bad configuration, the startup line,
 * debug lines when DD_TRACE_DEBUG is on.
 *
 * It never writes to the application's stdout/stderr unless DD_TRACE_LOG_FILE
 * says "stderr"; the default is a private file (see dds_log_open). Each line is
 * one write(2) with O_APPEND, so lines from several processes do not interleave.
 * Lines are rate-limited and the file is capped, so a tight loop of errors cannot
 * fill a disk. Safe to call from any thread; never allocates.
 */
#ifndef DDS_LOG_H
#define DDS_LOG_H

enum { DDS_LOG_ERROR = 0, DDS_LOG_WARN = 1, DDS_LOG_INFO = 2, DDS_LOG_DEBUG = 3 };

/* dest: NULL/"" = default file "${TMPDIR:-/tmp}/ddshim-<uid>.log", "stderr",
 * "off", or a path. The file is opened lazily on the first line. */
void dds_log_configure(const char *dest, int debug);
void dds_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int dds_log_debug_enabled(void);
/* One long line (the startup configuration): stamp, prefix, text, written
 * with a single writev; text must hold no newline. */
void dds_log_long(int level, const char *prefix, const char *text);
/* In a fork child: the inherited fd stays in use; the rate limit restarts. */
void dds_log_reset_after_fork(void);
/* The program closes fd (close, dup2 onto it, closefrom, close_range): if it
 * was the log's, forget it without closing, so that no line ever goes to
 * whatever the program opens under that number next; the next line reopens
 * the file. dds_log_fd_lost returns once no other thread is still writing a
 * line to that fd (bounded: at most ~50 ms, for a thread stopped mid-line),
 * so the caller may then let the close go ahead. Lock-free: callable in a
 * signal handler. Called by the close hooks (hooks/socket.c). */
int dds_log_owns_fd(int fd);
void dds_log_fd_lost(int fd);
void dds_log_fds_lost_range(unsigned lo, unsigned hi);
/* Path actually used (for the startup log and tests); "" when off. */
const char *dds_log_path(void);

#define DDS_DEBUG(...) do { if (dds_log_debug_enabled()) dds_log(DDS_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
