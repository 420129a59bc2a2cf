//! Checkers of recorded histories: linearizability of a key-value register, and snapshot
//! isolation of read-modify-write transactions.

pub mod linearizability;
pub mod si;
