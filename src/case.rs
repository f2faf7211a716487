//! The service case: its session code, its two seats and the status derived
//! from them, and the two JSON views of a case (agent and customer).

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::RngExt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A session code: `s` followed by 8 (or 11) digits, shown as `s12-345-678`.
///
/// Held as its number and its digit count, so it is `Copy` and a look-up
/// never allocates. Parsing accepts any case of `s`, and dashes and spaces
/// anywhere, so `S12345678`, `12-345-678` and `s12 345 678` are all one code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionCode {
    len: u8,
    value: u64,
}

/// The number of digits a code may have.
pub const CODE_DIGITS: [usize; 2] = [8, 11];

impl SessionCode {
    /// Sorts before every code (a lower bound for ranges).
    pub const MIN: SessionCode = SessionCode { len: 0, value: 0 };

    /// Parses a code as a client typed it. Returns `None` for anything that
    /// is not `s` (optional) followed by 8 or 11 digits.
    pub fn parse(input: &str) -> Option<SessionCode> {
        if input.len() > 40 {
            return None;
        }
        let mut rest = input.trim();
        if let Some(stripped) = rest.strip_prefix(['s', 'S']) {
            rest = stripped;
        }
        let (mut len, mut value) = (0u8, 0u64);
        for c in rest.bytes() {
            match c {
                b'0'..=b'9' => {
                    len += 1;
                    if usize::from(len) > CODE_DIGITS[1] {
                        return None;
                    }
                    value = value * 10 + u64::from(c - b'0');
                }
                b'-' | b' ' => {}
                _ => return None,
            }
        }
        CODE_DIGITS
            .contains(&usize::from(len))
            .then_some(SessionCode { len, value })
    }

    /// Draws a fresh code of `len` digits from the thread-local CSPRNG
    /// (ChaCha, seeded from the operating system).
    pub fn random(len: usize) -> SessionCode {
        let len = if len == CODE_DIGITS[1] {
            CODE_DIGITS[1]
        } else {
            CODE_DIGITS[0]
        };
        let value = rand::rng().random_range(0..10u64.pow(len as u32));
        SessionCode {
            len: len as u8,
            value,
        }
    }

    /// A number that identifies the code among all codes (its digit count
    /// and value), for storage keys.
    pub fn key(&self) -> u64 {
        (u64::from(self.len) << 56) | self.value
    }

    /// The digits alone, zero-padded (the form used in cursors).
    pub fn digits(&self) -> String {
        format!("{:0width$}", self.value, width = usize::from(self.len))
    }
}

impl fmt::Display for SessionCode {
    /// `s12-345-678`, or `s12-345-678-901` for 11 digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.digits();
        write!(f, "s{}-{}-{}", &d[0..2], &d[2..5], &d[5..8])?;
        if d.len() > 8 {
            write!(f, "-{}", &d[8..])?;
        }
        Ok(())
    }
}

impl fmt::Debug for SessionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for SessionCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SessionCode::parse(&s).ok_or_else(|| serde::de::Error::custom("invalid session code"))
    }
}

/// The derived status of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    Pending,
    InProgress,
    Closed,
    Expired,
}

impl Status {
    /// Every status, in the order of the lifecycle.
    pub const ALL: [Status; 5] = [
        Status::New,
        Status::Pending,
        Status::InProgress,
        Status::Closed,
        Status::Expired,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Pending => "pending",
            Status::InProgress => "in_progress",
            Status::Closed => "closed",
            Status::Expired => "expired",
        }
    }

    /// Open means new, pending or in progress: joinable and closable.
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Closed | Status::Expired)
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// How a case ended, when it did. Closing and expiry are terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Terminal {
    Closed,
    Expired,
}

/// The inputs of the status function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seats {
    pub customer: bool,
    pub supporter: bool,
    /// Someone has sat in either seat at some point.
    pub ever_occupied: bool,
}

/// The status table of PRODUCT.md, checked top-down. The one place status
/// is decided; it is never stored.
pub fn status(terminal: Option<Terminal>, seats: Seats) -> Status {
    match terminal {
        Some(Terminal::Closed) => Status::Closed,
        Some(Terminal::Expired) => Status::Expired,
        None if seats.customer && seats.supporter => Status::InProgress,
        None if seats.customer || seats.supporter || seats.ever_occupied => Status::Pending,
        None => Status::New,
    }
}

/// Where a case came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Manual,
    Quicksupport,
    Sos,
}

/// The end customer, as far as known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub name: Option<String>,
    pub email: Option<String>,
}

/// RFC 3339 UTC with a `Z` and millisecond precision, as the wire wants.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(t))
}

/// A time as the wire writes it (RFC 3339, milliseconds, `Z`), both ways.
pub mod wire_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

fn ser_opt_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_time(t)),
        None => s.serialize_none(),
    }
}

/// The case object as agents and integrations see it (PROTOCOL.md, "Case
/// object"). Built fresh from the broker's state each time it is sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseView {
    pub code: SessionCode,
    pub company: String,
    pub group: String,
    pub name: String,
    pub description: String,
    pub customer: Customer,
    pub source: Source,
    pub created_by: String,
    pub assignee: Option<String>,
    pub status: Status,
    pub customer_connected: bool,
    pub supporter_connected: bool,
    #[serde(serialize_with = "ser_time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_time")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_opt_time")]
    pub assigned_at: Option<DateTime<Utc>>,
    /// Who made the current assignment: an agent id, or `auto`.
    pub assigned_by: Option<String>,
    #[serde(serialize_with = "ser_time")]
    pub expires_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_opt_time")]
    pub closed_at: Option<DateTime<Utc>>,
    pub closed_by: Option<String>,
    /// The agents invited to help (`invite`), by id; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub helpers: Vec<String>,
    /// The group's service levels for this case; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<SlaView>,
    /// The offer waiting for an agent's `accept`; absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<Offer>,
}

/// An offer of a case to one agent, until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The agent's id.
    pub agent: String,
    #[serde(with = "wire_time")]
    pub expires_at: DateTime<Utc>,
}

/// Which service level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaKind {
    /// A supporter in the session.
    FirstResponse,
    /// The case closed.
    Resolution,
}

impl SlaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SlaKind::FirstResponse => "first_response",
            SlaKind::Resolution => "resolution",
        }
    }
}

/// A case's service levels as agents see them: when each is due (`null`
/// for one the group does not set) and those already missed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaView {
    #[serde(serialize_with = "ser_opt_time")]
    pub first_response_due: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ser_opt_time")]
    pub resolution_due: Option<DateTime<Utc>>,
    pub breached: Vec<SlaKind>,
}

/// The supporter as a customer sees them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SupporterView {
    pub name: String,
}

/// The reduced case object customers see.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerCaseView {
    pub code: SessionCode,
    pub status: Status,
    pub name: String,
    pub customer_connected: bool,
    pub supporter_connected: bool,
    pub supporter: Option<SupporterView>,
    #[serde(serialize_with = "ser_time")]
    pub expires_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seats(customer: bool, supporter: bool, ever: bool) -> Seats {
        Seats {
            customer,
            supporter,
            ever_occupied: ever,
        }
    }

    #[test]
    fn status_table_row_by_row() {
        // Row 1: closed wins over everything, even occupied seats.
        for (c, s, e) in [(true, true, true), (false, false, false)] {
            assert_eq!(
                status(Some(Terminal::Closed), seats(c, s, e)),
                Status::Closed
            );
        }
        // Row 2: expired.
        for (c, s, e) in [(true, true, true), (false, false, false)] {
            assert_eq!(
                status(Some(Terminal::Expired), seats(c, s, e)),
                Status::Expired
            );
        }
        // Row 3: both seats.
        assert_eq!(status(None, seats(true, true, true)), Status::InProgress);
        // Row 4: one seat, or once occupied.
        assert_eq!(status(None, seats(true, false, true)), Status::Pending);
        assert_eq!(status(None, seats(false, true, true)), Status::Pending);
        assert_eq!(status(None, seats(false, false, true)), Status::Pending);
        // Row 5: nobody ever.
        assert_eq!(status(None, seats(false, false, false)), Status::New);
    }

    #[test]
    fn codes_parse_with_or_without_dashes() {
        let c = SessionCode::parse("s12-345-678").unwrap();
        assert_eq!(c.to_string(), "s12-345-678");
        for form in ["12345678", "S12345678", " s12 345 678 ", "s-12-345678"] {
            assert_eq!(SessionCode::parse(form), Some(c), "{form}");
        }
        let long = SessionCode::parse("s12345678901").unwrap();
        assert_eq!(long.to_string(), "s12-345-678-901");
        for bad in [
            "",
            "s",
            "s1234567",
            "s123456789",
            "x12345678",
            "s12_345_678",
            "s१२३४५६७८",
        ] {
            assert_eq!(SessionCode::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn random_codes_have_the_asked_length() {
        for len in CODE_DIGITS {
            let c = SessionCode::random(len);
            assert_eq!(c.digits().len(), len);
            assert_eq!(SessionCode::parse(&c.to_string()), Some(c));
        }
    }

    proptest::proptest! {
        /// The table's invariants for every input: terminal states win,
        /// `in_progress` means both seats, `new` means nobody ever.
        #[test]
        fn status_properties(
            terminal in proptest::option::of(proptest::prop_oneof![
                proptest::strategy::Just(Terminal::Closed),
                proptest::strategy::Just(Terminal::Expired),
            ]),
            customer: bool,
            supporter: bool,
            ever: bool,
        ) {
            // A seat occupied now was occupied once.
            let ever = ever || customer || supporter;
            let st = status(terminal, seats(customer, supporter, ever));
            match terminal {
                Some(Terminal::Closed) => proptest::prop_assert_eq!(st, Status::Closed),
                Some(Terminal::Expired) => proptest::prop_assert_eq!(st, Status::Expired),
                None => {
                    proptest::prop_assert!(st.is_open());
                    proptest::prop_assert_eq!(st == Status::InProgress, customer && supporter);
                    proptest::prop_assert_eq!(st == Status::New, !ever);
                    proptest::prop_assert_eq!(
                        st == Status::Pending,
                        ever && !(customer && supporter)
                    );
                }
            }
        }
    }
}
