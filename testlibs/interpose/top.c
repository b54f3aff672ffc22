/* libitop: defines no interposed_name() of its own, only calls it. */
const char *interposed_name(void);
const char *bottom_calls(void);

const char *top_calls(void)
{
    return interposed_name();
}

const char *top_calls_bottom(void)
{
    return bottom_calls();
}
