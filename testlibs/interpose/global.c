/* libiglobal: the definition a global-scope library contributes. */
const char *interposed_name(void)
{
    return "global";
}
