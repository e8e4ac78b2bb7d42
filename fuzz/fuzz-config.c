/*
 * fuzz-config.c - libFuzzer harness for config_load() (src/ipcd/conf.c,
 * with libinih and the real log.c): the input is the main configuration
 * file, handed over as ConfigOverrides.config_path (a memfd, through
 * /proc/self/fd, so no disk is touched).
 *
 * Properties checked (abort on violation): a load succeeds exactly when no
 * problem was reported; every reported problem is one line ending in LF; a
 * loaded Config has its limits in range and finds each of its commands.
 * LeakSanitizer checks that both outcomes free everything.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(cond)                                                                                \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "fuzz-config: check failed: %s (line %d)\n", #cond,       \
                                __LINE__);                                                         \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

static int fd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        (void)argc;
        (void)argv;
        fd = memfd_create("ipcd.conf", MFD_CLOEXEC);
        if (fd < 0) {
                perror("memfd_create");
                exit(1);
        }
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        /* Tokens named by Credential= must not find a real directory. */
        unsetenv("CREDENTIALS_DIRECTORY");
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        ConfigOverrides o = {.config_path = path};
        Buffer errors = BUFFER_INIT;
        Config *c = NULL;
        int r;

        if (size > 256 * 1024)
                return -1; /* not worth the time: libinih's line limit is 64 KiB */
        CHECK(ftruncate(fd, 0) == 0);
        CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);

        r = config_load(&o, &c, &errors);
        if (r == 0) {
                CHECK(errors.len == 0);
                CHECK(c);
                CHECK(c->max_clients >= 1);
                CHECK(c->max_line_bytes >= 16 && c->max_line_bytes <= 64 << 20);
                CHECK(c->queue_limit_bytes >= 1024);
                CHECK(c->max_running >= 1);
                CHECK(c->log_level >= LOG_EMERG && c->log_level <= LOG_DEBUG);
                for (size_t i = 0; i < c->n_commands; i++) {
                        CHECK(c->commands[i].has_exec && c->commands[i].argv &&
                              c->commands[i].argv[0][0] == '/');
                        CHECK(config_find_command(c, c->commands[i].name,
                                                  strlen(c->commands[i].name)) ==
                              &c->commands[i]);
                }
                for (size_t i = 0; i < c->n_tokens; i++)
                        CHECK(c->tokens[i].secret && c->tokens[i].secret_len > 0);
                config_unref(c);
        } else {
                CHECK(r == -EINVAL || r == -ENOMEM);
                CHECK(!c);
                CHECK(r == -ENOMEM || (errors.len > 0 && errors.data[errors.len - 1] == '\n'));
                /* One problem per line: no line is empty. */
                for (size_t i = 0; i + 1 < errors.len; i++)
                        CHECK(!(errors.data[i] == '\n' && errors.data[i + 1] == '\n'));
        }
        buffer_done(&errors);
        return 0;
}
