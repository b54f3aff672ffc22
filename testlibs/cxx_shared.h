// A template static data member: vague linkage, emitted as STB_GNU_UNIQUE.
template <typename T> struct UniqueCounter { static int value; };
template <typename T> int UniqueCounter<T>::value = 0;
