/*
 * libiscope: needs libitop, then libiother (RUNPATH $ORIGIN). Its local
 * scope is breadth-first: libiscope, libitop, libiother, libimid,
 * libibottom, so its call binds to libiother's interposed_name ("other"),
 * also when libitop (with libimid and libibottom) was loaded before.
 */
const char *interposed_name(void);

const char *scope_calls(void)
{
    return interposed_name();
}
