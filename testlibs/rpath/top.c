/*
 * libchaintop (testlibs/rpath/): needs libchainmid, which needs
 * libchainleaf; mid and leaf live in rpath/lib/ and mid has neither
 * DT_RPATH nor DT_RUNPATH. Built twice from this file:
 *
 *   libchaintop.so          DT_RPATH   $ORIGIN/lib:$ORIGIN/..
 *   libchaintop_runpath.so  DT_RUNPATH $ORIGIN/lib:$ORIGIN/..
 *
 * glibc searches the DT_RPATH of every object in the loading chain, but a
 * DT_RUNPATH only for the object's own DT_NEEDED entries: loading
 * libchaintop.so finds libchainleaf.so through libchaintop's DT_RPATH,
 * while libchaintop_runpath.so fails (libchainleaf.so needed by
 * libchainmid.so is not found) unless LD_LIBRARY_PATH supplies it.
 */
#include "../orderlog.h"

const char *mid_leaf_name(void);

ORDERLOG_TRACK("chaintop")

const char *chain_leaf_name(void)
{
    return mid_leaf_name();
}
