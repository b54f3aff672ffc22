/* Loaded by glibc (not mmld) in tests: a host module that owns a TLS
 * variable, so mmld-mapped code must reach it through glibc's module id. */
__thread int host_tls_var = 7;
int host_tls_read(void) { return host_tls_var; }
