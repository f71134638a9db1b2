//! External mode (`--target-url`): drive an already running Ticketflow
//! deployment instead of the in-process rig.
//!
//! The harness starts only its SDP and LLM simulators (on
//! `--sdp-sim-addr` / `--llm-sim-addr`, fixed so the deployment can be
//! configured beforehand: each tenant's `--servicedesk-url` is
//! `http://<sdp-sim-addr>/app/<tenant_id>`, `LLM_BASE_URL` is
//! `http://<llm-sim-addr>/v1`). Webhooks are signed with the secrets given
//! and sent to `{target}/webhooks/servicedesk/{tenant}`; notes are counted
//! at the SDP simulator. What the harness cannot see inside the deployment
//! is read through its HTTP API when the tokens are given, and reported as
//! not observed otherwise: history rows (skipped / failed jobs) with each
//! tenant's `--api-token`; consumer lag and the DLQs with `--admin-token`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use sinks::store::HistoryStatus;

/// Scenarios that need nothing of the rig but its simulators.
pub const SCENARIOS: [&str; 5] = ["ingest", "pipeline", "burst", "sdp-throttle", "llm-outage"];

/// What the harness may read of a running deployment through its HTTP API.
pub struct DeploymentApi {
    http: reqwest::Client,
    base: String,
    admin_token: Option<String>,
    /// Tenant id → the tenant's API bearer token.
    api_tokens: HashMap<String, String>,
}

/// `--target-url` checked: the base URL without a trailing slash.
pub fn parse_target(url: &str) -> anyhow::Result<reqwest::Url> {
    let u = reqwest::Url::parse(url).with_context(|| format!("--target-url '{url}' is not a URL"))?;
    if !matches!(u.scheme(), "http" | "https") {
        bail!("--target-url '{url}' must be an http:// or https:// URL");
    }
    if u.host_str().is_none_or(str::is_empty) {
        bail!("--target-url '{url}' has no host");
    }
    if u.query().is_some() || u.fragment().is_some() {
        bail!("--target-url '{url}' must be a base URL without a query or fragment");
    }
    Ok(u)
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Refuses a target whose host does not resolve to loopback only
/// (127.0.0.0/8, ::1), unless `allow` (`--allow-non-loopback`).
pub async fn check_loopback(url: &reqwest::Url, allow: bool) -> anyhow::Result<()> {
    if allow {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ips: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            let port = url.port_or_known_default().unwrap_or(80);
            tokio::net::lookup_host((bare, port))
                .await
                .with_context(|| format!("resolving the --target-url host '{host}'"))?
                .map(|a| a.ip())
                .collect()
        }
    };
    if ips.is_empty() || !ips.iter().copied().all(is_loopback) {
        bail!(
            "--target-url host '{host}' resolves to {ips:?}, not loopback only (127.0.0.0/8, ::1): load tests target loopback unless --allow-non-loopback is given"
        );
    }
    Ok(())
}

/// The simulators listen where the deployment reaches them; loopback only
/// unless `--allow-non-loopback`.
pub fn check_sim_addr(flag: &str, addr: SocketAddr, allow: bool) -> anyhow::Result<()> {
    if !allow && !is_loopback(addr.ip()) {
        bail!("{flag} {addr} is not a loopback address: the simulators listen on loopback unless --allow-non-loopback is given");
    }
    Ok(())
}

/// A client that follows no redirect: the loopback check holds for every
/// request, not only the first hop.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

async fn get(http: &reqwest::Client, url: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
    let mut req = http.get(url).timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

impl DeploymentApi {
    /// Checks the deployment answers and the tokens given are accepted.
    pub async fn connect(
        http: reqwest::Client,
        base: &str,
        admin_token: Option<String>,
        api_tokens: HashMap<String, String>,
    ) -> anyhow::Result<Self> {
        let (s, _) = get(&http, &format!("{base}/health"), None)
            .await
            .with_context(|| format!("the target {base} does not answer (is Ticketflow's ingest running there?)"))?;
        if s != 200 {
            bail!("the target {base} answers GET /health with HTTP {s}, not 200");
        }
        if let Some(t) = &admin_token {
            let (s, body) = get(&http, &format!("{base}/api/v1/lag"), Some(t)).await?;
            if s != 200 {
                bail!("the deployment refused --admin-token on GET /api/v1/lag: HTTP {s} {body}");
            }
        }
        for (tenant, token) in &api_tokens {
            let (s, body) = get(
                &http,
                &format!("{base}/api/v1/enhancements?ticket_id=loadtest-preflight"),
                Some(token),
            )
            .await?;
            if s != 200 {
                bail!("the deployment refused the --api-token of tenant '{tenant}': HTTP {s} {body}");
            }
            if body["tenant_id"] != Value::String(tenant.clone()) {
                bail!(
                    "the --api-token given for tenant '{tenant}' belongs to tenant {}: give the tokens in the order of --tenant",
                    body["tenant_id"]
                );
            }
        }
        Ok(DeploymentApi {
            http,
            base: base.to_string(),
            admin_token,
            api_tokens,
        })
    }

    pub fn observes_admin(&self) -> bool {
        self.admin_token.is_some()
    }

    pub fn observes_history(&self) -> bool {
        !self.api_tokens.is_empty()
    }

    async fn lag_report(&self) -> Option<Value> {
        let t = self.admin_token.as_deref()?;
        match get(&self.http, &format!("{}/api/v1/lag", self.base), Some(t)).await {
            Ok((200, v)) => Some(v),
            _ => None,
        }
    }

    /// Records not yet consumed, summed over every stage group.
    pub async fn total_lag(&self) -> Option<i64> {
        let v = self.lag_report().await?;
        Some(
            v["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g["total_lag"].as_i64())
                .sum(),
        )
    }

    /// Records ever written to the webhooks topic (sum of its high
    /// watermarks), as the validate group sees it.
    pub async fn webhook_records(&self) -> Option<i64> {
        let v = self.lag_report().await?;
        let group = v["groups"].as_array()?.iter().find(|g| g["stage"] == "validate")?;
        Some(
            group["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["topic"].as_str().is_some_and(|t| t.ends_with(".webhooks")))
                .filter_map(|p| p["high"].as_i64())
                .sum(),
        )
    }

    /// DLQ records (of every stage) that belong to `jobs`; None without
    /// the admin token or when the API does not answer.
    pub async fn dlq_records_of(&self, jobs: &HashSet<&str>) -> Option<u64> {
        let t = self.admin_token.as_deref()?;
        let mut n = 0;
        for stage in topology::dataflow::STAGES {
            let url = format!("{}/api/v1/dlq?stage={stage}&limit=10000", self.base);
            let (200, v) = get(&self.http, &url, Some(t)).await.ok()? else {
                return None;
            };
            n += v["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| {
                    [&r["headers"]["job_id"], &r["envelope"]["job_id"]]
                        .iter()
                        .any(|j| j.as_str().is_some_and(|j| jobs.contains(j)))
                })
                .count() as u64;
        }
        Some(n)
    }

    /// The history status of one job; None when there is no row yet, the
    /// tenant's token was not given, or the API did not answer.
    pub async fn history_status(&self, tenant: &str, job: &str) -> Option<HistoryStatus> {
        let token = self.api_tokens.get(tenant)?;
        let url = format!("{}/api/v1/enhancements/{job}", self.base);
        match get(&self.http, &url, Some(token)).await {
            Ok((200, v)) => serde_json::from_value(v["status"].clone()).ok(),
            Ok((404, _)) => None,
            Ok((s, v)) => {
                eprintln!("history of job {job}: HTTP {s} {v}");
                None
            }
            Err(e) => {
                eprintln!("history of job {job}: {e:#}");
                None
            }
        }
    }
}

/// What the operator must configure in the deployment, printed at start.
pub fn setup_text(tenants: &[String], sdp_addr: SocketAddr, llm_url: &str, sdp_token: &str, sdp_auth: &str) -> String {
    let mut s = format!(
        "simulators: SDP http://{sdp_addr} · LLM {llm_url}\n\
         the deployment must use them: LLM_BASE_URL={llm_url}, and for each tenant\n"
    );
    for t in tenants {
        s.push_str(&format!(
            "  ticketflow tenants add {t} --servicedesk-url http://{sdp_addr}/app/{t} --servicedesk-token {sdp_token} --servicedesk-auth {sdp_auth}\n"
        ));
    }
    if sdp_addr.port() == 0 {
        s.push_str(
            "(port 0 is replaced by an ephemeral port: pass --sdp-sim-addr / --llm-sim-addr to fix the addresses)\n",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_targets_unless_allowed() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5:1/",
            "http://[::1]:8080",
            "http://localhost:8080",
        ] {
            let u = parse_target(ok).unwrap();
            check_loopback(&u, false).await.unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["http://10.0.0.1:8080", "http://192.168.1.2", "http://[2001:db8::1]:80"] {
            let u = parse_target(bad).unwrap();
            let e = check_loopback(&u, false).await.unwrap_err().to_string();
            assert!(e.contains("--allow-non-loopback"), "{e}");
            check_loopback(&u, true).await.unwrap();
        }
        assert!(parse_target("ftp://127.0.0.1").is_err());
        assert!(parse_target("127.0.0.1:8080").is_err());
        assert!(check_sim_addr("--sdp-sim-addr", "0.0.0.0:1".parse().unwrap(), false).is_err());
        assert!(check_sim_addr("--sdp-sim-addr", "127.0.0.1:0".parse().unwrap(), false).is_ok());
    }
}
