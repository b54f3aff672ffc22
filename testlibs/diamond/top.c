/*
 * libdtop (testlibs/diamond/): the top of the diamond
 *
 *            libdtop            DT_RUNPATH $ORIGIN/lib:$ORIGIN/..
 *           /       \
 *     libdleft     libdright    (diamond/lib/, DT_RUNPATH $ORIGIN...)
 *           \       /
 *            libdbase
 *
 * and every one of them also needs liborderlog (testlibs/). DT_NEEDED of
 * libdtop, in order: libdleft.so, libdright.so, liborderlog.so.
 */
#include "../orderlog.h"

int left_value(void);
int right_value(void);
const char *left_base_name(void);

ORDERLOG_TRACK("top")

/* 10 + 1 (left) + 20 + 1 (right): proves both sides are linked. */
int diamond_sum(void)
{
    return left_value() + right_value();
}

/* Which libdbase.so the tree bound to ("base", or "alt" from testlibs/alt/). */
const char *diamond_base_name(void)
{
    return left_base_name();
}
