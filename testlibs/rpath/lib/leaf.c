/* libchainleaf: built as rpath/lib/libchainleaf.so ("leaf") and
 * alt/libchainleaf.so ("alt"). No dependencies besides libc. */
#ifndef LEAF_NAME
#define LEAF_NAME "leaf"
#endif

const char *leaf_name(void)
{
    return LEAF_NAME;
}
