/*
 * prompt.h - the terminal side of ipcctl's interactive mode: libedit's `> `
 * prompt driven through its callback interface (so that the session loop
 * can print answers and events while it is shown), printing above it, Tab
 * completion from the command names the daemon listed, and the history
 * file.
 *
 * Owns libedit's state and the names, the history path and the line in
 * progress, in one static object: libedit's callbacks take no user data.
 * ipcctl has one thread; interactive.c is the only caller.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Set libedit up and read the history (any failure is ignored). */
void prompt_init(void);
/* Save the history (mode 0600; failure ignored) and free everything. */
void prompt_done(void);

void prompt_show(void);
void prompt_hide(void);
bool prompt_shown(void);
/* Wipe the current terminal line ("\r\033[K", or a LF on a dumb one). */
void prompt_erase_line(void);
/* Around printing while the prompt may be shown: _begin wipes the prompt
 * line, _end flushes stdout (0 or -errno) and has libedit redraw the prompt
 * with what was typed so far. */
void prompt_print_begin(void);
int prompt_print_end(void);

/* The terminal is readable: feed libedit. 1 when a line is complete, with
 * *ret_line (the caller's to free; NULL at Ctrl-D) and the prompt gone;
 * 0 otherwise. */
int prompt_read_char(char **ret_line);
void prompt_history_add(const char *line);

/* The names and usages for Tab, from the payload of `help` ("USAGE -
 * description" lines); NULL forgets them. */
void prompt_set_names(const char *help, size_t len);
