// A second library defining the same STB_GNU_UNIQUE template static: both
// must bind to one definition process-wide.
#include "cxx_shared.h"

extern "C" int cxx_b_unique_bump() { return ++UniqueCounter<int>::value; }
