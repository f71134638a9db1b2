//! Simulators of the outside world on real HTTP servers (`127.0.0.1:0` by
//! default): ServiceDesk Plus v3 and an OpenAI-compatible LLM. They speak the
//! same wire format the clients in this crate speak to the real services,
//! record what they receive, and inject faults on demand. The demo, the
//! integration tests and the load-test harness all use them.

pub mod llm;
pub mod sdp;

pub use llm::{LlmFault, LlmSimulator, ModelBehaviour, RecordedLlmRequest};
pub use sdp::{RecordedNote, SdpFault, SdpSimulator};

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Binds `addr` and serves `router` until the returned handle is aborted.
pub(crate) async fn serve(addr: SocketAddr, router: axum::Router) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    Ok((local, handle))
}

/// A latency drawn uniformly from `[min, max]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub min: Duration,
    pub max: Duration,
}

impl Latency {
    pub fn fixed(d: Duration) -> Self {
        Latency { min: d, max: d }
    }
    pub(crate) async fn wait(self) {
        if self.max.is_zero() {
            return;
        }
        let span = self.max.saturating_sub(self.min).as_micros() as u64;
        let extra = if span == 0 { 0 } else { rand::random::<u64>() % span };
        tokio::time::sleep(self.min + Duration::from_micros(extra)).await;
    }
}
