//! Lethe's benchmarks (being written).

fn main() {}
