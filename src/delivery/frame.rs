//! A server-to-client text frame, encoded once. Frames a server sends are
//! not masked, so header and payload can be laid out once in one shared
//! buffer and the same bytes written to every subscriber: no framing, no
//! copy per delivery.

use bytes::Bytes;
use serde::Serialize;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::protocol::{Id, ServerMsg};

/// Room kept in front of the payload for the longest unmasked header.
const ROOM: usize = 10;

/// A whole WebSocket text frame (header and JSON payload), cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    wire: Bytes,
    header: u8,
}

impl Frame {
    /// A message with an optional reply `id`.
    pub fn message(msg: &ServerMsg, id: Option<&Id>) -> Frame {
        Frame::build(|buf| msg.write_json(id, buf))
    }

    /// Any value serialised as JSON.
    pub fn json<T: Serialize>(value: &T) -> Frame {
        Frame::build(|buf| serde_json::to_writer(buf, value).expect("server messages serialise"))
    }

    /// A frame around text already serialised.
    pub fn text(text: &str) -> Frame {
        Frame::build(|buf| buf.extend_from_slice(text.as_bytes()))
    }

    /// Serialises straight behind the header's room, then writes the
    /// header just in front of the payload.
    fn build(write: impl FnOnce(&mut Vec<u8>)) -> Frame {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&[0; ROOM]);
        write(&mut buf);
        let len = (buf.len() - ROOM) as u64;
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        let start = ROOM - header.len(len);
        header
            .format(len, &mut &mut buf[start..ROOM])
            .expect("a header fits its room");
        Frame {
            wire: Bytes::from(buf).slice(start..),
            header: (ROOM - start) as u8,
        }
    }

    /// The bytes on the wire, header included.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// The JSON text.
    pub fn payload(&self) -> &[u8] {
        &self.wire[self.header as usize..]
    }

    /// Payload bytes (what the byte counters and outbox bounds count).
    pub fn len(&self) -> usize {
        self.wire.len() - self.header as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What tungstenite itself would put on the wire for the same text.
    fn reference(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        tungstenite::protocol::frame::Frame::message(
            text.to_string(),
            OpCode::Data(Data::Text),
            true,
        )
        .format(&mut out)
        .unwrap();
        out
    }

    #[test]
    fn frames_of_every_length_class_match_tungstenite() {
        for n in [0, 1, 125, 126, 127, 1000, 65535, 65536, 70_000] {
            let text = "x".repeat(n);
            let f = Frame::text(&text);
            assert_eq!(f.wire().as_ref(), reference(&text).as_slice(), "length {n}");
            assert_eq!(f.len(), n);
            assert_eq!(f.payload(), text.as_bytes());
        }
    }

    #[test]
    fn a_message_frame_carries_its_id_and_json() {
        let id: Id = serde_json::from_str("7").unwrap();
        let f = Frame::message(&ServerMsg::Pong {}, Some(&id));
        let v: serde_json::Value = serde_json::from_slice(f.payload()).unwrap();
        assert_eq!(v, serde_json::json!({"id": 7, "type": "pong"}));
        assert_eq!(f.wire()[0], 0x81, "final text frame");
        assert_eq!(f.wire()[1] as usize, f.len(), "short length, unmasked");
    }
}
