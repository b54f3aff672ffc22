/* An OpenMP plugin (-fopenmp, links libgomp, whose own TLS is
 * initial-exec): a parallel reduction over 8 threads. omp_report() gives
 * the sum of 1..1000000 and how many distinct threads took part. */
#include <omp.h>
#include <stdio.h>

static char omp_buf[128];

const char *omp_report(void)
{
    long sum = 0;
    int seen = 0, team = 0;
#pragma omp parallel for num_threads(8) reduction(+ : sum) schedule(static, 1)
    for (long i = 1; i <= 1000000; i++)
        sum += i;
#pragma omp parallel num_threads(8)
    {
#pragma omp atomic
        seen |= 1 << omp_get_thread_num();
#pragma omp single
        team = omp_get_num_threads();
    }
    snprintf(omp_buf, sizeof omp_buf, "sum=%ld threads=%d team=%d", sum,
             __builtin_popcount(seen), team);
    return omp_buf;
}
