//! Checkers of recorded histories.

pub mod linearizability;
