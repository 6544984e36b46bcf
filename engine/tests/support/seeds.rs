//! The seeds a randomised test runs with: a fixed set, so that every run covers the same
//! ground, plus one drawn at random, so that runs over time cover more. Each seed is printed
//! before its run starts, so a failure's output names the one to run again with
//! `LETHE_CRASH_SEED=<n>` (which runs that seed alone). `LETHE_CRASH_SEEDS` (comma-separated)
//! replaces the fixed set; the random seed is still added.
//!
//! A seed fixes what the test decides (the workload, when it kills, which calls fail); it
//! cannot fix how the operating system schedules the processes, so a rerun repeats the run's
//! plan, not every interleaving.

use rand::Rng as _;

/// The seeds every run covers unless `LETHE_CRASH_SEEDS` says otherwise.
pub const FIXED: [u64; 2] = [1, 20_261_202];

/// The seeds to run, in order: `LETHE_CRASH_SEED` alone, else the fixed set and a random one.
pub fn seeds() -> Vec<u64> {
    if let Ok(one) = std::env::var("LETHE_CRASH_SEED") {
        let seed = one
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("LETHE_CRASH_SEED={one:?} is not a u64: {e}"));
        return vec![seed];
    }
    let mut seeds: Vec<u64> = match std::env::var("LETHE_CRASH_SEEDS") {
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|e| panic!("LETHE_CRASH_SEEDS: {s:?} is not a u64: {e}"))
            })
            .collect(),
        Err(_) => FIXED.to_vec(),
    };
    seeds.push(rand::rng().random());
    seeds
}

/// Prints the seed of the run about to start, with the way to repeat it.
pub fn announce(test: &str, seed: u64) {
    eprintln!("{test}: seed {seed} (LETHE_CRASH_SEED={seed} runs it alone)");
}
