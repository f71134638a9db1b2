#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: fuzz/run.sh [seconds per target]
# (default 60). Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). One process per target, one at a
# time. Seeds are read from fuzz/corpus/<target>/ (kept in git); what the
# fuzzer learns goes to fuzz/corpus-work/<target>/ (ignored). A crash
# leaves its input under fuzz/artifacts/<target>/; keep it as a unit test
# beside the parser (README, "Fuzzing"). FUZZ_TARGETS="a b" runs only those.
set -euo pipefail
cd "$(dirname "$0")"

secs="${1:-60}"
case "$secs" in
  ''|*[!0-9]*) echo "usage: fuzz/run.sh [seconds per target]" >&2; exit 2 ;;
esac
read -r -a targets <<< "${FUZZ_TARGETS:-webhook_body signature_header avro_decode sdp_envelope llm_completion}"

cargo +nightly fuzz build
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus-work/$t"
  echo "== $t: ${secs} s"
  start=$(date +%s)
  # -timeout: one input over 10 s is a hang; -rss_limit_mb: over 2 GiB is
  # a memory bug (inputs are at most -max_len bytes).
  if cargo +nightly fuzz run "$t" "corpus-work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1; then
    echo "== $t: no crash in $(( $(date +%s) - start )) s"
  else
    echo "== $t: FAILED (input under fuzz/artifacts/$t/)" >&2
    failed+=("$t")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "crashes in: ${failed[*]}" >&2
  exit 1
fi
