//! The LLM client's policy against the simulator over real HTTP: model
//! lists (tried in turn, or sent as OpenRouter's `models`), JSON mode,
//! usage and cost, rejections counted.

use std::time::Duration;

use sinks::llm::{ChatMessage, CompletionRequest, LlmClient, LlmError};
use sinks::metrics::metrics;
use sinks::sim::{LlmFault, LlmSimulator, ModelBehaviour};
use sinks::{RetryHint, Secret};

fn msgs() -> [ChatMessage; 2] {
    [
        ChatMessage::system("Answer with one JSON object."),
        ChatMessage::user("Ticket #1\nSubject: Printer jam\n- #77 (80% similar, resolved): Jam"),
    ]
}

fn client(sim: &LlmSimulator, models: &[&str]) -> LlmClient {
    LlmClient::new(
        sim.base_url(),
        Some(Secret::new("sk-test")),
        models[0],
        Duration::from_secs(2),
    )
    .with_models(models.iter().map(|m| m.to_string()).collect())
}

fn json_req(m: &[ChatMessage]) -> CompletionRequest<'_> {
    CompletionRequest {
        messages: m,
        max_tokens: 300,
        json_object: true,
    }
}

#[tokio::test]
async fn json_mode_answer_with_usage_and_cost() {
    let sim = LlmSimulator::start().await.unwrap();
    let m = msgs();
    let c = client(&sim, &["sim/a"]).complete_with(&json_req(&m)).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&c.text).unwrap();
    assert!(v["summary"].as_str().unwrap().contains("Printer jam"), "{v}");
    assert!(v["likely_cause"].as_str().unwrap().contains("#77"), "{v}");
    assert_eq!(v["steps"].as_array().unwrap().len(), 3);
    assert_eq!(c.model, "sim/a");
    assert!(c.usage.prompt_tokens.unwrap() > 0 && c.usage.completion_tokens.unwrap() > 0);
    assert!(c.usage.cost_usd.unwrap() > 0.0);
    let r = &sim.received()[0];
    assert!(r.json_mode && r.models.is_none() && r.body_bytes > 0);
}

#[tokio::test]
async fn models_are_tried_in_turn_and_the_one_that_answered_is_reported() {
    let sim = LlmSimulator::start().await.unwrap();
    sim.set_model("sim/a", Some(ModelBehaviour::Unavailable));
    sim.set_model("sim/b", Some(ModelBehaviour::Status(503)));
    let m = msgs();
    let c = client(&sim, &["sim/a", "sim/b", "sim/c"])
        .complete_with(&json_req(&m))
        .await
        .unwrap();
    assert_eq!(c.model, "sim/c");
    let asked: Vec<String> = sim.received().into_iter().map(|r| r.model).collect();
    assert_eq!(asked, ["sim/a", "sim/b", "sim/c"]);

    // Every model failing: one error naming each, retryable because one
    // failure (503) was transient.
    sim.set_model("sim/c", Some(ModelBehaviour::Unavailable));
    let e = client(&sim, &["sim/a", "sim/b", "sim/c"])
        .complete_with(&json_req(&m))
        .await
        .unwrap_err();
    assert!(matches!(&e, LlmError::Models(f) if f.len() == 3), "{e}");
    assert!(e.retry_hint().is_retryable(), "{e}");
    assert!(e.to_string().contains("sim/a: LLM answered HTTP 404"), "{e}");

    // A bad key is not the model's fault: no other model is tried.
    sim.fail_next(
        1,
        LlmFault::Status {
            status: 401,
            retry_after_secs: None,
        },
    );
    let before = sim.requests();
    let e = client(&sim, &["sim/x", "sim/y"])
        .complete_with(&json_req(&m))
        .await
        .unwrap_err();
    assert_eq!(e.rejected_status(), Some(401));
    assert_eq!(e.retry_hint(), RetryHint::Permanent);
    assert_eq!(sim.requests() - before, 1);
}

#[tokio::test]
async fn provider_routing_sends_the_models_list_in_one_request() {
    let sim = LlmSimulator::start().await.unwrap();
    sim.set_model("sim/a", Some(ModelBehaviour::Unavailable));
    let m = msgs();
    let c = client(&sim, &["sim/a", "sim/b"])
        .with_provider_routing(true)
        .complete_with(&json_req(&m))
        .await
        .unwrap();
    assert_eq!(c.model, "sim/b", "the provider routed to the second model");
    let got = sim.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].model, "sim/a");
    assert_eq!(
        got[0].models.as_deref(),
        Some(&["sim/a".to_string(), "sim/b".to_string()][..])
    );
}

#[tokio::test]
async fn a_model_without_json_mode_is_asked_again_without_it() {
    let sim = LlmSimulator::start().await.unwrap();
    sim.set_model("sim/plain", Some(ModelBehaviour::NoJsonMode));
    let m = msgs();
    let c = client(&sim, &["sim/plain"]).complete_with(&json_req(&m)).await.unwrap();
    assert!(c.text.starts_with("Summary:"), "prose answer: {}", c.text);
    let modes: Vec<bool> = sim.received().into_iter().map(|r| r.json_mode).collect();
    assert_eq!(modes, [true, false]);
}

#[tokio::test]
async fn rejections_are_counted_by_status_and_model() {
    let sim = LlmSimulator::start().await.unwrap();
    let counter = || {
        metrics()
            .llm_rejected
            .with_label_values(&["402", "sim/rejected-402"])
            .get()
    };
    let before = counter();
    sim.set_fault(Some(LlmFault::Status {
        status: 402,
        retry_after_secs: None,
    }));
    let m = msgs();
    let e = client(&sim, &["sim/rejected-402"]).complete(&m, 100).await.unwrap_err();
    assert_eq!(e.rejected_status(), Some(402));
    assert_eq!(counter() - before, 1);
    // A transient failure is no rejection.
    sim.set_fault(Some(LlmFault::Status {
        status: 503,
        retry_after_secs: Some(3),
    }));
    let e = client(&sim, &["sim/rejected-402"]).complete(&m, 100).await.unwrap_err();
    assert_eq!(
        e.retry_hint(),
        RetryHint::Retryable {
            after: Some(Duration::from_secs(3))
        }
    );
    assert_eq!(counter() - before, 1);
}
