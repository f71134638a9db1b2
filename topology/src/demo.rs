//! `ticketflow demo`: the whole pipeline on one machine with nothing
//! installed — embedded broker and store in a fresh temporary data dir, the
//! SDP and LLM simulators on loopback, a demo tenant, a handful of realistic
//! signed webhooks, and each ticket's note and history status printed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use processors::stages::context_search::ticket_document;
use serde_json::{json, Value};
use sinks::servicedesk::SdpAuth;
use sinks::sim::{LlmSimulator, SdpSimulator};
use sinks::store::{DocKind, HistoryRow};

use crate::app;
use crate::config::Config;
use crate::tenants::{self, AddTenant};

struct DemoTicket {
    id: &'static str,
    subject: &'static str,
    description: &'static str,
    requester: (&'static str, &'static str),
    priority: &'static str,
    category: &'static str,
}

const FIRST_WAVE: &[DemoTicket] = &[
    DemoTicket {
        id: "1001",
        subject: "VPN disconnects every 10 minutes for remote staff",
        description: "Since this morning the GlobalProtect VPN drops every ten minutes for everyone working from home (gateway vpn-gw01.acme.example). Reconnecting works, then it drops again.",
        requester: ("Dana Whitfield", "dana.whitfield@acme.example"),
        priority: "High",
        category: "Network",
    },
    DemoTicket {
        id: "1002",
        subject: "Cannot reach file server from accounting PCs",
        description: "Accounting workstation 10.20.3.44 cannot open \\\\fs01\\finance. The file server is 10.20.1.15; ping times out. Other floors are fine.",
        requester: ("Luis Ortega", "luis.ortega@acme.example"),
        priority: "High",
        category: "Network",
    },
    DemoTicket {
        id: "1003",
        subject: "Outlook crashes when opening the shared team calendar",
        description: "Outlook 365 closes without an error as soon as I click the Sales team shared calendar. Safe mode works.",
        requester: ("Priya Raman", "priya.raman@acme.example"),
        priority: "Medium",
        category: "Email",
    },
];

const SECOND_WAVE: &[DemoTicket] = &[
    DemoTicket {
        id: "1004",
        subject: "Remote staff VPN keeps disconnecting",
        description:
            "Home workers report the VPN disconnects every few minutes; they have to reconnect to keep working.",
        requester: ("Sam Okafor", "sam.okafor@acme.example"),
        priority: "High",
        category: "Network",
    },
    DemoTicket {
        id: "1005",
        subject: "Printer on 3rd floor shows paper jam but is empty",
        description: "The HP LaserJet PRN-3F-312 near room 312 reports a paper jam in tray 2. There is no paper stuck.",
        requester: ("Mia Chen", "mia.chen@acme.example"),
        priority: "Low",
        category: "Hardware",
    },
];

/// The demo tenant's own knowledge base, imported as `ticketflow kb import`
/// would.
const DEMO_ARTICLES: &str = r#"[
  {"id": "ACME-KB-12", "title": "HP LaserJet reports a paper jam with no paper stuck",
   "content": "Ghost jams come from a dusty paper-path sensor: power the printer off, blow out the tray 2 sensor with compressed air, then print a cleaning page.",
   "url": "https://wiki.acme.example/kb/12", "keywords": ["printer", "jam", "laserjet"]},
  {"id": "ACME-KB-31", "title": "GlobalProtect VPN keeps dropping for home workers",
   "content": "Compare the gateway's idle timeout with the client's keep-alive; a keep-alive longer than the timeout drops idle tunnels every few minutes.",
   "url": "https://wiki.acme.example/kb/31", "keywords": ["vpn", "globalprotect", "disconnect"]}
]"#;

/// The demo tenant's asset inventory, imported as `ticketflow assets
/// import` would.
const DEMO_ASSETS: &str = "name,ip,hostname,type,owner,site
VPN-GW01,10.20.0.5,vpn-gw01.acme.example,VPN Gateway,network-team,HQ
PRN-3F-312,10.20.3.120,prn-3f-312.acme.example,Printer,facilities,HQ 3rd floor
fs01,10.20.1.15,fs01.acme.example,File Server,infra-team,HQ
";

/// Tickets resolved before Ticketflow was installed, as the record stage
/// would have indexed them: (id, subject, description, resolution).
const PAST_TICKETS: &[(&str, &str, &str, &str)] = &[
    (
        "871",
        "Paper jam error on LaserJet but tray is empty",
        "The 3rd floor printer keeps reporting a jam in tray 2; nothing is stuck.",
        "Cleaned the paper-path sensor of tray 2 with compressed air; the jam error cleared.",
    ),
    (
        "902",
        "Shared calendar makes Outlook close",
        "Outlook quits whenever the team calendar is opened.",
        "Removed and re-added the shared calendar and rebuilt the Outlook profile.",
    ),
];

/// Gives the demo tenant what a real one would have: imported articles and
/// inventory (through the same code as the CLI), and resolved tickets.
async fn seed_context(running: &app::Running, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let kb = dir.join("demo-kb.json");
    std::fs::write(&kb, DEMO_ARTICLES)?;
    let articles = crate::import::import_articles(running.store.as_ref(), "acme", &kb).await?;
    let inventory = dir.join("demo-assets.csv");
    std::fs::write(&inventory, DEMO_ASSETS)?;
    let assets = crate::import::import_assets(running.store.as_ref(), "acme", &inventory).await?;
    let past: Vec<_> = PAST_TICKETS
        .iter()
        .map(|(id, subject, description, resolution)| {
            ticket_document(id, Some(subject), Some(description), Some(resolution), "success")
        })
        .collect();
    running.store.index_documents("acme", DocKind::Ticket, &past).await?;
    println!(
        "  imported {articles} knowledge-base articles and {assets} inventory assets; {} resolved past tickets indexed",
        past.len()
    );
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Turns note HTML into readable text lines: paragraphs and list items on
/// their own lines, numbered steps numbered, table cells separated by `|`,
/// links followed by their address.
fn note_text(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    let mut numbered: Option<u32> = None;
    let mut href: Option<String> = None;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            rest = &rest[start..];
            break;
        };
        let tag = &rest[start + 1..start + end];
        let name = tag
            .trim_start_matches('/')
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let closing = tag.starts_with('/');
        match (name.as_str(), closing) {
            ("br", _) | ("p", true) | ("tr", true) | ("table", false) | ("ul", false) => out.push('\n'),
            ("ol", false) => {
                numbered = Some(0);
                out.push('\n');
            }
            ("ol", true) => numbered = None,
            ("li", false) => match numbered.as_mut() {
                Some(n) => {
                    *n += 1;
                    out.push_str(&format!("  {n}. "));
                }
                None => out.push_str("  - "),
            },
            ("li", true) => out.push('\n'),
            ("td" | "th", true) => out.push_str(" | "),
            ("a", false) => {
                href = tag
                    .split("href=\"")
                    .nth(1)
                    .and_then(|h| h.split('"').next())
                    .map(str::to_string)
            }
            ("a", true) => {
                if let Some(h) = href.take() {
                    out.push_str(&format!(" <{h}>"));
                }
            }
            _ => {}
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.trim_end().trim_end_matches(" |").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

async fn send(http: &reqwest::Client, url: &str, secret: &str, t: &DemoTicket, n: usize) -> anyhow::Result<String> {
    let body = json!({
        "event": "request_created",
        "request": {
            "id": t.id, "subject": t.subject, "description": t.description,
            "requester": {"name": t.requester.0, "email": t.requester.1},
            "priority": t.priority, "category": t.category, "site": "HQ",
            "created_time": sinks::now_ms().to_string()
        }
    })
    .to_string();
    let id = format!("msg_demo_{n}_{}", uuid::Uuid::new_v4().simple());
    let ts = sinks::now_ms() / 1000;
    let sig = ingest::signature::sign(secret, &id, ts, body.as_bytes()).map_err(anyhow::Error::msg)?;
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if status.as_u16() != 202 {
        bail!("webhook for ticket {} answered {status}: {v}", t.id);
    }
    Ok(v["job_id"].as_str().unwrap_or_default().to_string())
}

async fn wait_for(
    running: &app::Running,
    tenant: &str,
    jobs: &[(String, &DemoTicket)],
    timeout: Duration,
) -> anyhow::Result<HashMap<String, HistoryRow>> {
    let deadline = Instant::now() + timeout;
    let mut done = HashMap::new();
    while done.len() < jobs.len() {
        for (job, _) in jobs {
            if !done.contains_key(job) {
                if let Some(row) = running.store.history_by_job(tenant, job).await? {
                    done.insert(job.clone(), row);
                }
            }
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {} demo jobs finished within {} s",
                done.len(),
                jobs.len(),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(done)
}

pub async fn run() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ticketflow-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sdp = SdpSimulator::start().await?;
    let llm = LlmSimulator::start().await?;
    let mut vars: HashMap<String, String> = HashMap::new();
    vars.insert("TICKETFLOW_DATA_DIR".into(), dir.display().to_string());
    vars.insert("TICKETFLOW_BROKER_ADDR".into(), format!("127.0.0.1:{}", free_port()?));
    vars.insert("TICKETFLOW_HTTP_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("TICKETFLOW_OPS_ADDR".into(), "127.0.0.1:0".into());
    vars.insert("TICKETFLOW_PARTITIONS".into(), "2".into());
    vars.insert("TICKETFLOW_RETRY_TIERS".into(), "1s,2s,4s".into());
    vars.insert("TICKETFLOW_DRAIN_TIMEOUT_MS".into(), "5000".into());
    vars.insert("LLM_BASE_URL".into(), llm.base_url());
    vars.insert("LLM_MODEL".into(), "demo/simulated-llm".into());
    let config = Config::from_map(&vars)?;

    println!("Ticketflow demo: embedded broker and store in {}", dir.display());
    let started = Instant::now();
    let running = app::start(&config, &app::COMPONENTS.map(String::from))
        .await
        .context("starting ticketflow")?;
    let http_addr = running.http_addr.context("ingest address")?;
    println!(
        "  broker {} · ingest http://{http_addr} · SDP simulator {} · LLM simulator {}",
        running.bootstrap,
        sdp.base_url("acme"),
        llm.base_url()
    );

    sdp.add_portal("acme", SdpAuth::Zoho, "demo-zoho-token");
    for t in FIRST_WAVE.iter().chain(SECOND_WAVE) {
        sdp.add_request(
            "acme",
            t.id,
            json!({"subject": t.subject, "description": t.description, "status": {"name": "Open"},
            "priority": {"name": t.priority}, "requester": {"name": t.requester.0, "email_id": t.requester.1}}),
        );
    }
    sdp.add_solution(
        "acme",
        "KB-101",
        "VPN client disconnects periodically",
        "Raise the GlobalProtect keep-alive to 60 s and check the gateway's idle timeout.",
    );
    sdp.add_solution(
        "acme",
        "KB-214",
        "Outlook crashes opening shared calendar",
        "Remove and re-add the shared calendar; clear the Outlook profile cache.",
    );
    sdp.add_solution(
        "acme",
        "KB-330",
        "File server unreachable from one subnet",
        "Check the inter-VLAN ACL and the server's firewall profile.",
    );
    sdp.add_asset("acme", "fs01", "10.20.1.15", "File Server", "infra-team", "HQ");
    sdp.add_asset("acme", "ACC-WS-044", "10.20.3.44", "Workstation", "Luis Ortega", "HQ");

    let (secret, _token) = tenants::add(
        running.store.as_ref(),
        AddTenant {
            tenant_id: "acme".into(),
            servicedesk_url: sdp.base_url("acme"),
            servicedesk_token: "demo-zoho-token".into(),
            servicedesk_auth: "zoho".into(),
            webhook_secret: None,
            requests_per_minute: 600,
            events: vec![],
        },
    )
    .await
    .map_err(anyhow::Error::msg)?;
    seed_context(&running, &dir).await?;
    println!("  tenant 'acme' created; sending signed webhooks\n");

    let http = reqwest::Client::new();
    let url = format!("http://{http_addr}/webhooks/servicedesk/acme");
    let mut results = Vec::new();
    let mut n = 0;
    for wave in [FIRST_WAVE, SECOND_WAVE] {
        let mut jobs = Vec::new();
        for t in wave {
            n += 1;
            jobs.push((send(&http, &url, &secret, t, n).await?, t));
        }
        let rows = wait_for(&running, "acme", &jobs, Duration::from_secs(120)).await?;
        for (job, t) in jobs {
            results.push((t, rows[&job].clone()));
        }
    }

    let notes = sdp.notes();
    let mut all_ok = true;
    for (t, row) in &results {
        println!("━━ Ticket #{} — {}", t.id, t.subject);
        println!(
            "   history: {} ({}) · job {} · context: {} similar, {} KB, {} IP refs · {} ms end to end",
            row.status.as_str(),
            row.method.as_deref().unwrap_or("-"),
            row.job_id,
            row.counts.similar_tickets,
            row.counts.kb_articles,
            row.counts.ip_references,
            row.timings.get("total").copied().unwrap_or(0)
        );
        match notes.iter().find(|n| n.request_id == t.id) {
            Some(note) => {
                println!("   note {} posted to SDP request {}:", note.note_id, note.request_id);
                for line in note_text(&note.description).lines().filter(|l| !l.trim().is_empty()) {
                    println!("     {line}");
                }
            }
            None => {
                all_ok = false;
                println!("   NO NOTE POSTED");
            }
        }
        println!();
    }
    println!(
        "{} tickets, {} notes, {} LLM calls, in {:.1} s",
        results.len(),
        notes.len(),
        llm.requests(),
        started.elapsed().as_secs_f64()
    );
    running.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    if !all_ok || notes.len() != results.len() {
        bail!("demo finished with {} notes for {} tickets", notes.len(), results.len());
    }
    Ok(())
}

#[cfg(test)]
mod note_text_tests {
    use super::note_text;

    #[test]
    fn notes_read_as_lines_with_numbered_steps_table_rows_and_links() {
        let html = r#"<p><b>Ticketflow summary</b></p><p><b>Summary:</b> A &amp; B</p><p><b>Suggested steps:</b></p><ol><li>One</li><li>Two</li></ol><table border="1"><tr><th>Ticket</th><th>Subject</th></tr><tr><td>#7</td><td>VPN &quot;drops&quot;</td></tr></table><ul><li><a href="https://kb.example.test/1" target="_blank">Guide</a> (KB-1)</li></ul>"#;
        let lines: Vec<String> = note_text(html)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "Ticketflow summary",
                "Summary: A & B",
                "Suggested steps:",
                "  1. One",
                "  2. Two",
                "Ticket | Subject",
                "#7 | VPN \"drops\"",
                "  - Guide <https://kb.example.test/1> (KB-1)",
            ]
        );
    }
}
