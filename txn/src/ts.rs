//! Timestamps from PD's TSO: the layout is the wire's (`regatta_proto::ts`), re-exported
//! here for the transaction layer's readers.

pub use regatta_proto::ts::{compose, physical_ms, LOGICAL_BITS};
