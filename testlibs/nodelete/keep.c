/* libkeep: plain; kept mapped only by OpenOptions::nodelete. */
int keep_value(void)
{
    return 3;
}
