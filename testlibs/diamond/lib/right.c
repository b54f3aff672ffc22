/* libdright: right side of the diamond; needs libdbase and liborderlog. */
#include "../../orderlog.h"

int base_value(void);

ORDERLOG_TRACK("right")

int right_value(void)
{
    return 20 + base_value();
}
