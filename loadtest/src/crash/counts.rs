//! The acknowledged changes of a crash run by kind ([`Counts`]), for the
//! table and the JSON.

use casebroker_testkit::crash::Op;
use serde_json::{Value, json};

/// Acknowledged changes by kind.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counts {
    pub(super) creates: u64,
    pub(super) assigns: u64,
    pub(super) joins: u64,
    pub(super) chats: u64,
    pub(super) closes: u64,
}

impl Counts {
    pub(super) fn add(&mut self, op: &Op) {
        match op {
            Op::Create { .. } | Op::Help => self.creates += 1,
            Op::Assign { .. } => self.assigns += 1,
            Op::Join | Op::CustomerJoin => self.joins += 1,
            Op::Chat { .. } => self.chats += 1,
            Op::Close { .. } => self.closes += 1,
        }
    }

    pub(super) fn total(&self) -> u64 {
        self.creates + self.assigns + self.joins + self.chats + self.closes
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "creates": self.creates,
            "assigns": self.assigns,
            "joins": self.joins,
            "chat_lines": self.chats,
            "closes": self.closes,
        })
    }
}
