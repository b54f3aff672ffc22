// One of two libraries defining the same STB_GNU_UNIQUE template static:
// both must bind to one definition process-wide.
#include "cxx_shared.h"

extern "C" int cxx_a_unique_bump() { return ++UniqueCounter<int>::value; }
