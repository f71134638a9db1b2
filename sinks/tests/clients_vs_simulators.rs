//! The SDP and LLM clients against the simulators over real HTTP.

use std::time::Duration;

use serde_json::json;
use sinks::llm::{ChatMessage, LlmClient, LlmError};
use sinks::servicedesk::{SdpAuth, SdpClient, SdpError, SdpTenant};
use sinks::sim::{LlmFault, LlmSimulator, SdpFault, SdpSimulator};
use sinks::{RetryHint, Secret};

fn tenant(sim: &SdpSimulator, portal: &str, auth: SdpAuth, token: &str) -> SdpTenant {
    SdpTenant {
        base_url: sim.base_url(portal),
        auth,
        token: Secret::new(token),
        oauth: None,
    }
}

#[tokio::test]
async fn sdp_client_reads_requests_and_posts_form_encoded_notes() {
    let sim = SdpSimulator::start().await.unwrap();
    sim.add_portal("acme", SdpAuth::Zoho, "zoho-token");
    sim.add_portal("globex", SdpAuth::AuthToken, "tech-key");
    sim.add_request("acme", "42", json!({"subject": "VPN drops", "priority": {"name": "High"}, "requester": {"name": "Ann", "email_id": "ann@acme.test"}, "status": {"name": "Open"}}));
    sim.add_solution("acme", "s1", "VPN reconnect loop", "Reset the tunnel");
    sim.add_asset("acme", "vpn-gw-1", "10.0.0.5", "Router", "netops", "HQ");
    let client = SdpClient::default();
    let acme = tenant(&sim, "acme", SdpAuth::Zoho, "zoho-token");

    let req = client.get_request(&acme, "42").await.unwrap();
    assert_eq!(req.fields.subject.as_deref(), Some("VPN drops"));
    assert_eq!(req.fields.priority.as_deref(), Some("High"));
    assert_eq!(req.fields.requester_email.as_deref(), Some("ann@acme.test"));

    let kb = client.search_solutions(&acme, &["vpn".into()], 5).await.unwrap();
    assert_eq!(kb.len(), 1);
    let assets = client
        .assets_by_ip(&acme, &["10.0.0.5".into(), "10.9.9.9".into()])
        .await
        .unwrap();
    assert_eq!(assets.len(), 1);
    assert_eq!(assets[0].asset_name, "vpn-gw-1");

    let note_id = client.add_note(&acme, "42", "<p>Summary</p>").await.unwrap();
    let notes = sim.notes();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].note_id, note_id);
    assert_eq!(notes[0].request_id, "42");
    assert_eq!(notes[0].auth_kind, "zoho");
    assert!(notes[0].content_type.starts_with("application/x-www-form-urlencoded"));
    assert!(!notes[0].show_to_requester);
    assert_eq!(client.list_notes(&acme, "42").await.unwrap().len(), 1);

    // Another tenant's credentials do not open this portal.
    let wrong = tenant(&sim, "acme", SdpAuth::AuthToken, "tech-key");
    let e = client.get_request(&wrong, "42").await.unwrap_err();
    assert!(matches!(e, SdpError::Unauthorized { http_status: 401, .. }), "{e}");
    let e = client.get_request(&acme, "404404").await.unwrap_err();
    assert!(matches!(e, SdpError::NotFound { .. }));
}

#[tokio::test]
async fn sdp_faults_are_classified() {
    let sim = SdpSimulator::start().await.unwrap();
    sim.add_portal("p", SdpAuth::AuthToken, "k");
    sim.add_request("p", "1", json!({"subject": "x"}));
    let client = SdpClient::default();
    let t = tenant(&sim, "p", SdpAuth::AuthToken, "k");

    sim.set_fault("p", Some(SdpFault::RateLimited { retry_after_secs: 5 }));
    let e = client.add_note(&t, "1", "n").await.unwrap_err();
    assert_eq!(
        e.retry_hint(),
        RetryHint::Throttled {
            after: Duration::from_secs(5)
        }
    );

    sim.set_fault("p", Some(SdpFault::Unauthorized));
    let e = client.add_note(&t, "1", "n").await.unwrap_err();
    assert_eq!(e.retry_hint(), RetryHint::Permanent);
    assert!(e.to_string().contains("401"), "{e}");

    sim.set_fault("p", Some(SdpFault::ServerErrors { fraction: 1.0 }));
    assert!(client
        .add_note(&t, "1", "n")
        .await
        .unwrap_err()
        .retry_hint()
        .is_retryable());

    sim.set_fault("p", Some(SdpFault::ErrorInside200));
    let e = client.add_note(&t, "1", "n").await.unwrap_err();
    assert!(matches!(e, SdpError::Rejected { http_status: 200, .. }), "{e}");
    assert_eq!(sim.note_count(), 0);
}

#[tokio::test]
async fn llm_client_completes_and_classifies_failures() {
    let sim = LlmSimulator::start().await.unwrap();
    let client = LlmClient::new(
        sim.base_url(),
        Some(Secret::new("sk-test")),
        "test/model",
        Duration::from_secs(2),
    );
    let msgs = [
        ChatMessage::system("You help technicians."),
        ChatMessage::user("Subject: Printer jam"),
    ];
    let c = client.complete(&msgs, 200).await.unwrap();
    assert!(c.text.contains("Printer jam"), "{}", c.text);
    assert_eq!(sim.last_auth().as_deref(), Some("Bearer sk-test"));

    sim.set_fault(Some(LlmFault::Status {
        status: 503,
        retry_after_secs: Some(7),
    }));
    let e = client.complete(&msgs, 200).await.unwrap_err();
    assert_eq!(
        e.retry_hint(),
        RetryHint::Retryable {
            after: Some(Duration::from_secs(7))
        }
    );

    sim.set_fault(Some(LlmFault::Status {
        status: 401,
        retry_after_secs: None,
    }));
    assert_eq!(
        client.complete(&msgs, 200).await.unwrap_err().retry_hint(),
        RetryHint::Permanent
    );

    sim.set_fault(Some(LlmFault::ErrorInside200));
    let e = client.complete(&msgs, 200).await.unwrap_err();
    assert!(matches!(e, LlmError::InBody { code: 502, .. }), "{e}");

    sim.set_fault(Some(LlmFault::Hang {
        for_: Duration::from_secs(5),
    }));
    let e = client.complete(&msgs, 200).await.unwrap_err();
    assert!(matches!(e, LlmError::Timeout(_)), "{e}");
    assert!(e.retry_hint().is_retryable());
}
