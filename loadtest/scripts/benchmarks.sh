#!/usr/bin/env bash
# Reproduces every number in the README's "Benchmarks" section, one run
# after another on this machine (each run is bounded in count and time and
# targets loopback only). Reports land in loadtest-out/<name>/ (report.json,
# chart.svg); the summaries are printed. Usage: bash loadtest/scripts/benchmarks.sh [name...]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --ignore-rust-version -p loadtest -q
lt=target/release/loadtest
run() {
  local name=$1; shift
  echo "=== $name: loadtest $*"
  "$lt" --out "loadtest-out/$name" "$@"
}
WANT="${*:-}"
want() { [ -z "$WANT" ] || [[ " $WANT " == *" $1 "* ]]; }

# Context-search quality (no load): recall@5 and MRR@10 of similar tickets
# and articles on a labelled synthetic set, the old search as baseline.
if want quality; then run quality --scenario quality; fi
# Highest ingest rate held with p99 < 50 ms, and the raw limits beside it.
if want ingest-max; then run ingest-max --scenario ingest --find-max --ramp-from 500 --rate 20000 --duration 10s --warmup 2s; fi
# Ingest alone at fixed rates (the README's held rate and its neighbours).
for r in 1200 2000 3000 4500 5500; do
  if want ingest-$r; then run ingest-$r --scenario ingest --rate $r --duration 10s --warmup 2s --baselines false; fi
done
# Soak: 1,000,000 webhooks through ingest at a steady 3,000/s (plus a 2 s
# warm-up), the broker alive throughout; ingest latency per 100,000 and the
# webhooks topic's record count against the 202s.
if want soak; then run soak --scenario ingest --rate 3000 --duration 334s --warmup 2s --max-requests 1010000 --baselines false; fi
# Stage runtime: 2,000 jobs over 2,000 tickets, every topic 1 partition, LLM 2 s per call.
if want pipeline-1p; then run pipeline-1p --scenario pipeline --partitions 1 --rate 1000 --duration 2s --warmup 0s --llm-latency 2s --baselines false --settle 300s; fi
# Sustained pipeline with the default settings and a 2 s LLM: a rate it
# keeps up with (end-to-end p95), and one above its capacity.
if want pipeline-30; then run pipeline-30 --scenario pipeline --rate 30 --duration 60s --llm-latency 2s --baselines false --settle 300s; fi
# The pipeline goal's rate with a 2 s LLM (defaults: synthesize in-flight 1024).
# 70 % of it: the end-to-end latency a sustained rate sees.
if want pipeline-210; then run pipeline-210 --scenario pipeline --rate 210 --duration 30s --warmup 0s --llm-latency 2s --baselines false --settle 240s; fi
if want pipeline-300; then run pipeline-300 --scenario pipeline --rate 300 --duration 20s --warmup 0s --llm-latency 2s --baselines false --settle 240s; fi
if want pipeline; then run pipeline --scenario pipeline --rate 100 --duration 60s --llm-latency 2s --settle 300s; fi
# Scenarios: loss and duplicates must be zero in each.
if want sdp-throttle; then run sdp-throttle --scenario sdp-throttle --rate 20 --duration 60s --llm-latency 500ms --baselines false --settle 300s; fi
if want llm-outage; then run llm-outage --scenario llm-outage --rate 50 --duration 30s --baselines false --settle 300s; fi
if want broker-restart; then run broker-restart --scenario broker-restart --rate 50 --duration 30s --llm-latency 500ms --broker-down 5s --broker-stop term --baselines false --settle 300s; fi
if want broker-restart-kill; then run broker-restart-kill --scenario broker-restart --rate 50 --duration 30s --llm-latency 500ms --broker-down 5s --broker-stop kill --baselines false --settle 120s; fi
if want burst; then run burst --scenario burst --rate 30 --duration 30s --llm-latency 2s --baselines false --settle 300s; fi
# 102,000 webhooks queued with ingest alone (3,000/s for 34 s), then the five
# stages start on the backlog: every job's note awaited, accounting checked
# (fails on a loss or duplicate), RSS the stages add reported.
if want backlog; then run backlog --scenario backlog --rate 3000 --duration 34s --warmup 0s --llm-latency 10ms --baselines false --settle 900s; fi
