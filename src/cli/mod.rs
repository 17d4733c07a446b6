//! What only the command line needs (feature `cli`): `.npy` files, the benchmark's
//! measurement helpers and its chart.

pub mod bench;
pub mod chart;
pub mod npy;
