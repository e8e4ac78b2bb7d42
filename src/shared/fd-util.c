/*
 * fd-util.c - file descriptor flags; see fd-util.h.
 */
#include <errno.h>
#include <fcntl.h>

#include "fd-util.h"

int fd_nonblock(int fd, bool nonblock)
{
        int flags = fcntl(fd, F_GETFL), nflags;

        if (flags < 0)
                return -errno;
        nflags = nonblock ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
        if (nflags != flags && fcntl(fd, F_SETFL, nflags) < 0)
                return -errno;
        return 0;
}
