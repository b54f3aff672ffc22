/*
 * libdbase: bottom of the diamond. Built twice: diamond/lib/libdbase.so
 * (BASE_NAME "base") and alt/libdbase.so (BASE_NAME "alt"), same soname, so
 * a test can tell which one a search found.
 */
#include "../../orderlog.h"

#ifndef BASE_NAME
#define BASE_NAME "base"
#endif

ORDERLOG_TRACK(BASE_NAME)

int base_value(void)
{
    return 1;
}

const char *base_name(void)
{
    return BASE_NAME;
}
