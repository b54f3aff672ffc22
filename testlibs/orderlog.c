/*
 * liborderlog: an in-memory, comma-separated event log that the other
 * dependency-tree libraries write their constructor and destructor calls
 * into (see orderlog.h). It has no constructor of its own, so the log holds
 * exactly the events of the libraries under test. Its destructor writes
 * the log to the file MMLD_ORDERLOG_EXIT names, if set: the only way to
 * see the destructors that run when the process exits (tests/deps.rs).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orderlog.h"

static char log_text[4096];
static size_t log_len;

void orderlog_add(const char *event)
{
    size_t n = strlen(event);
    /* Room for a separator, the event and the terminating NUL. */
    if (log_len + n + 2 > sizeof log_text)
        return;
    if (log_len > 0)
        log_text[log_len++] = ',';
    memcpy(log_text + log_len, event, n);
    log_len += n;
    log_text[log_len] = '\0';
}

const char *orderlog_read(void)
{
    return log_text;
}

void orderlog_clear(void)
{
    log_len = 0;
    log_text[0] = '\0';
}

__attribute__((destructor)) static void orderlog_fini(void)
{
    const char *path = getenv("MMLD_ORDERLOG_EXIT");
    if (!path || !*path)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return;
    (void)!write(fd, log_text, log_len);
    close(fd);
}
