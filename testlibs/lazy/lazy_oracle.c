/*
 * lazy_oracle: replays lazy-binding steps with the host's own dlopen, so
 * tests/lazy.rs can compare mmld with glibc on the same fixtures. Not a
 * library: the tests compile it with gcc. Each argument is one step:
 *
 *   open:PATH:MODE[:global]   dlopen(PATH, RTLD_LAZY or RTLD_NOW [| RTLD_GLOBAL]);
 *                             MODE is lazy or now; prints "open=ok" or "open=error"
 *   close:N                   dlclose(handle N); prints "close=ok"
 *   int:N:SYM:ARG             int SYM(int ARG); prints "SYM=<result>"
 *   dbl:N:SYM                 double SYM(void); prints "SYM=<the double's bits in hex>"
 *
 * Handles are numbered from 0 in open order (failed opens too). Output is
 * line-buffered: a step that ends the process (glibc's "symbol lookup
 * error") leaves every earlier line behind.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *handles[16];
static int nhandles;

static void *symbol(const char *n, const char *name)
{
    int i = atoi(n);
    void *p = (i >= 0 && i < nhandles && handles[i]) ? dlsym(handles[i], name) : NULL;
    if (!p) {
        printf("error:%s\n", name);
        exit(1);
    }
    return p;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        char *verb = strtok(argv[i], ":");
        if (!verb)
            continue;
        if (strcmp(verb, "open") == 0) {
            char *path = strtok(NULL, ":");
            char *mode = strtok(NULL, ":");
            char *extra = strtok(NULL, ":");
            int flags = (mode && strcmp(mode, "lazy") == 0) ? RTLD_LAZY : RTLD_NOW;
            if (extra && strcmp(extra, "global") == 0)
                flags |= RTLD_GLOBAL;
            handles[nhandles] = nhandles < 16 ? dlopen(path, flags) : NULL;
            printf("open=%s\n", handles[nhandles] ? "ok" : "error");
            nhandles++;
        } else if (strcmp(verb, "close") == 0) {
            int n = atoi(strtok(NULL, ":"));
            printf("close=%s\n", dlclose(handles[n]) == 0 ? "ok" : "error");
            handles[n] = NULL;
        } else if (strcmp(verb, "int") == 0) {
            char *n = strtok(NULL, ":");
            char *name = strtok(NULL, ":");
            int arg = atoi(strtok(NULL, ":"));
            int (*f)(int) = (int (*)(int))symbol(n, name);
            printf("%s=%d\n", name, f(arg));
        } else if (strcmp(verb, "dbl") == 0) {
            char *n = strtok(NULL, ":");
            char *name = strtok(NULL, ":");
            double (*f)(void) = (double (*)(void))symbol(n, name);
            double r = f();
            unsigned long long bits;
            memcpy(&bits, &r, sizeof bits);
            printf("%s=%016llx\n", name, bits);
        }
    }
    return 0;
}
