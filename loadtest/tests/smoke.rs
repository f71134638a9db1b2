//! CI smoke run of the harness: a few seconds at a low rate, asserting
//! correctness only (zero loss, zero duplicates), never speed.

use std::process::Command;

#[test]
fn pipeline_smoke_run_accounts_for_every_webhook() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "--scenario",
            "pipeline",
            "--rate",
            "10",
            "--duration",
            "3s",
            "--warmup",
            "1s",
            "--llm-latency",
            "100ms",
            "--baselines",
            "false",
            "--settle",
            "120s",
            "--out",
        ])
        .arg(out_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadtest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("report.json")).unwrap()).unwrap();
    let acc = &report["pipeline"]["accounting"];
    assert!(acc["accepted"].as_u64().unwrap() >= 30, "{acc}");
    assert_eq!(acc["lost"], 0, "{acc}");
    assert_eq!(acc["duplicates"], 0, "{acc}");
    assert_eq!(acc["balanced"], true, "{acc}");
    let svg = std::fs::read_to_string(out_dir.path().join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<path"));
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--scenario", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario 'nope'"));
}
