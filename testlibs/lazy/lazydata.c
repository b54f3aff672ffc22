/*
 * liblazydata: a data reference (R_X86_64_GLOB_DAT) to a variable nothing
 * defines. Linked with -z lazy, but data is always bound at load: glibc's
 * RTLD_LAZY refuses it, and so must mmld's lazy option.
 */
extern int mmld_lazy_missing_data;

int lazy_read_data(void)
{
    return mmld_lazy_missing_data;
}
