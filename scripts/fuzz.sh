#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 20), one after another,
# each on a scratch copy of its checked-in seed corpus (fuzz/corpus/<target>, written by
# fuzz/make-corpus.py), so new inputs never land in the repository.
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs the nightly toolchain; installs cargo-fuzz if it is missing. Exits non-zero when a
# target crashes (a panic, a failed assertion, a sanitizer report, an out-of-memory or a
# timeout) and prints the reproducer (kept under fuzz/artifacts/<target>/, which git ignores)
# and the command that replays it. Builds go to $CARGO_TARGET_DIR (default: ./target).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

seconds="${1:-20}"
case "$seconds" in
  '' | *[!0-9]* | 0)
    echo "usage: scripts/fuzz.sh [SECONDS]  (a positive whole number; default 20)" >&2
    exit 2
    ;;
esac

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "== installing the nightly toolchain (libFuzzer needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

mapfile -t targets < <(cargo +nightly fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz.sh: cargo fuzz list found no targets" >&2
  exit 2
fi

echo "== building ${#targets[@]} fuzz targets (nightly, release + debug assertions, ASan)"
cargo +nightly fuzz build

scratch="$(mktemp -d "${TMPDIR:-/tmp}/rmq-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in "${targets[@]}"; do
  seeds="fuzz/corpus/$target"
  corpus="$scratch/corpus/$target"
  log="$scratch/$target.log"
  artifacts="fuzz/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  if [ -d "$seeds" ]; then
    cp -R "$seeds/." "$corpus/"
  fi
  before="$(ls -A "$artifacts")"

  echo "== $target: ${seconds}s from $(find "$corpus" -type f | wc -l) seeds"
  status=0
  cargo +nightly fuzz run "$target" "$corpus" -- -max_total_time="$seconds" >"$log" 2>&1 || status=$?

  if [ "$status" -eq 0 ]; then
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
    continue
  fi
  failed+=("$target")
  echo "!! $target failed (exit $status); the end of its log:" >&2
  tail -n 40 "$log" >&2
  after="$(ls -A "$artifacts")"
  new="$(comm -13 <(printf '%s\n' "$before" | sort) <(printf '%s\n' "$after" | sort) | sed '/^$/d')"
  if [ -n "$new" ]; then
    while read -r file; do
      echo "!! reproducer: $repo/$artifacts/$file" >&2
      echo "   replay: cargo +nightly fuzz run $target $artifacts/$file" >&2
    done <<<"$new"
  else
    echo "!! $target left no new file in $artifacts (see the log above)" >&2
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets ran ${seconds}s each without a crash"
