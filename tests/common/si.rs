//! The snapshot-isolation checker lives in the simulator crate (`regatta_sim::check`), so
//! the cluster tests and the simulator judge histories with one implementation.
pub use regatta_sim::check::si::*;
