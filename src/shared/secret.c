/*
 * secret.c - token files; see secret.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "macro.h"
#include "secret.h"

int secret_from_file_contents(const char *buf, size_t n, size_t *ret_len)
{
        if (n > 0 && buf[n - 1] == '\n')
                n--;
        if (n > 0 && buf[n - 1] == '\r')
                n--;
        if (n == 0)
                return -ENODATA;
        if (memchr(buf, '\n', n) || memchr(buf, '\r', n) || memchr(buf, '\0', n))
                return -EINVAL;
        *ret_len = n;
        return 0;
}

int secret_read_file(const char *path, int refuse_world_readable, char **ret, size_t *ret_len)
{
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        char buf[SECRET_FILE_MAX + 1];
        struct stat st;
        size_t n = 0, len;
        char *s;
        int r;

        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADFD;
        if (refuse_world_readable && (st.st_mode & S_IROTH))
                return -EPERM;
        for (;;) {
                ssize_t k = read(fd, buf + n, sizeof(buf) - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        explicit_bzero(buf, sizeof(buf));
                        return r;
                }
                if (k == 0)
                        break;
                n += (size_t)k;
                if (n == sizeof(buf)) {
                        explicit_bzero(buf, sizeof(buf));
                        return -EFBIG;
                }
        }
        r = secret_from_file_contents(buf, n, &len);
        if (r < 0) {
                explicit_bzero(buf, sizeof(buf));
                return r;
        }
        s = malloc(len + 1);
        if (!s) {
                explicit_bzero(buf, sizeof(buf));
                return -ENOMEM;
        }
        memcpy(s, buf, len);
        s[len] = '\0';
        explicit_bzero(buf, sizeof(buf));
        *ret = s;
        *ret_len = len;
        return 0;
}
