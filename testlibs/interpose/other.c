/* libiother: one more definition of interposed_name(), for libiscope. */
const char *interposed_name(void)
{
    return "other";
}
