//! The commands of the replica's turn, not yet proposed, as data: they go into one log
//! entry at the end of the turn, or at once when they reach the entry's size bound.
//!
//! Invariants: every token names a command of the batch (its position is below `len`);
//! `bytes` is the encoded size of the commands held; taking the batch empties it.

use super::{Responder, MAX_ENTRY_DATA};
use crate::coprocessor::cmd_size;
use regatta_proto::raft_serverpb::RaftCmd;
use std::time::{Duration, Instant};

/// The turn's commands, their answers, and the observer's tokens among them.
#[derive(Default)]
pub(super) struct TurnBatch {
    cmds: Vec<(RaftCmd, Responder)>,
    /// Commands whose answer goes to the observer: (position in `cmds`, token).
    tokens: Vec<(usize, u64)>,
    bytes: usize,
    /// When the first command held arrived, and Σ of the others' arrivals after it.
    first_at: Option<Instant>,
    arrived_after_first: Duration,
}

/// What a taken batch holds.
pub(super) struct Taken {
    pub(super) cmds: Vec<(RaftCmd, Responder)>,
    pub(super) tokens: Vec<(usize, u64)>,
    /// Σ over the commands of the time from their arrival to the take.
    pub(super) waited: Duration,
}

impl TurnBatch {
    /// Adds a command answered through `tx` (or, with a `token`, through the observer).
    /// Returns whether the batch reached the entry's size bound and is to be proposed now.
    pub(super) fn push(
        &mut self,
        cmd: RaftCmd,
        tx: Responder,
        token: Option<u64>,
        now: Instant,
    ) -> bool {
        match self.first_at {
            None => self.first_at = Some(now),
            Some(first) => self.arrived_after_first += now.saturating_duration_since(first),
        }
        if let Some(token) = token {
            self.tokens.push((self.cmds.len(), token));
        }
        self.bytes += cmd_size(&cmd);
        self.cmds.push((cmd, tx));
        self.bytes >= MAX_ENTRY_DATA
    }

    /// Commands held.
    pub(super) fn len(&self) -> usize {
        self.cmds.len()
    }

    /// Whether no command is held.
    pub(super) fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Takes every command and token at `now`; the batch is empty after.
    pub(super) fn take(&mut self, now: Instant) -> Taken {
        self.bytes = 0;
        let n = self.cmds.len() as u32;
        let waited = match self.first_at.take() {
            // n × (now − first) − Σ (arrival − first)
            Some(first) => (now.saturating_duration_since(first) * n)
                .saturating_sub(std::mem::take(&mut self.arrived_after_first)),
            None => Duration::ZERO,
        };
        Taken {
            cmds: std::mem::take(&mut self.cmds),
            tokens: std::mem::take(&mut self.tokens),
            waited,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regatta_proto::kvrpcpb::PutRequest;
    use tokio::sync::oneshot;

    fn cmd(value_len: usize) -> RaftCmd {
        let mut c = RaftCmd::new();
        let mut p = PutRequest::new();
        p.set_key(b"k".to_vec());
        p.set_value(vec![7; value_len]);
        c.mut_request().set_put(p);
        c
    }

    #[test]
    fn tokens_name_their_commands_and_taking_empties_the_batch() {
        let t0 = Instant::now();
        let mut b = TurnBatch::default();
        assert!(b.is_empty());
        for (i, token) in [None, Some(9), None, Some(4)].into_iter().enumerate() {
            let (tx, _rx) = oneshot::channel();
            assert!(
                !b.push(cmd(10 + i), tx, token, t0),
                "small commands fill no entry"
            );
        }
        assert_eq!(b.len(), 4);
        let taken = b.take(t0);
        assert_eq!(taken.cmds.len(), 4);
        assert_eq!(taken.tokens, vec![(1, 9), (3, 4)]);
        assert!(b.is_empty());
        assert!(b.take(t0).tokens.is_empty(), "nothing is taken twice");
    }

    #[test]
    fn a_batch_is_full_at_the_entry_size_bound_and_empty_again_after_taking() {
        let t0 = Instant::now();
        let mut b = TurnBatch::default();
        let (tx, _rx) = oneshot::channel();
        assert!(!b.push(cmd(MAX_ENTRY_DATA / 2), tx, None, t0));
        let (tx, _rx) = oneshot::channel();
        assert!(
            b.push(cmd(MAX_ENTRY_DATA / 2), tx, None, t0),
            "past the bound: propose now"
        );
        b.take(t0);
        let (tx, _rx) = oneshot::channel();
        assert!(
            !b.push(cmd(10), tx, None, t0),
            "the size starts again from zero"
        );
    }

    #[test]
    fn the_wait_is_summed_over_the_commands_from_their_arrival() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = TurnBatch::default();
        for at in [0, 3, 10] {
            let (tx, _rx) = oneshot::channel();
            b.push(cmd(1), tx, None, t0 + ms(at));
        }
        // Taken at 12 ms: waits of 12, 9 and 2 ms.
        assert_eq!(b.take(t0 + ms(12)).waited, ms(23));
        let (tx, _rx) = oneshot::channel();
        b.push(cmd(1), tx, None, t0 + ms(20));
        assert_eq!(
            b.take(t0 + ms(21)).waited,
            ms(1),
            "the next batch starts from its own first arrival"
        );
        assert_eq!(b.take(t0 + ms(30)).waited, Duration::ZERO);
    }
}
