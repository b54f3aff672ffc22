/*
 * A DT_NEEDED cycle (testlibs/cycle/): libcyca needs libcycb and libcycb
 * needs libcyca, both with DT_RUNPATH $ORIGIN:$ORIGIN/..; both need
 * liborderlog too. build.rs links cycb.c first as cycle/stub/libcycb.so
 * (same soname, undefined references allowed), links libcyca against that
 * stub, then links the real libcycb against libcyca.
 */
#include "../orderlog.h"

int cycb_value(void);

ORDERLOG_TRACK("cyca")

int cyca_value(void)
{
    return 1;
}

/* 1 + 2 * 10 = 21 */
int cyca_sum(void)
{
    return cyca_value() + cycb_value() * 10;
}
