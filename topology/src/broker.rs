//! The embedded broker: tansu (Kafka protocol) with its SQLite storage
//! under the data dir, in-process. Data and committed offsets survive a
//! restart (and `kill -9`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;
use url::Url;

/// The broker runs on its own threads and runtime: Kafka clients block
/// threads (synchronous commits, rebalance callbacks), and a broker sharing
/// their runtime could be starved by the very calls waiting on it.
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `sqlite://` URL tansu opens as `path`. Tansu joins the URL's host and
/// path onto the working directory, and `PathBuf::push` of an absolute path
/// replaces what came before, so an absolute path needs a `//` path.
pub fn storage_url(path: &Path) -> Result<Url, String> {
    let abs = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s = abs
        .to_str()
        .ok_or_else(|| format!("data dir {} is not UTF-8", abs.display()))?;
    Url::parse(&format!("sqlite:///{s}")).map_err(|e| format!("broker storage URL for {s}: {e}"))
}

impl EmbeddedBroker {
    /// Starts the broker on `addr` with storage at `dir/broker.db` and waits
    /// until it accepts connections.
    pub async fn start(addr: SocketAddr, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
        let storage = storage_url(&dir.join("broker.db"))?;
        let listener = Url::parse(&format!("tcp://{addr}")).map_err(|e| e.to_string())?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("tansu-broker".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("tansu")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("broker runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let built = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
                        .node_id(111)
                        .cluster_id("ticketflow")
                        .incarnation_id(uuid::Uuid::now_v7())
                        .advertised_listener(listener.clone())
                        .storage(storage)
                        .listener(listener)
                        .silent(true)
                        .build()
                        .await;
                    let mut broker = match built {
                        Ok(b) => {
                            let _ = ready_tx.send(Ok(()));
                            b
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("embedded broker: {e}")));
                            return;
                        }
                    };
                    tokio::select! {
                        r = broker.serve(tokio::time::Instant::now()) => {
                            if let Err(e) = r {
                                tracing::error!(error = %e, "embedded broker stopped");
                            }
                        }
                        _ = stop_rx => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(|e| format!("broker thread: {e}"))?;
        let mut broker = EmbeddedBroker {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        ready_rx
            .await
            .map_err(|_| "embedded broker thread ended".to_string())??;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if broker.thread.as_ref().is_some_and(|t| t.is_finished()) {
                broker.thread = None;
                return Err(format!("embedded broker could not listen on {addr} (address in use?)"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("embedded broker did not listen on {addr} within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(%addr, dir = %dir.display(), "embedded broker listening");
        Ok(broker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_url_resolves_to_the_absolute_path_as_tansu_joins_it() {
        let url = storage_url(Path::new("/tmp/tf/broker.db")).unwrap();
        // Re-do tansu's join: cwd + domain + path stripped of one '/'.
        let mut p = std::env::current_dir().unwrap();
        if let Some(d) = url.domain() {
            p.push(d);
        }
        p.push(url.path().strip_prefix('/').unwrap_or(url.path()));
        assert_eq!(p, Path::new("/tmp/tf/broker.db"), "{url}");
    }
}
