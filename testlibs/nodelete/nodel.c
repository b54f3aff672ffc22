/*
 * testlibs/nodelete/: libnodel is linked with -z nodelete (DF_1_NODELETE)
 * and needs libnodeldep; once loaded, both stay mapped for the life of the
 * process. libkeep is an ordinary library, used with the nodelete option.
 */
int nodeldep_value(void);

int nodel_value(void)
{
    return 100 + nodeldep_value();
}
