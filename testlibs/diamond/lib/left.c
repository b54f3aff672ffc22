/* libdleft: left side of the diamond; needs libdbase and liborderlog. */
#include "../../orderlog.h"

int base_value(void);
const char *base_name(void);

ORDERLOG_TRACK("left")

int left_value(void)
{
    return 10 + base_value();
}

const char *left_base_name(void)
{
    return base_name();
}
