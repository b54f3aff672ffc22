/* Initial-exec access to another library's variable: R_X86_64_TPOFF64
 * against prov_var of libtls_dyn_provider.so, which has no DF_STATIC_TLS. */
#include <stdio.h>

extern __thread long prov_var __attribute__((tls_model("initial-exec")));
long prov_get(void);
static char user_buf[96];

const char *ie_user_report(void)
{
    prov_var += 10;
    snprintf(user_buf, sizeof user_buf, "user=%ld provider=%ld", prov_var, prov_get());
    return user_buf;
}
