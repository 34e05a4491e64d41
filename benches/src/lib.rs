//! Helpers shared by the benchmarks in `benches/`.
