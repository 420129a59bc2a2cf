//! At-most-once sessions. A store remembers, per region and client id, the newest sequence
//! number it applied and its answer; an older number is refused (`StaleSequence`). So one
//! session must not have two writes in flight at once: the pool lends each write its own
//! session, and a write keeps its `(client_id, seq)` across all of its retries.

use rand::Rng;
use std::sync::Mutex;

/// Most idle sessions kept for reuse.
const MAX_IDLE: usize = 1024;

/// One lent session: the ids a write carries.
#[derive(Debug)]
pub(crate) struct Session {
    pub client_id: u64,
    pub seq: u64,
}

#[derive(Default)]
pub(crate) struct SessionPool {
    idle: Mutex<Vec<Session>>,
}

impl SessionPool {
    /// A session with a fresh sequence number, used by nobody else until returned.
    pub fn take(&self) -> Session {
        let reused = self.idle.lock().expect("session pool lock").pop();
        match reused {
            Some(mut s) => {
                s.seq += 1;
                s
            }
            None => Session {
                client_id: rand::thread_rng().gen_range(1..u64::MAX),
                seq: 1,
            },
        }
    }

    /// Gives a session back once its write finished (whatever the outcome).
    pub fn put_back(&self, s: Session) {
        let mut idle = self.idle.lock().expect("session pool lock");
        if idle.len() < MAX_IDLE {
            idle.push(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writes_never_share_a_session_and_seqs_grow() {
        let pool = SessionPool::default();
        let a = pool.take();
        let b = pool.take();
        assert_ne!(a.client_id, b.client_id);
        let (a_id, a_seq) = (a.client_id, a.seq);
        pool.put_back(a);
        let again = pool.take();
        assert_eq!(again.client_id, a_id);
        assert!(again.seq > a_seq);
    }
}
