/*
 * prompt.c - the terminal side of the interactive mode; see prompt.h.
 *
 * Tab completes the command names the daemon lets this client run (and
 * help's argument); at an argument of a known command it shows the
 * command's usage line instead. History: $XDG_STATE_HOME/ipcctl_history,
 * else ~/.ipcctl_history.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <editline/readline.h>

#include "macro.h"
#include "prompt.h"

#define PROMPT "> "

static struct {
        bool shown;     /* libedit's handler is installed */
        bool erase_ok;  /* the terminal understands "\r\033[K" */
        char *line;     /* handed over by the libedit callback */
        bool have_line; /* the callback ran (line NULL: end of input) */
        char **names;   /* the commands we may run (help), for Tab */
        char **usages;  /* their usage lines, same order */
        size_t n_names;
        char *history; /* the history file, or NULL */
} prompt;

static void on_line(char *line)
{
        prompt.line = line;
        prompt.have_line = true;
}

void prompt_show(void)
{
        /* This libedit leaves its "unbuffered" mode after each line, so the
         * handler is installed again for every prompt; newer versions stay
         * in it, and installing again is then harmless. */
        rl_callback_handler_install(PROMPT, on_line);
        prompt.shown = true;
}

void prompt_hide(void)
{
        if (prompt.shown)
                rl_callback_handler_remove();
        prompt.shown = false;
}

bool prompt_shown(void)
{
        return prompt.shown;
}

void prompt_erase_line(void)
{
        fputs(prompt.erase_ok ? "\r\033[K" : "\n", stdout);
}

void prompt_print_begin(void)
{
        if (prompt.shown)
                prompt_erase_line();
}

int prompt_print_end(void)
{
        int r = fflush(stdout) == EOF ? (errno ? -errno : -EIO) : 0;

        if (prompt.shown)
                rl_forced_update_display();
        return r;
}

int prompt_read_char(char **ret_line)
{
        prompt.have_line = false;
        rl_callback_read_char();
        if (!prompt.have_line)
                return 0;
        prompt.shown = false; /* libedit left its mode */
        *ret_line = TAKE_PTR(prompt.line);
        return 1;
}

void prompt_history_add(const char *line)
{
        add_history(line);
}

static void names_clear(void)
{
        for (size_t i = 0; i < prompt.n_names; i++) {
                free(prompt.names[i]);
                free(prompt.usages[i]);
        }
        prompt.names = mfree(prompt.names);
        prompt.usages = mfree(prompt.usages);
        prompt.n_names = 0;
}

void prompt_set_names(const char *p, size_t len)
{
        size_t n = 0;

        names_clear();
        if (!p || len == 0)
                return;
        for (size_t i = 0; i < len; i++)
                n += p[i] == '\n';
        prompt.names = calloc(n + 1, sizeof(char *));
        prompt.usages = calloc(n + 1, sizeof(char *));
        if (!prompt.names || !prompt.usages) {
                prompt.names = mfree(prompt.names);
                prompt.usages = mfree(prompt.usages);
                return;
        }
        for (const char *line = p, *end = p + len; line < end && prompt.n_names < n;) {
                const char *lf = memchr(line, '\n', (size_t)(end - line)), *sep, *sp;
                size_t ulen;

                if (!lf)
                        break;
                sep = memmem(line, (size_t)(lf - line), " - ", 3);
                ulen = sep ? (size_t)(sep - line) : (size_t)(lf - line);
                sp = memchr(line, ' ', ulen);
                if (ulen > 0) {
                        char *name = strndup(line, sp ? (size_t)(sp - line) : ulen);
                        char *usage = strndup(line, ulen);
                        if (!name || !usage) {
                                free(name);
                                free(usage);
                                break;
                        }
                        prompt.names[prompt.n_names] = name;
                        prompt.usages[prompt.n_names++] = usage;
                }
                line = lf + 1;
        }
}

/* Tab: the next command name that starts with `text`. */
static char *complete_name(const char *text, int state)
{
        static const char *const local[] = {"exit"};
        static size_t i;
        size_t len = strlen(text);

        if (state == 0)
                i = 0;
        while (i < prompt.n_names + ELEMENTSOF(local)) {
                const char *n = i < prompt.n_names ? prompt.names[i] : local[i - prompt.n_names];
                i++;
                if (strncmp(n, text, len) == 0)
                        return strdup(n);
        }
        return NULL;
}

/* Show the usage line of the command being typed, above the prompt. */
static void show_usage(const char *name, size_t len)
{
        for (size_t i = 0; i < prompt.n_names; i++)
                if (strlen(prompt.names[i]) == len && memcmp(prompt.names[i], name, len) == 0) {
                        prompt_print_begin();
                        printf("usage: %s\n", prompt.usages[i]);
                        (void)prompt_print_end();
                        return;
                }
}

static char **complete(const char *text, int start, int end)
{
        const char *line = rl_line_buffer, *w = line, *first = NULL;
        size_t first_len = 0, words = 0;

        (void)end;
        /* Never file names: nothing the daemon runs takes a local path. */
        rl_attempted_completion_over = 1;

        /* Which word is this? Count the blank-separated words before it. */
        while (w < line + start) {
                while (w < line + start && (*w == ' ' || *w == '\t'))
                        w++;
                if (w >= line + start)
                        break;
                if (words == 0)
                        first = w;
                while (w < line + start && *w != ' ' && *w != '\t')
                        w++;
                if (words == 0)
                        first_len = (size_t)(w - first);
                words++;
        }
        if (words == 0 || (words == 1 && first_len == 4 && memcmp(first, "help", 4) == 0))
                return rl_completion_matches(text, complete_name);
        show_usage(first, first_len);
        return NULL;
}

static char *history_path(void)
{
        const char *dir = getenv("XDG_STATE_HOME"), *file = "ipcctl_history";
        char *path;

        if (!dir || dir[0] != '/') {
                dir = getenv("HOME");
                if (!dir || dir[0] != '/') {
                        struct passwd *pw = getpwuid(getuid());
                        dir = pw ? pw->pw_dir : NULL;
                }
                if (!dir || dir[0] != '/')
                        return NULL;
                file = ".ipcctl_history";
        }
        path = malloc(strlen(dir) + strlen(file) + 2);
        if (path)
                sprintf(path, "%s/%s", dir, file);
        return path;
}

void prompt_init(void)
{
        const char *term = getenv("TERM");

        prompt.erase_ok = term && *term && strcmp(term, "dumb") != 0;
        rl_readline_name = "ipcctl";
        rl_attempted_completion_function = complete;
        using_history();
        stifle_history(1000);
        prompt.history = history_path();
        if (prompt.history)
                (void)read_history(prompt.history);
}

void prompt_done(void)
{
        prompt_hide();
        /* The history may hold arguments the user would rather keep to
         * themselves; failure to save it is not worth a word. */
        if (prompt.history && write_history(prompt.history) == 0)
                (void)chmod(prompt.history, 0600);
        prompt.history = mfree(prompt.history);
        prompt.line = mfree(prompt.line);
        names_clear();
}
