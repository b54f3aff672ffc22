/*
 * liblazydef: the definitions liblazy.so's calls find once this library is
 * loaded with the global option. Every argument gets its own weight, so a
 * clobbered or swapped register changes the result.
 */
#include <immintrin.h>
#include <stdarg.h>

int mmld_lazy_late(int x)
{
    return 3 * x + 1;
}

double mmld_lazy_args(long a, long b, long c, long d, long e, long f,
                      double x0, double x1, double x2, double x3,
                      double x4, double x5, double x6, double x7,
                      long s0, double s1)
{
    return a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f
        + 7 * x0 + 8 * x1 + 9 * x2 + 10 * x3 + 11 * x4 + 12 * x5 + 13 * x6 + 14 * x7
        + 15 * s0 + 16 * s1;
}

double mmld_lazy_varargs(int n, ...)
{
    va_list ap;
    va_start(ap, n);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum = sum * 2 + va_arg(ap, double);
    va_end(ap);
    return sum;
}

__attribute__((target("avx"))) __m256d mmld_lazy_ymm(__m256d a, __m256d b, __m256d c, __m256d d)
{
    return _mm256_add_pd(_mm256_add_pd(a, _mm256_mul_pd(b, _mm256_set1_pd(2))),
                         _mm256_add_pd(_mm256_mul_pd(c, _mm256_set1_pd(3)),
                                       _mm256_mul_pd(d, _mm256_set1_pd(4))));
}

__attribute__((target("avx512f"))) __m512d mmld_lazy_zmm(__m512d a, __m512d b, __m512d c, __m512d d)
{
    return _mm512_add_pd(_mm512_add_pd(a, _mm512_mul_pd(b, _mm512_set1_pd(2))),
                         _mm512_add_pd(_mm512_mul_pd(c, _mm512_set1_pd(3)),
                                       _mm512_mul_pd(d, _mm512_set1_pd(4))));
}

/*
 * Callers through a function pointer, for tests that call mmld's binder
 * entry directly: each passes its arguments to `f` and folds the result
 * into one double.
 */
double lazy_pass_args(double (*f)(long, long, long, long, long, long, double, double, double,
                                  double, double, double, double, double, long, double))
{
    return f(1, 2, 3, 4, 5, 6, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 100, 0.25);
}

double lazy_pass_varargs(double (*f)(int, ...))
{
    return f(4, 10.0, 20.5, 30.25, 40.125);
}

__attribute__((target("avx"))) double lazy_pass_ymm(__m256d (*f)(__m256d, __m256d, __m256d, __m256d))
{
    __m256d r = f(_mm256_set_pd(1, 2, 3, 4), _mm256_set_pd(5, 6, 7, 8),
                  _mm256_set_pd(9, 10, 11, 12), _mm256_set_pd(13, 14, 15, 16));
    double out[4];
    _mm256_storeu_pd(out, r);
    return out[0] + 10 * out[1] + 100 * out[2] + 1000 * out[3];
}

__attribute__((target("avx512f"))) double lazy_pass_zmm(__m512d (*f)(__m512d, __m512d, __m512d, __m512d))
{
    __m512d r = f(_mm512_set1_pd(1), _mm512_set_pd(1, 2, 3, 4, 5, 6, 7, 8),
                  _mm512_set1_pd(3), _mm512_set_pd(8, 7, 6, 5, 4, 3, 2, 1));
    double out[8];
    _mm512_storeu_pd(out, r);
    double sum = 0;
    for (int i = 0; i < 8; i++)
        sum = sum * 10 + out[i];
    return sum;
}
