/* timing.h - the clock and the sort both floor programs time with, so that
 * the floor and glibc's side are measured the same way. */
#ifndef MMLD_FLOOR_TIMING_H
#define MMLD_FLOOR_TIMING_H

#include <math.h>
#include <time.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Both programs link libm and call it once before timing, as the Rust
 * workers of the other benches do (benches/common/proto.rs): the libm that
 * libsqlite3 and libstdc++ need is then already in the process, for the
 * floor and for glibc alike. */
static void use_libm(void) {
    volatile double x = 27.0;
    x = cbrt(x);
    (void)x;
}

/* qsort comparator for doubles, for medians. */
static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#endif
