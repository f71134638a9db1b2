//! A whole Ticketflow in the test process: embedded broker and store in a
//! temp dir, SDP and LLM simulators, real HTTP on loopback.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sinks::servicedesk::SdpAuth;
use sinks::sim::{LlmSimulator, SdpSimulator};
use sinks::store::HistoryRow;
use topology::app::{self, Running};
use topology::config::Config;
use topology::tenants::{self, AddTenant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Harness {
    pub running: Option<Running>,
    pub sdp: SdpSimulator,
    pub llm: LlmSimulator,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub http: reqwest::Client,
    pub secrets: HashMap<String, String>,
    pub tokens: HashMap<String, String>,
}

pub struct Tenant {
    pub id: &'static str,
    pub auth: SdpAuth,
    pub token: &'static str,
}

impl Harness {
    pub async fn start(extra: &[(&str, &str)]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let sdp = SdpSimulator::start().await.unwrap();
        let llm = LlmSimulator::start().await.unwrap();
        let mut vars: HashMap<String, String> = HashMap::new();
        vars.insert("TICKETFLOW_DATA_DIR".into(), dir.path().display().to_string());
        vars.insert("TICKETFLOW_BROKER_ADDR".into(), format!("127.0.0.1:{}", free_port()));
        vars.insert("TICKETFLOW_HTTP_ADDR".into(), "127.0.0.1:0".into());
        vars.insert("TICKETFLOW_OPS_ADDR".into(), "127.0.0.1:0".into());
        vars.insert("TICKETFLOW_PARTITIONS".into(), "3".into());
        vars.insert("TICKETFLOW_RETRY_TIERS".into(), "200ms,400ms,800ms".into());
        vars.insert("TICKETFLOW_DRAIN_TIMEOUT_MS".into(), "5000".into());
        vars.insert("TICKETFLOW_ADMIN_TOKEN".into(), "admin-secret".into());
        vars.insert("LLM_BASE_URL".into(), llm.base_url());
        vars.insert("LLM_API_KEY".into(), "sk-test".into());
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_map(&vars).unwrap();
        let running = app::start(&config, &app::COMPONENTS.map(String::from)).await.unwrap();
        Harness {
            running: Some(running),
            sdp,
            llm,
            dir,
            config,
            http: reqwest::Client::new(),
            secrets: HashMap::new(),
            tokens: HashMap::new(),
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.running().http_addr.unwrap())
    }

    pub async fn add_tenant(&mut self, t: &Tenant) {
        self.add_tenant_limited(t, 6000).await
    }

    /// Adds a tenant whose SDP calls are limited to `requests_per_minute`.
    pub async fn add_tenant_limited(&mut self, t: &Tenant, requests_per_minute: u32) {
        self.sdp.add_portal(t.id, t.auth, t.token);
        self.sdp.auto_create_requests(true);
        let (secret, token) = tenants::add(
            self.running().store.as_ref(),
            AddTenant {
                tenant_id: t.id.into(),
                servicedesk_url: self.sdp.base_url(t.id),
                servicedesk_token: t.token.into(),
                servicedesk_auth: t.auth.as_str().into(),
                webhook_secret: None,
                requests_per_minute,
                events: vec![],
            },
        )
        .await
        .unwrap();
        self.secrets.insert(t.id.into(), secret);
        self.tokens.insert(t.id.into(), token);
    }

    /// Sends a signed webhook; returns status and JSON body.
    pub async fn send(&self, tenant: &str, ticket: &str, webhook_id: &str, subject: &str) -> (u16, Value) {
        let body = json!({"event": "request_created", "request": {"id": ticket, "subject": subject,
            "description": format!("{subject} — reported by the test suite"), "requester": {"name": "Test", "email": "t@example.test"}, "priority": "High"}})
        .to_string();
        self.send_raw(tenant, webhook_id, &body).await
    }

    pub async fn send_raw(&self, tenant: &str, webhook_id: &str, body: &str) -> (u16, Value) {
        let ts = sinks::now_ms() / 1000;
        let sig = ingest::signature::sign(&self.secrets[tenant], webhook_id, ts, body.as_bytes()).unwrap();
        let resp = self
            .http
            .post(format!("{}/webhooks/servicedesk/{tenant}", self.base()))
            .header("content-type", "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Waits until every job has a history row; returns them by job id.
    pub async fn wait_history(&self, jobs: &[(String, String)], timeout: Duration) -> HashMap<String, HistoryRow> {
        let deadline = Instant::now() + timeout;
        let mut done = HashMap::new();
        loop {
            for (tenant, job) in jobs {
                if !done.contains_key(job) {
                    if let Some(row) = self.running().store.history_by_job(tenant, job).await.unwrap() {
                        done.insert(job.clone(), row);
                    }
                }
            }
            if done.len() == jobs.len() {
                return done;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {} jobs recorded within {timeout:?}",
                done.len(),
                jobs.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops what runs and starts `components` again on the same data dir,
    /// broker address, configuration and simulators (ingest gets a new port).
    pub async fn restart(&mut self, components: &[&str]) {
        self.stop().await;
        let components: Vec<String> = components.iter().map(|c| c.to_string()).collect();
        self.running = Some(app::start(&self.config, &components).await.unwrap());
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}
