/*
 * liblazy: calls through the PLT to functions it does not define and that
 * nothing it needs defines. Linked with -z lazy, so glibc's RTLD_LAZY (and
 * mmld's lazy option) load it and bind each call on first use;
 * liblazydef.so defines the mmld_lazy_* functions except mmld_lazy_never,
 * which nothing defines.
 *
 * The argument-passing callers check that a first call (which goes
 * through the binder) delivers every argument register intact: six
 * integers, eight doubles, stack arguments, a variadic call (%al), and
 * %ymm / %zmm vectors (whose upper halves glibc's own AVX code clears with
 * vzeroupper, so a binder that saved only %xmm would corrupt them).
 */
#include <immintrin.h>

extern int mmld_lazy_late(int x);
extern int mmld_lazy_never(void);
extern double mmld_lazy_args(long a, long b, long c, long d, long e, long f,
                             double x0, double x1, double x2, double x3,
                             double x4, double x5, double x6, double x7,
                             long s0, double s1);
extern double mmld_lazy_varargs(int n, ...);
__attribute__((target("avx"))) extern __m256d mmld_lazy_ymm(__m256d a, __m256d b,
                                                             __m256d c, __m256d d);
__attribute__((target("avx512f"))) extern __m512d mmld_lazy_zmm(__m512d a, __m512d b,
                                                                 __m512d c, __m512d d);

int lazy_loaded(void)
{
    return 7;
}

int lazy_call_late(int x)
{
    return mmld_lazy_late(x);
}

int lazy_call_never(void)
{
    return mmld_lazy_never();
}

double lazy_call_args(void)
{
    return mmld_lazy_args(1, 2, 3, 4, 5, 6, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 100, 0.25);
}

double lazy_call_varargs(void)
{
    return mmld_lazy_varargs(4, 10.0, 20.5, 30.25, 40.125);
}

__attribute__((target("avx"))) double lazy_call_ymm(void)
{
    __m256d r = mmld_lazy_ymm(_mm256_set_pd(1, 2, 3, 4), _mm256_set_pd(5, 6, 7, 8),
                              _mm256_set_pd(9, 10, 11, 12), _mm256_set_pd(13, 14, 15, 16));
    double out[4];
    _mm256_storeu_pd(out, r);
    return out[0] + 10 * out[1] + 100 * out[2] + 1000 * out[3];
}

__attribute__((target("avx512f"))) double lazy_call_zmm(void)
{
    __m512d r = mmld_lazy_zmm(_mm512_set1_pd(1), _mm512_set_pd(1, 2, 3, 4, 5, 6, 7, 8),
                              _mm512_set1_pd(3), _mm512_set_pd(8, 7, 6, 5, 4, 3, 2, 1));
    double out[8];
    _mm512_storeu_pd(out, r);
    double sum = 0;
    for (int i = 0; i < 8; i++)
        sum = sum * 10 + out[i];
    return sum;
}
