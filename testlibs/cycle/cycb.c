/* libcycb: the other half of the cycle (see cyca.c). */
#include "../orderlog.h"

int cyca_value(void);

ORDERLOG_TRACK("cycb")

int cycb_value(void)
{
    return 2;
}

/* 2 + 1 * 10 = 12 */
int cycb_sum(void)
{
    return cycb_value() + cyca_value() * 10;
}
