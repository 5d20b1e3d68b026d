//! Wire frames from a peer (threat 34): the length prefix and the frame bodies of requests and
//! responses. Whatever decodes re-encodes to a frame that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealrelay::core::wire::{decode_frame, encode_frame, frame_len, RequestFrame, Response};

fn round_trip<T>(value: &T)
where
    T: serde::Serialize + for<'a> serde::Deserialize<'a> + PartialEq + std::fmt::Debug,
{
    let Ok(frame) = encode_frame(value) else {
        return; // over the frame cap: refusing to send it is the right answer
    };
    let prefix: [u8; 4] = frame[..4].try_into().unwrap();
    assert_eq!(frame_len(prefix).unwrap(), frame.len() - 4);
    let again: T = decode_frame(&frame[4..]).unwrap();
    assert_eq!(&again, value);
}

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = frame_len(data[..4].try_into().unwrap());
    }
    if let Ok(req) = decode_frame::<RequestFrame>(data) {
        round_trip(&req);
    }
    if let Ok(resp) = decode_frame::<Response>(data) {
        round_trip(&resp);
    }
});
