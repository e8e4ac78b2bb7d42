/*
 * secret.h - the one rule for a token file, used by ipcd (SecretFile=,
 * Credential=) and ipcctl (--token-file) alike: the secret is the whole
 * file, less one trailing line end (LF or CRLF).
 */
#pragma once

#include <stddef.h>

/* Longest token file either program reads. */
#define SECRET_FILE_MAX 4096

/*
 * The length of the secret in a token file's contents `buf` (n bytes):
 * -ENODATA if it is empty, -EINVAL if it holds another line end or a NUL
 * (a file of several lines is a mistake, not a secret).
 */
int secret_from_file_contents(const char *buf, size_t n, size_t *ret_len);

/*
 * Read a token file (regular, at most SECRET_FILE_MAX bytes, opened
 * without blocking on a FIFO) into a NUL-terminated, malloc'd secret.
 * -EFBIG if longer, -ENODATA if empty, -EINVAL as above, -errno else.
 * With `refuse_world_readable`, -EPERM if others may read the file.
 */
int secret_read_file(const char *path, int refuse_world_readable, char **ret, size_t *ret_len);
