//! Hash maps with a fixed hasher, for the load path.
//!
//! std's default `HashMap` seeds each process's hasher from the kernel
//! (`getrandom`): a system call inside the first load of a process that
//! has not built a map yet. mmld's maps are keyed by object ids, addresses
//! and names of the libraries being loaded, never by input an attacker
//! picks in bulk, so a fixed key (std's SipHash-1-3 with zero keys) costs
//! nothing in safety. Owns: those aliases. Must never: be used for a map
//! keyed by untrusted input at scale.

use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;

/// The fixed-key build hasher.
pub type FixedState = BuildHasherDefault<DefaultHasher>;
/// `std::collections::HashMap` with the fixed hasher (`HashMap::default()`).
pub type HashMap<K, V> = std::collections::HashMap<K, V, FixedState>;
/// `std::collections::HashSet` with the fixed hasher (`HashSet::default()`).
pub type HashSet<T> = std::collections::HashSet<T, FixedState>;
