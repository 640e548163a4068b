#!/usr/bin/env bash
# A short, bounded fuzzing run, as CI does: each cargo fuzz target (fuzz/) for
# FUZZ_SECONDS (default 30) from the seeds, the crashes ever found and the corpus
# grown by earlier runs. Fails on any crash, leak or hang (an input taking over 10 s),
# naming the input to turn into a regression test.
#
#   scripts/fuzz.sh                                          # every target, 30 s each
#   FUZZ_THOROUGH=1 FUZZ_SECONDS=3600 scripts/fuzz.sh            # the longer local run
#   FUZZ_THOROUGH=1 FUZZ_SECONDS=28800 scripts/fuzz.sh connection
#
# The quick mode (CI) builds at opt-level 1 without a sanitizer: half the build time
# of a full build (the connection target compiles the whole server), and still
# thousands of inputs a second. FUZZ_THOROUGH=1 builds at opt-level 3 with
# AddressSanitizer (cargo fuzz's defaults) for long runs.
#
# Installs cargo-fuzz if missing. The toolchain is stable: cargo fuzz needs nightly
# flags, which RUSTC_BOOTSTRAP=1 allows for this build only.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-30}"
if [[ $# -gt 0 ]]; then targets=("$@"); else targets=(dialects connection); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (once, about a minute)"
  cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1

# Debug assertions stay on so integer overflows and the like are caught too.
flags=(--release --debug-assertions)
if [[ "${FUZZ_THOROUGH:-}" != 1 ]]; then
  flags+=(--sanitizer none)
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=1
fi
echo "fuzz: building ${targets[*]}"
build_log=$(mktemp)
for target in "${targets[@]}"; do
  if ! cargo fuzz build "${flags[@]}" "$target" >"$build_log" 2>&1; then
    tail -40 "$build_log"
    echo "fuzz: FAILED: the $target target does not build"
    exit 1
  fi
done
rm -f "$build_log"

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  echo "fuzz: $target for ${seconds}s"
  # The first directory is where new inputs go; seeds and past crashes are read only.
  if cargo fuzz run "${flags[@]}" "$target" "corpus/$target" "seeds/$target" "regressions/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ *DONE)" "$log" | sed "s/^/fuzz: $target: /"
    rm -f "$log"
  else
    tail -60 "$log"
    echo "fuzz: FAILED: $target found a crash (the input is in fuzz/artifacts/$target/)."
    echo "fuzz: fix it, then copy the input to fuzz/regressions/$target/: the test suite replays it."
    rm -f "$log"
    exit 1
  fi
done
echo "fuzz: PASSED (${targets[*]}, ${seconds}s each)"
