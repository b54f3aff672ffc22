/*
 * Built twice: libisymbolic.so (DF_SYMBOLIC patched into DT_FLAGS by
 * build.rs, so its own definition wins) and libinosymbolic.so (control: the
 * global scope wins). The call goes through the PLT either way: the linker
 * does not bind it, only the loader can.
 */
#ifndef NAME
#define NAME "symbolic"
#endif

const char *interposed_name(void)
{
    return NAME;
}

const char *self_calls(void)
{
    return interposed_name();
}
