/*
 * glibc_oracle: replays a script of dlopen/dlclose/dlsym steps with the
 * host's own loader, so tests/deps.rs can compare mmld with glibc on the
 * same libraries. Not a library: the tests compile it with gcc into a
 * temporary directory. Each argument is one step:
 *
 *   open:PATH[:global|:deepbind|:nodelete]...  dlopen(RTLD_NOW | flags)
 *   close:N                                    dlclose(handle N)
 *   str:N:SYM     print "SYM=<string>"   for const char *SYM(void)
 *   int:N:SYM     print "SYM=<int>"      for int SYM(void)
 *   log:N         print "log=<orderlog_read()>" through handle N
 *   clear:N       orderlog_clear() through handle N
 *
 * Handles are numbered from 0 in open order. A failing step prints
 * "error:<dlerror()>" and exits with status 1.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *handles[64];
static int nhandles;

static void fail(const char *what)
{
    const char *e = dlerror();
    printf("error:%s: %s\n", what, e ? e : "(no dlerror)");
    exit(1);
}

static void *handle(const char *text)
{
    int n = atoi(text);
    if (n < 0 || n >= nhandles || !handles[n])
        fail("bad handle");
    return handles[n];
}

static void *symbol(const char *text, const char *name)
{
    void *p = dlsym(handle(text), name);
    if (!p)
        fail(name);
    return p;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        char *step = argv[i];
        char *verb = strtok(step, ":");
        if (!verb)
            continue;
        if (strcmp(verb, "open") == 0) {
            char *path = strtok(NULL, ":");
            int flags = RTLD_NOW;
            for (char *f = strtok(NULL, ":"); f; f = strtok(NULL, ":")) {
                if (strcmp(f, "global") == 0)
                    flags |= RTLD_GLOBAL;
                else if (strcmp(f, "deepbind") == 0)
                    flags |= RTLD_DEEPBIND;
                else if (strcmp(f, "nodelete") == 0)
                    flags |= RTLD_NODELETE;
            }
            if (nhandles == 64)
                fail("too many handles");
            handles[nhandles] = dlopen(path, flags);
            if (!handles[nhandles])
                fail(path);
            nhandles++;
        } else if (strcmp(verb, "close") == 0) {
            char *n = strtok(NULL, ":");
            if (dlclose(handle(n)) != 0)
                fail("dlclose");
            handles[atoi(n)] = NULL;
        } else if (strcmp(verb, "str") == 0) {
            char *n = strtok(NULL, ":");
            char *name = strtok(NULL, ":");
            const char *(*f)(void) = (const char *(*)(void))symbol(n, name);
            printf("%s=%s\n", name, f());
        } else if (strcmp(verb, "int") == 0) {
            char *n = strtok(NULL, ":");
            char *name = strtok(NULL, ":");
            int (*f)(void) = (int (*)(void))symbol(n, name);
            printf("%s=%d\n", name, f());
        } else if (strcmp(verb, "log") == 0) {
            const char *(*f)(void) = (const char *(*)(void))symbol(strtok(NULL, ":"), "orderlog_read");
            printf("log=%s\n", f());
        } else if (strcmp(verb, "clear") == 0) {
            void (*f)(void) = (void (*)(void))symbol(strtok(NULL, ":"), "orderlog_clear");
            f();
        } else {
            printf("error:unknown step %s\n", verb);
            return 1;
        }
        fflush(stdout);
    }
    return 0;
}
