/* libchainmid: no DT_RPATH/DT_RUNPATH of its own; needs libchainleaf then
 * liborderlog, both found only through the loading chain. */
#include "../../orderlog.h"

const char *leaf_name(void);

ORDERLOG_TRACK("chainmid")

const char *mid_leaf_name(void)
{
    return leaf_name();
}
