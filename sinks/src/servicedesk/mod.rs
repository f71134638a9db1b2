//! ServiceDesk Plus v3 REST client.
//!
//! Speaks the documented v3 API: `Accept: application/vnd.manageengine.sdp.v3+json`,
//! `input_data` as a form field for writes and a query parameter for list
//! reads, `response_status.status_code` 2000 for success. Failures can arrive
//! inside HTTP 200, so every response body is checked, not only the status.

mod client;
pub mod envelope;
pub mod guard;
mod oauth;

pub use client::{
    NotesPage, SdpAuth, SdpClient, SdpError, SdpNote, SdpRequest, SdpTenant, CLOSED_STATUSES,
    DEFAULT_RATE_LIMIT_BACKOFF, NOTES_PAGE_SIZE, SDP_ACCEPT,
};
pub use envelope::{parse_envelope, parse_response_status, Envelope, ResponseStatus};
pub use guard::{SdpGuards, TenantGuard, Throttled};
pub use oauth::{ZohoOAuth, DEFAULT_ZOHO_ACCOUNTS_URL, TOKEN_EXPIRY_MARGIN};
