/*
 * exit_oracle: the glibc side of tests/exit.rs. Opens PLUGIN
 * (libexitplugin.so) with dlopen, registers an exit handler of its own,
 * and exits; the executable's own destructor (DT_FINI_ARRAY, run by
 * glibc's _dl_fini) and the exit handler each ask the plugin whether it is
 * still alive. Lines go to standard output with write(2), in event order.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int (*alive)(void);

static void report(const char *who)
{
    char line[128];
    snprintf(line, sizeof line, "%s: plugin %s\n", who, alive() ? "alive" : "finalized");
    (void)!write(1, line, strlen(line));
}

static void exe_at_exit(void)
{
    report("executable atexit handler");
}

__attribute__((destructor)) static void exe_destructor(void)
{
    report("executable destructor");
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
        printf("error:open:%s\n", dlerror());
        return 1;
    }
    void (*setup)(int, int) = (void (*)(int, int))dlsym(h, "exitplugin_setup");
    alive = (int (*)(void))dlsym(h, "exitplugin_alive");
    if (!setup || !alive)
        return 1;
    setup(1, -1);
    atexit(exe_at_exit);
    exit(0);
}
