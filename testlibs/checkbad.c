/*
 * libcheckbad: needs libmissing.so (DT_RUNPATH $ORIGIN) and references
 * mmld_also_missing itself, so `mmld check` must report two unresolved
 * symbols in two objects: mmld_also_missing (libcheckbad.so) and
 * mmld_no_such_function (libmissing.so).
 */
extern int mmld_also_missing(void);
extern int call_missing(void);

int checkbad_total(void)
{
    return mmld_also_missing() + call_missing();
}
