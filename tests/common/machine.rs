//! The machine as a resource the tests of this binary share. All integration tests run in
//! one process, `cargo test`'s default of one test thread per core at a time; most of them
//! share the machine well, but a few need it to themselves: the published JSON-lines tests
//! give a fresh node 5 s to answer with no warm-up, and their benchmark runs compare
//! timings. Those take the machine with [`alone`]; every harness that starts a cluster or
//! a process ([`crate::common::Cluster`], [`crate::common::maelstrom::Cluster`],
//! [`crate::common::process::spawn_ready`]) holds a [`shared`] claim for as long as it
//! runs. A test that holds [`alone`] waits for every shared claim to end, and no shared
//! claim starts until it is done: a readers-writer lock, with guards that may move between
//! threads (a cluster is dropped wherever its test ends).
//!
//! Claims never nest across tests, so there is no deadlock: a shared claim never waits for
//! another shared claim, and a test thread that holds [`alone`] takes no shared claim (its
//! harnesses see the thread's claim and take none).

use std::cell::Cell;
use std::sync::{Condvar, Mutex};

/// Who holds the machine: `None` while a test holds it alone, else the number of shared
/// claims (`Some(0)`: free).
struct Claims {
    state: Mutex<Option<usize>>,
    changed: Condvar,
}

static CLAIMS: Claims = Claims {
    state: Mutex::new(Some(0)),
    changed: Condvar::new(),
};

thread_local! {
    /// Whether this thread holds the machine alone (its harnesses then take no claim).
    static ALONE_HERE: Cell<bool> = const { Cell::new(false) };
}

fn state() -> std::sync::MutexGuard<'static, Option<usize>> {
    // A test that panicked while holding the lock left the count consistent: each change
    // is one assignment.
    CLAIMS.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A shared claim on the machine; released when dropped.
pub struct Shared {
    counted: bool,
}

/// Takes a shared claim: waits while a test holds the machine alone.
pub fn shared() -> Shared {
    if ALONE_HERE.with(Cell::get) {
        return Shared { counted: false };
    }
    let mut s = state();
    loop {
        match *s {
            Some(n) => {
                *s = Some(n + 1);
                return Shared { counted: true };
            }
            None => s = CLAIMS.changed.wait(s).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let mut s = state();
        let n = s.expect("a shared claim is held, so no test holds the machine alone");
        *s = Some(n - 1);
        CLAIMS.changed.notify_all();
    }
}

/// The machine held by one test alone; released when dropped. Not `Send`: it marks the
/// thread that took it.
pub struct Alone {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Takes the machine alone: waits until no shared claim and no other test holds it.
pub fn alone() -> Alone {
    let mut s = state();
    while *s != Some(0) {
        s = CLAIMS.changed.wait(s).unwrap_or_else(|e| e.into_inner());
    }
    *s = None;
    ALONE_HERE.with(|a| a.set(true));
    Alone {
        _not_send: std::marker::PhantomData,
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE_HERE.with(|a| a.set(false));
        *state() = Some(0);
        CLAIMS.changed.notify_all();
    }
}
