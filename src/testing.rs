//! Helpers shared by the crate's unit tests.

/// A xorshift generator: the same sequence from the same seed, for tests that try many inputs
/// without a dependency on a random number crate.
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
