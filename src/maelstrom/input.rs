//! Lines from stdin as bytes. A line that is not UTF-8, or longer than
//! [`MAX_LINE_BYTES`], is handed on as such (to be answered or logged, then skipped) instead
//! of ending the input; the reader ends only at the end of stdin or when reading fails, and
//! says which.

use slog::{info, warn, Logger};
use std::io::BufRead;
use tokio::sync::mpsc;

/// The longest line read; longer ones are skipped (their bytes are never buffered).
pub(super) const MAX_LINE_BYTES: usize = 64 << 20;

/// Lines read ahead of the node (the reader blocks beyond this: backpressure on stdin).
const QUEUE_LINES: usize = 1024;

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// Valid UTF-8 (without its newline).
    Text(String),
    /// Not UTF-8: the raw bytes.
    NotUtf8(Vec<u8>),
    /// Longer than [`MAX_LINE_BYTES`]: its length, the bytes dropped.
    TooLong(usize),
}

/// Reads lines from `input` on a thread of its own until it ends; the receiver gets them
/// in order.
pub(super) fn spawn_reader<R>(input: R, logger: Logger) -> mpsc::Receiver<Line>
where
    R: BufRead + Send + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUE_LINES);
    std::thread::spawn(move || {
        let mut input = input;
        loop {
            match read_line(&mut input, MAX_LINE_BYTES) {
                Ok(Some(line)) => {
                    if tx.blocking_send(line).is_err() {
                        return; // the node stopped
                    }
                }
                Ok(None) => {
                    info!(logger, "stdin closed; stopping");
                    return;
                }
                Err(e) => {
                    // Not retried: a failing stdin does not heal, and retrying would spin.
                    warn!(logger, "reading stdin failed; stopping"; "error" => %e);
                    return;
                }
            }
        }
    });
    rx
}

/// Reads one line (`None` at the end of input); never buffers more than `max` bytes of it.
pub(super) fn read_line<R: BufRead>(r: &mut R, max: usize) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut len = 0usize;
    let mut seen_any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            if !seen_any {
                return Ok(None);
            }
            break; // a last line without its newline
        }
        seen_any = true;
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        len += take;
        if len <= max {
            buf.extend_from_slice(&avail[..take]);
        } else {
            buf = Vec::new(); // over the limit: count the rest, keep nothing
        }
        r.consume(take + usize::from(done));
        if done {
            break;
        }
    }
    if len > max {
        return Ok(Some(Line::TooLong(len)));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(match String::from_utf8(buf) {
        Ok(s) => Line::Text(s),
        Err(e) => Line::NotUtf8(e.into_bytes()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_reported_and_reading_goes_on() {
        let input: &[u8] = b"{\"a\":1}\n\xff\xfe{\"b\":2}\nxxxxxxxxxx\n\r\n{\"c\":3}";
        let mut r = std::io::BufReader::with_capacity(4, input);
        let mut lines = Vec::new();
        while let Some(l) = read_line(&mut r, 8).unwrap() {
            lines.push(l);
        }
        assert_eq!(
            lines,
            vec![
                Line::Text("{\"a\":1}".into()),
                Line::TooLong(9),
                Line::TooLong(10),
                Line::Text(String::new()),
                Line::Text("{\"c\":3}".into()),
            ]
        );
        let mut r: &[u8] = b"\xff\xfe{}\n";
        assert_eq!(
            read_line(&mut r, 100).unwrap(),
            Some(Line::NotUtf8(b"\xff\xfe{}".to_vec()))
        );
        assert_eq!(read_line(&mut r, 100).unwrap(), None);
    }
}
