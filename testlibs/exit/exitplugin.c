/*
 * libexitplugin: a plugin still loaded when the process exits, for the
 * exit-order and exit-race tests (tests/exit.rs). Every line goes to the
 * descriptor given to exitplugin_setup with write(2), unbuffered, so the
 * order of lines is the order of events even when the process ends.
 *
 * Its constructor registers an exit handler with __cxa_atexit for its own
 * __dso_handle (as a C++ static destructor would be registered), and its
 * destructor (DT_FINI_ARRAY) marks it finalised: exitplugin_alive() tells
 * a caller from an exit handler or the executable's destructor whether the
 * plugin is still usable.
 *
 * With a `started` descriptor >= 0 the destructor is slow: it writes one
 * byte there, then takes 100 ms before it completes, so a test can call
 * exit while another thread is inside the unload.
 */
#include <string.h>
#include <time.h>
#include <unistd.h>

extern void *__dso_handle;
extern int __cxa_atexit(void (*fn)(void *), void *arg, void *dso);

static int out_fd = -1;
static int started_fd = -1;
static int finalized;

static void say(const char *line)
{
    if (out_fd >= 0)
        (void)!write(out_fd, line, strlen(line));
}

void exitplugin_setup(int out, int started)
{
    out_fd = out;
    started_fd = started;
}

int exitplugin_alive(void)
{
    return !finalized;
}

static void at_exit_handler(void *arg)
{
    (void)arg;
    say("plugin __cxa_atexit handler\n");
}

__attribute__((constructor)) static void exitplugin_init(void)
{
    __cxa_atexit(at_exit_handler, 0, &__dso_handle);
}

__attribute__((destructor)) static void exitplugin_fini(void)
{
    if (started_fd >= 0) {
        (void)!write(started_fd, "s", 1);
        struct timespec pause = {0, 100 * 1000 * 1000};
        nanosleep(&pause, 0);
    }
    finalized = 1;
    say("plugin destructor completed\n");
}
