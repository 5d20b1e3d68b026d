//! Frame I/O over QUIC streams, for both sides: a header frame is `u32 big-endian length ||
//! postcard(message)` ([`crate::core::wire`] encodes and decodes it); bodies follow as raw bytes
//! in [`CHUNK`]-sized writes.

use quinn::{ReadExactError, RecvStream, SendStream, WriteError};
use serde::{Deserialize, Serialize};

use crate::core::wire;
use crate::error::Error;

/// Bytes per read or write when streaming bodies.
pub const CHUNK: usize = 256 * 1024;

/// Why a frame could not be read.
#[derive(Debug)]
pub enum ReadFrameError {
    /// The stream or connection failed (the caller classifies it).
    Stream(ReadExactError),
    /// The bytes are not a valid frame.
    Malformed(Error),
}

impl ReadFrameError {
    /// A one-line description for a relay's log or a refusal.
    pub fn into_error(self) -> Error {
        match self {
            ReadFrameError::Stream(e) => Error::bad_input(format!("cannot read a frame: {e}")),
            ReadFrameError::Malformed(e) => e,
        }
    }
}

/// Reads one header frame.
pub async fn read_frame<T: for<'a> Deserialize<'a>>(
    recv: &mut RecvStream,
) -> Result<T, ReadFrameError> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(ReadFrameError::Stream)?;
    let len = wire::frame_len(prefix).map_err(ReadFrameError::Malformed)?;
    // The buffer grows with the bytes that arrive, not with the length the peer claims
    // (threat 34: a prefix alone allocates nothing).
    let mut body = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        match recv.read(&mut chunk[..want]).await {
            Ok(Some(n)) => body.extend_from_slice(&chunk[..n]),
            // The count is of the frame's bytes, its prefix included: 0 only for a stream
            // that ended before any byte of it.
            Ok(None) => {
                return Err(ReadFrameError::Stream(
                    quinn::ReadExactError::FinishedEarly(prefix.len() + body.len()),
                ))
            }
            Err(e) => return Err(ReadFrameError::Stream(quinn::ReadExactError::ReadError(e))),
        }
    }
    wire::decode_frame(&body).map_err(ReadFrameError::Malformed)
}

/// Why a frame could not be written.
#[derive(Debug)]
pub enum WriteFrameError {
    Stream(WriteError),
    /// The message does not encode within the frame cap.
    Encode(Error),
}

/// Writes one header frame.
pub async fn write_frame<T: Serialize>(
    send: &mut SendStream,
    msg: &T,
) -> Result<(), WriteFrameError> {
    let frame = wire::encode_frame(msg).map_err(WriteFrameError::Encode)?;
    send.write_all(&frame)
        .await
        .map_err(WriteFrameError::Stream)
}
