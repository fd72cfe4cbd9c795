/*
 * socket.h — what other hook families need from the socket hooks.
 */
#ifndef DDS_HOOKS_SOCKET_H
#define DDS_HOOKS_SOCKET_H

/* This fd carries a protocol another integration traces (libpq, hiredis):
 * never look at it as HTTP. Cheap; safe to call repeatedly. */
void dds_socket_ignore_fd(int fd);

#endif
