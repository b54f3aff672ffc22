/* libimid: interposes libibottom's interposed_name(). */
const char *interposed_name(void)
{
    return "mid";
}

const char *mid_calls(void)
{
    return interposed_name();
}
