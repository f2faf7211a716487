//! Field limits, in Unicode characters (PRODUCT.md), and the other bounds
//! of what a case holds.

pub const NAME: usize = 100;
pub const DESCRIPTION: usize = 4000;
pub const CUSTOMER_NAME: usize = 100;
pub const EMAIL: usize = 254;
pub const CHAT: usize = 4000;
/// Bytes of the serialised `data` of a `signal`.
pub const SIGNAL_BYTES: usize = 32 * 1024;
/// Chat lines kept per case.
pub const TRANSCRIPT: usize = 1000;
/// The largest page of `GET /v1/cases`.
pub const PAGE_MAX: usize = 1000;
/// Resume tokens are this many random bytes (128 bits).
pub const RESUME_TOKEN_BYTES: usize = 16;
