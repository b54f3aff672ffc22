/*
 * Interposition chain (testlibs/interpose/): libitop needs libimid needs
 * libibottom. libibottom and libimid both define interposed_name();
 * libiglobal defines it too and is meant to be opened with the global
 * option (or LD_PRELOADed into the host) first. Each library also calls
 * interposed_name() itself, through its PLT, so the binding it got shows:
 *
 *   opened plainly:                      every call -> "mid"   (local scope:
 *                                        libitop, libimid, libibottom)
 *   libiglobal in the global scope:      every call -> "global"
 *   same, libitop opened with deep_bind: every call -> "mid"
 *
 * libisymbolic has DF_SYMBOLIC (set in DT_FLAGS after linking, see build.rs)
 * and binds its own call to itself whatever the global scope holds.
 */
const char *interposed_name(void)
{
    return "bottom";
}

const char *bottom_calls(void)
{
    return interposed_name();
}
