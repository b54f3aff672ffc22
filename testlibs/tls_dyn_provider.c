/* A TLS variable in the default (dynamic) model: no DF_STATIC_TLS. Its
 * user, libtls_ie_user.so, reads it with initial-exec code, so the loader
 * must move this module into static TLS when it links the user, as glibc
 * does while no thread has used the variable yet. */
__thread long prov_var = 5;
long prov_get(void) { return prov_var; }
