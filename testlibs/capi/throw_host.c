/* dlopen libthrower.so, run it (a C++ exception crosses two of its frames),
 * and name each recorded frame with dladdr: the names must be the same with
 * glibc and with libmmld.so preloaded. Usage: throw_host LIBTHROWER */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { printf("dlopen: %s\n", dlerror()); return 1; }
    const char *(*run)(void) = (const char *(*)(void))dlsym(h, "thrower_run");
    int (*frames)(void ***) = (int (*)(void ***))dlsym(h, "thrower_frames");
    if (!run || !frames) { printf("dlsym: %s\n", dlerror()); return 1; }
    printf("%s\n", run());
    void **f;
    int n = frames(&f);
    for (int i = 0; i < n; i++) {
        Dl_info info;
        if (dladdr(f[i], &info) && info.dli_fname && strstr(info.dli_fname, "libthrower")) {
            const char *base = strrchr(info.dli_fname, '/');
            printf("frame: %s in %s\n", info.dli_sname ? info.dli_sname : "??", base ? base + 1 : info.dli_fname);
        }
    }
    return 0;
}
