/* glibc_load.c - glibc's loader timed the same way as floor.c.
 *
 * What it measures: dlopen(RTLD_NOW | RTLD_LOCAL) + dlsym of one symbol,
 * timed with CLOCK_MONOTONIC around those calls only, in a plain C process
 * (no Rust runtime, nothing else loaded).
 *
 * Why: benches/floor.rs compares the kernel floor of a load (floor.c) with
 * glibc's whole load, both measured by a small C program in a fresh process,
 * so that the 0.5x budget of mmld's targets (half of glibc's time) can be
 * set against what the kernel work alone costs. It is built with
 * gcc -O2 -Wall -Wl,-z,now -ldl (-z now: this program's own PLT is bound at
 * startup, not inside the timed region).
 *
 * Usage:
 *   glibc_load first PATH SYM     one load; prints "us T" (microseconds)
 *   glibc_load cycle N PATH SYM   N times dlopen + dlsym + dlclose; prints
 *                                 "median_us T p10 T p90 T first_iter T n N
 *                                  still_loaded 0|1" (still_loaded 1: the
 *                                 library stayed in the process after the
 *                                 last dlclose, so the cycles measured a
 *                                 reference count, not a load)
 * Errors (dlopen or dlsym failing, bad arguments): a message on stderr and
 * exit status 1 (2 for usage errors). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "timing.h"


static void fail(const char *what, const char *path) {
    const char *e = dlerror();
    fprintf(stderr, "glibc_load: %s %s: %s\n", what, path, e ? e : "(no dlerror)");
    exit(1);
}

static void usage(void) {
    fprintf(stderr, "usage: glibc_load first PATH SYM | glibc_load cycle N PATH SYM\n");
    exit(2);
}

/* dlopen + dlsym; exits on failure. Returns the handle. */
static void *open_and_get(const char *path, const char *sym) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) fail("dlopen", path);
    (void)dlerror();
    void *s = dlsym(h, sym);
    if (!s) fail("dlsym", sym);
    return h;
}

int main(int argc, char **argv) {
    use_libm();
    (void)now_us(); /* first clock_gettime (vDSO) outside timing */
    if (argc == 4 && !strcmp(argv[1], "first")) {
        double t0 = now_us();
        void *h = open_and_get(argv[2], argv[3]);
        double t1 = now_us();
        (void)h;
        printf("us %.3f\n", t1 - t0);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "cycle")) {
        char *end;
        errno = 0;
        long n = strtol(argv[2], &end, 10);
        if (errno || *end || n < 1 || n > 100000000L) usage();
        const char *path = argv[3], *sym = argv[4];
        double *t = malloc(sizeof(double) * (size_t)n);
        if (!t) {
            fprintf(stderr, "glibc_load: out of memory for the timings\n");
            return 1;
        }
        for (long i = 0; i < n; i++) {
            double t0 = now_us();
            void *h = open_and_get(path, sym);
            if (dlclose(h)) fail("dlclose", path);
            t[i] = now_us() - t0;
        }
        void *still = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
        if (still) dlclose(still);
        double first = t[0];
        qsort(t, (size_t)n, sizeof(double), cmp_double);
        printf("median_us %.3f p10 %.3f p90 %.3f first_iter %.3f n %ld still_loaded %d\n", t[n / 2], t[n / 10],
               t[n * 9 / 10], first, n, still != NULL);
        free(t);
        return 0;
    }
    usage();
}
