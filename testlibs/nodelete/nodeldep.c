/* libnodeldep: needed by the DF_1_NODELETE libnodel. */
int nodeldep_value(void)
{
    return 7;
}
