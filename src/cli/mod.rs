//! What only the command line needs (feature `cli`): `.npy` files and the benchmark's
//! measurement helpers.

pub mod bench;
pub mod npy;
