/*
 * listener.h - listening sockets: taken over from systemd (socket
 * activation) or bound by the daemon itself (standalone). A Listener owns
 * its fd and, for a socket file it created, the path to remove at exit.
 * Main thread only, before the client threads start and after they end.
 */
#pragma once

#include "server.h"

/*
 * Check an fd passed by systemd: a listening stream socket, AF_UNIX, AF_INET
 * or AF_INET6, below FD_SETSIZE. Takes the fd over on success only.
 */
int listener_from_fd(int fd, Listener *l);

/* The mode (-1: leave the umask's) and group of the Unix sockets that
 * listener_bind() creates from now on. */
void listener_set_unix_access(int mode, bool has_gid, gid_t gid);

/* Bind and listen on "unix:PATH" or "tcp:HOST:PORT". */
int listener_bind(const char *spec, Listener *l);

void listener_close(Listener *l);
