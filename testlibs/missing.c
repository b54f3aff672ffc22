/*
 * libmissing: references a strong undefined function that nothing defines.
 * Shared objects may link with undefined symbols, so this builds fine, but
 * loading it with immediate binding must fail naming mmld_no_such_function.
 */
extern int mmld_no_such_function(void);

int call_missing(void)
{
    return mmld_no_such_function();
}
