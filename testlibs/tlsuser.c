/* Loaded by mmld: reads and writes a TLS variable defined by a library the
 * host (glibc) loaded: DTPMOD64/DTPOFF64 against a host module. */
extern __thread int host_tls_var;
int tls_user_read(void) { return host_tls_var; }
void tls_user_write(int v) { host_tls_var = v; }
