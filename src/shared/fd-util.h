/*
 * fd-util.h - file descriptor flags for all three programs (sockets and
 * pipes that start blocking and are then polled).
 *
 * Acts on the descriptor it is given and nothing else; no state, callable
 * from any thread.
 */
#pragma once

#include <stdbool.h>

/* Set or clear O_NONBLOCK, keeping the other status flags. 0 or -errno. */
int fd_nonblock(int fd, bool nonblock);
