/*
 * libversioned: exercises symbol versioning (DT_VERSYM, DT_VERDEF,
 * DT_VERNEED).
 *
 *   vfunc@VERS_1.0   -> vfunc_v1, returns 1 (non-default, hidden version)
 *   vfunc@@VERS_2.0  -> vfunc_v2, returns 2 (default)
 *   only_v1@@VERS_1.0 returns 10
 *   call_vfunc@@VERS_2.0 calls vfunc through the PLT; the relocation carries
 *   version VERS_2.0, so a loader that ignores versions and picks the first
 *   "vfunc" it sees may get 1 instead of 2.
 *   parse_num@@VERS_2.0 calls strtol, giving a VERNEED on GLIBC_2.2.5.
 */
#include <stdlib.h>

int vfunc(void);

int vfunc_v1(void)
{
    return 1;
}

int vfunc_v2(void)
{
    return 2;
}

__asm__(".symver vfunc_v1, vfunc@VERS_1.0");
__asm__(".symver vfunc_v2, vfunc@@VERS_2.0");

int only_v1(void)
{
    return 10;
}

int call_vfunc(void)
{
    return vfunc();
}

long parse_num(const char *s)
{
    return strtol(s, NULL, 0);
}
