//! CI smoke run of the harness: a few seconds at a low rate, asserting
//! correctness only (zero loss, zero duplicates), never speed.

use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// Runs the harness with its output in files under `dir` (no pipe to fill
/// up), killing it if it outlives `limit`: a hang fails the test instead of
/// stalling CI. Returns the exit status, stdout and stderr.
fn run_bounded(cmd: &mut Command, dir: &std::path::Path, limit: Duration) -> (ExitStatus, String, String) {
    let (out_path, err_path) = (dir.join("stdout.txt"), dir.join("stderr.txt"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "loadtest still running after {limit:?}; killed:\n{}\n{}",
                read(&out_path),
                read(&err_path)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, read(&out_path), read(&err_path))
}

#[test]
fn pipeline_smoke_run_accounts_for_every_webhook() {
    let out_dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (status, stdout, stderr) = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_loadtest"))
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
            .arg(out_dir.path()),
        logs.path(),
        Duration::from_secs(240),
    );
    assert!(status.success(), "loadtest failed:\n{stdout}\n{stderr}");
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
