//! ServiceDesk Plus v3 REST client.
//!
//! Speaks the documented v3 API: `Accept: application/vnd.manageengine.sdp.v3+json`,
//! `input_data` as a form field for writes and a query parameter for list
//! reads, `response_status.status_code` 2000 for success. Failures can arrive
//! inside HTTP 200, so every response body is checked, not only the status.

mod client;
pub mod guard;

pub use client::{
    SdpAuth, SdpClient, SdpError, SdpNote, SdpRequest, SdpTenant, DEFAULT_RATE_LIMIT_BACKOFF, SDP_ACCEPT,
};
pub use guard::{SdpGuards, TenantGuard, Throttled};
