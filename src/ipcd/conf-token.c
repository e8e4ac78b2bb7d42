/*
 * conf-token.c - [Token NAME] sections of ipcd.conf(5): a secret, read
 * from SecretFile= or from Credential= in $CREDENTIALS_DIRECTORY, that
 * raises a connection to Role= (the `auth` command, commands.c).
 *
 * Part of one configuration load: called by config_load() on its thread,
 * one load at a time (see conf-loader.h); it takes no lock, and the Tokens
 * belong to the Config being built. Secrets are wiped before they are
 * freed, and never logged.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf-loader.h"
#include "secret.h"

static void secret_free(char *secret, size_t len)
{
        if (secret)
                explicit_bzero(secret, len);
        free(secret);
}

/* Read a secret: the whole file, one trailing newline dropped. */
static void token_read_secret(Loader *l, Token *t, const char *path)
{
        char *secret = NULL;
        size_t n = 0;
        int r;

        /* The same rule as ipcctl --token-file (secret.h). */
        r = secret_read_file(path, true, &secret, &n);
        switch (r) {
        case 0:
                break;
        case -EBADFD:
                loader_error(l, "[Token %s]: %s is not a regular file", t->name, path);
                return;
        case -EPERM:
                loader_error(l, "[Token %s]: %s is readable by everyone; chmod o-r it", t->name,
                             path);
                return;
        case -EFBIG:
                loader_error(l, "[Token %s]: %s is longer than %d bytes", t->name, path,
                             SECRET_FILE_MAX);
                return;
        case -ENODATA:
                loader_error(l, "[Token %s]: %s is empty", t->name, path);
                return;
        case -EINVAL:
                loader_error(l, "[Token %s]: %s holds more than one line (or a NUL byte)", t->name,
                             path);
                return;
        default:
                loader_error(l, "[Token %s]: cannot read %s: %s", t->name, path, strerror(-r));
                return;
        }
        if (n < TOKEN_SECRET_MIN) {
                loader_error(l,
                             "[Token %s]: the secret in %s is %zu bytes; at least %d are needed "
                             "(e.g. head -c 24 /dev/urandom | base64)",
                             t->name, path, n, TOKEN_SECRET_MIN);
                secret_free(secret, n);
                return;
        }
        secret_free(t->secret, t->secret_len);
        t->secret = secret;
        t->secret_len = n;
}

static Token *loader_token(Loader *l, const char *name)
{
        Config *c = l->config;
        Token *t;

        for (size_t i = 0; i < c->n_tokens; i++)
                if (strcmp(c->tokens[i].name, name) == 0)
                        return &c->tokens[i];
        t = realloc(c->tokens, (c->n_tokens + 1) * sizeof(*t));
        if (!t)
                return NULL;
        c->tokens = t;
        t = &c->tokens[c->n_tokens];
        *t = (Token){.name = strdup(name), .role = ROLE_USER};
        if (!t->name || asprintf(&t->where, "%s:%u", l->path, l->line) < 0) {
                free(t->name);
                return NULL;
        }
        c->n_tokens++;
        return t;
}

int loader_handle_token(Loader *l, const char *section, const char *name, const char *value)
{
        Token *t;

        if (!*section) {
                loader_error(l, "[Token] needs a name: [Token NAME]");
                return 1;
        }
        t = loader_token(l, section);
        if (!t)
                return 0;
        if (strcmp(name, "SecretFile") == 0) {
                if (value[0] != '/')
                        loader_error(l, "SecretFile= must be an absolute path");
                else
                        token_read_secret(l, t, value);
        } else if (strcmp(name, "Credential") == 0) {
                const char *dir = getenv("CREDENTIALS_DIRECTORY");
                char path[4096];

                if (!*value || strchr(value, '/'))
                        loader_error(l, "Credential= takes a credential name, not '%s'", value);
                else if (!dir || !*dir)
                        loader_error(l,
                                     "Credential=%s: no $CREDENTIALS_DIRECTORY (give the unit "
                                     "LoadCredential=%s:PATH)",
                                     value, value);
                else {
                        snprintf(path, sizeof(path), "%s/%s", dir, value);
                        token_read_secret(l, t, path);
                }
        } else if (strcmp(name, "Role") == 0)
                loader_set_role(l, name, value, &t->role);
        else
                loader_error(l, "unknown key %s= in [Token %s]", name, section);
        return 1;
}

void loader_check_tokens(Loader *l)
{
        const Config *c = l->config;

        for (size_t i = 0; i < c->n_tokens; i++)
                if (!c->tokens[i].secret) {
                        (void)buffer_printf(l->errors,
                                            "%s: [Token %s] needs SecretFile= or Credential= "
                                            "with a readable, non-empty secret\n",
                                            c->tokens[i].where, c->tokens[i].name);
                        l->n_errors++;
                }
}

void token_done(Token *t)
{
        free(t->name);
        secret_free(t->secret, t->secret_len);
        free(t->where);
}
