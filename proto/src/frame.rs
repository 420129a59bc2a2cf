//! Length-prefixed frames: a `u32` big-endian length, then an encoded [`Frame`].
//!
//! The codec is I/O-free so that the TCP transport, the client and the tests share it.
//! A declared length above [`MAX_FRAME_LEN`] (or the caller's tighter bound) is an error
//! before anything is allocated; below it, the reader in [`crate::rpc`] grows a frame's
//! buffer with the bytes that arrive, within a per-server budget and deadlines: a peer
//! cannot make us reserve memory it never sends.

use crate::framepb::Frame;
use protobuf::Message;

/// Hard upper bound of one frame (snapshots of a full-size region must fit).
pub const MAX_FRAME_LEN: usize = 256 * 1024 * 1024;

/// Errors of the frame codec.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared frame length exceeds the bound.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The bound in force.
        limit: usize,
    },
    /// The frame bytes are not a valid protobuf `Frame`.
    #[error("malformed frame: {0}")]
    Malformed(#[from] protobuf::ProtobufError),
}

/// Encodes `frame` with its length prefix, appending to `out`.
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = frame.compute_size() as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            limit: MAX_FRAME_LEN,
        });
    }
    out.reserve(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    frame.write_to_vec(out)?;
    Ok(())
}

/// Encodes `frame` with its length prefix.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_into(frame, &mut out)?;
    Ok(out)
}

/// Checks a length prefix against `limit` (itself capped at [`MAX_FRAME_LEN`]).
pub fn check_len(header: [u8; 4], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    let limit = limit.min(MAX_FRAME_LEN);
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

/// Decodes the body of a frame (without its length prefix).
pub fn decode(body: &[u8]) -> Result<Frame, FrameError> {
    Ok(Frame::parse_from_bytes(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvrpcpb::{GetRequest, KvRequest, Request};

    #[test]
    fn frame_round_trips() {
        let mut get = GetRequest::new();
        get.set_key(b"k".to_vec());
        let mut req = Request::new();
        req.set_get(get);
        let mut kv = KvRequest::new();
        kv.set_request(req);
        let mut frame = Frame::new();
        frame.set_id(7);
        frame.set_kv_request(kv);
        let bytes = encode(&frame).unwrap();
        let len = check_len(bytes[..4].try_into().unwrap(), MAX_FRAME_LEN).unwrap();
        assert_eq!(len, bytes.len() - 4);
        let back = decode(&bytes[4..]).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn oversized_length_is_rejected_before_allocation() {
        let err = check_len((1024u32 * 1024).to_be_bytes(), 1024).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: 1048576,
                limit: 1024
            }
        ));
    }

    #[test]
    fn garbage_is_a_malformed_frame_not_a_panic() {
        for garbage in [
            &[0xffu8, 0xff, 0xff][..],
            &[0x0a, 0x80],
            &[0x12, 0x05, 0x01],
        ] {
            assert!(decode(garbage).is_err(), "{garbage:?}");
        }
    }
}
