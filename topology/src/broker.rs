//! The embedded broker: nisshi (Kafka protocol; formerly tansu) with its
//! SQLite storage under the data dir, in-process. Data and committed offsets
//! survive a restart and a `kill -9` (SQLite in WAL mode with
//! `synchronous = normal`: an acknowledged record survives a process crash,
//! not necessarily a power loss — like a single Kafka broker with its default
//! flush settings).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use nisshi_broker::broker::Broker;
use nisshi_broker::coordinator::group::administrator::Controller;
use nisshi_broker::coordinator::group::administrator::GroupCoordinatorConfig;
use nisshi_storage::ArcDynStorage;
use url::Url;

/// The file the broker keeps its log, offsets and groups in, under the data
/// dir. tansu 0.6 (before the move to nisshi) wrote `broker.db`, whose schema
/// nisshi does not read; a new name keeps the two apart.
pub const BROKER_DB: &str = "broker-nisshi.db";

/// How the embedded broker runs beyond its address and data dir.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// A nisshi storage URL overriding the SQLite file under the data dir
    /// (`TICKETFLOW_BROKER_STORAGE`).
    pub storage: Option<Url>,
    /// Require SASL (SCRAM-SHA-256/512, PLAIN) authentication; credentials
    /// live in the broker's storage (`TICKETFLOW_BROKER_AUTH`).
    pub authentication: bool,
    /// How long the first join of an empty group waits for more members
    /// (Kafka's `group.initial.rebalance.delay.ms`; nisshi's default 3 s).
    pub initial_rebalance_delay: Duration,
    /// How often the broker applies `retention.ms` (nisshi's
    /// `maintenance_interval`; `None`: nisshi's default, 10 minutes). Each
    /// sweep scans the record table under the write lock, so it is kept rare.
    pub maintenance_interval: Option<Duration>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            storage: None,
            authentication: false,
            initial_rebalance_delay: Duration::from_secs(1),
            maintenance_interval: None,
        }
    }
}

/// The broker runs on its own threads and runtime: Kafka clients block
/// threads (synchronous commits, rebalance callbacks), and a broker sharing
/// their runtime could be starved by the very calls waiting on it.
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
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

/// The `sqlite://` URL nisshi opens as `path`. Nisshi joins the URL's host
/// and path onto the working directory, and `PathBuf::push` of an absolute
/// path replaces what came before, so an absolute path needs a `//` path.
pub fn storage_url(path: &Path) -> Result<Url, String> {
    let abs = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let s = abs
        .to_str()
        .ok_or_else(|| format!("data dir {} is not UTF-8", abs.display()))?;
    Url::parse(&format!("sqlite:///{s}")).map_err(|e| format!("broker storage URL for {s}: {e}"))
}

/// Adds nisshi's sweep interval to a storage URL unless the URL sets one.
fn with_maintenance(mut url: Url, every: Option<Duration>) -> Url {
    let Some(every) = every else {
        return url;
    };
    if !url.query_pairs().any(|(k, _)| k == "maintenance_interval") {
        url.query_pairs_mut()
            .append_pair("maintenance_interval", &format!("{}s", every.as_secs().max(1)));
    }
    url
}

impl EmbeddedBroker {
    /// Starts the broker on `addr` with storage at `dir/broker-nisshi.db`
    /// and waits until it accepts connections.
    pub async fn start(addr: SocketAddr, dir: &Path) -> Result<Self, String> {
        Self::start_with(addr, dir, BrokerOptions::default()).await
    }

    pub async fn start_with(addr: SocketAddr, dir: &Path, opts: BrokerOptions) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
        if dir.join("broker.db").exists() && !dir.join(BROKER_DB).exists() {
            tracing::warn!(
                dir = %dir.display(),
                "found broker.db of the tansu 0.6 broker; the nisshi broker starts empty in {BROKER_DB} \
                 (drain the old pipeline before upgrading; broker.db is left untouched)"
            );
        }
        let storage = match &opts.storage {
            Some(url) => url.clone(),
            None => storage_url(&dir.join(BROKER_DB))?,
        };
        let storage = with_maintenance(storage, opts.maintenance_interval);
        let listener = Url::parse(&format!("tcp://{addr}")).map_err(|e| e.to_string())?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failed_flag = failed.clone();
        let thread = std::thread::Builder::new()
            .name("nisshi-broker".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("nisshi")
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
                    let built = Broker::<Controller<ArcDynStorage>, ArcDynStorage>::builder()
                        .node_id(NODE_ID)
                        .cluster_id("ticketflow")
                        .incarnation_id(uuid::Uuid::now_v7())
                        .advertised_listener(listener.clone())
                        .storage(storage)
                        .listener(listener)
                        .authentication(opts.authentication)
                        .group_coordinator(GroupCoordinatorConfig {
                            initial_rebalance_delay: opts.initial_rebalance_delay,
                            ..GroupCoordinatorConfig::default()
                        })
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
                            failed_flag.store(true, std::sync::atomic::Ordering::SeqCst);
                            match r {
                                Err(e) => tracing::error!(error = %e, "embedded broker stopped"),
                                Ok(()) => tracing::error!("embedded broker stopped serving"),
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
            failed,
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

    /// Whether the broker stopped serving on its own (its listener or
    /// storage failed): the process cannot recover it and should exit so a
    /// supervisor restarts it.
    pub fn has_failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::SeqCst) || self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// The salted SCRAM keys nisshi stores for a password (RFC 5802:
/// SaltedPassword = PBKDF2-HMAC(password, salt, i); StoredKey =
/// H(HMAC(SaltedPassword, "Client Key")); ServerKey = HMAC(SaltedPassword,
/// "Server Key")).
macro_rules! scram_keys {
    ($name:ident, $digest:ty) => {
        fn $name(password: &str, salt: &[u8], iterations: u32) -> (Vec<u8>, Vec<u8>) {
            use hmac::{Hmac, Mac};
            use sha2::Digest;
            let mac = |key: &[u8], parts: &[&[u8]]| -> Vec<u8> {
                let mut m = Hmac::<$digest>::new_from_slice(key).expect("HMAC takes any key length");
                for p in parts {
                    m.update(p);
                }
                m.finalize().into_bytes().to_vec()
            };
            let mut u = mac(password.as_bytes(), &[salt, &1u32.to_be_bytes()]);
            let mut salted = u.clone();
            for _ in 1..iterations {
                u = mac(password.as_bytes(), &[&u]);
                salted.iter_mut().zip(&u).for_each(|(s, x)| *s ^= x);
            }
            let stored = <$digest>::digest(mac(&salted, &[b"Client Key"])).to_vec();
            let server = mac(&salted, &[b"Server Key"]);
            (stored, server)
        }
    };
}
scram_keys!(scram_sha256, sha2::Sha256);
scram_keys!(scram_sha512, sha2::Sha512);

/// SCRAM iterations for users Ticketflow creates (Kafka's default 4096 is
/// the minimum; 8192 as nisshi's own tests).
const SCRAM_ITERATIONS: u32 = 8192;

/// Creates (or updates) a SCRAM-SHA-256 and SCRAM-SHA-512 user in the
/// embedded broker's storage, before the broker starts. Credentials cannot
/// be added over the Kafka protocol first: an authenticating broker refuses
/// every request of an unauthenticated client.
pub async fn upsert_scram_user(dir: &Path, opts: &BrokerOptions, user: &str, password: &str) -> Result<(), String> {
    use nisshi_storage::{BrokerRegistrationRequest, ScramCredential, Storage as _, StorageContainer};
    if user.is_empty() || user.contains([',', '=']) {
        return Err(format!("SCRAM user name '{user}' must be non-empty without ',' or '='"));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
    let url = match &opts.storage {
        Some(u) => u.clone(),
        None => storage_url(&dir.join(BROKER_DB))?,
    };
    let mut builder = StorageContainer::builder();
    builder.with_factory(std::sync::Arc::new(nisshi_storage_sql::LiteEngineFactory));
    let storage = builder
        .cluster_id("ticketflow")
        .node_id(NODE_ID)
        .advertised_listener(Url::parse("tcp://127.0.0.1:9092").map_err(|e| e.to_string())?)
        .storage(url)
        .silent(true)
        .build()
        .await
        .map_err(|e| format!("opening the broker storage to add SCRAM user {user}: {e}"))?;
    // The credential rows hang off the cluster row, which registration makes.
    storage
        .register_broker(BrokerRegistrationRequest {
            broker_id: NODE_ID,
            cluster_id: "ticketflow".into(),
            incarnation_id: uuid::Uuid::now_v7(),
            rack: None,
        })
        .await
        .map_err(|e| format!("registering the broker: {e}"))?;
    for mechanism in [
        nisshi_sans_io::ScramMechanism::Scram256,
        nisshi_sans_io::ScramMechanism::Scram512,
    ] {
        let salt: [u8; 16] = rand::random();
        let (stored, server) = match mechanism {
            nisshi_sans_io::ScramMechanism::Scram256 => scram_sha256(password, &salt, SCRAM_ITERATIONS),
            nisshi_sans_io::ScramMechanism::Scram512 => scram_sha512(password, &salt, SCRAM_ITERATIONS),
        };
        storage
            .upsert_user_scram_credential(
                user,
                mechanism,
                ScramCredential {
                    salt: bytes::Bytes::copy_from_slice(&salt),
                    iterations: SCRAM_ITERATIONS as i32,
                    stored_key: bytes::Bytes::from(stored),
                    server_key: bytes::Bytes::from(server),
                },
            )
            .await
            .map_err(|e| format!("storing SCRAM credential of {user}: {e}"))?;
    }
    tracing::info!(user, "SCRAM-SHA-256/512 user stored in the embedded broker");
    Ok(())
}

/// The embedded broker's node id.
const NODE_ID: i32 = 111;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_url_resolves_to_the_absolute_path_as_nisshi_joins_it() {
        let url = storage_url(Path::new("/tmp/tf/broker.db")).unwrap();
        // Re-do nisshi's join (nisshi-storage-sql database_file::path):
        // cwd + domain + path stripped of one '/'.
        let mut p = std::env::current_dir().unwrap();
        if let Some(d) = url.domain() {
            p.push(d);
        }
        p.push(url.path().strip_prefix('/').unwrap_or(url.path()));
        assert_eq!(p, Path::new("/tmp/tf/broker.db"), "{url}");
    }

    /// RFC 7677's SCRAM-SHA-256 example inputs: password "pencil", salt
    /// W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
    #[test]
    fn scram_keys_match_a_known_derivation() {
        use base64::Engine as _;
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        // Expected values from Python's hashlib.pbkdf2_hmac and hmac, an
        // independent implementation.
        let (stored, server) = scram_sha256("pencil", &salt, 4096);
        assert_eq!(
            hex(&stored),
            "586e5df283e6dceb5c3e791d8b8528ec191e664045ce971792e2e6b5bb13e2a6"
        );
        assert_eq!(
            hex(&server),
            "c1f3cbc1c13a9d35a14c0990eed97629ea225863e566a4314ab99f3f00e5d9d5"
        );
        let (_, server512) = scram_sha512("pencil", &salt, 4096);
        assert_eq!(&hex(&server512)[..32], "8d91db6230b5687874fe129bc7206e18");
    }

    #[test]
    fn maintenance_interval_is_added_once() {
        let url = with_maintenance(Url::parse("sqlite:///tmp/x.db").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(url.as_str(), "sqlite:///tmp/x.db?maintenance_interval=30s");
        let kept = with_maintenance(
            Url::parse("sqlite:///tmp/x.db?maintenance_interval=5m").unwrap(),
            Some(Duration::from_secs(30)),
        );
        assert_eq!(kept.as_str(), "sqlite:///tmp/x.db?maintenance_interval=5m");
    }
}
