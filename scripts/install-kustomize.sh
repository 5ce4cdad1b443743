#!/usr/bin/env bash
# Installs kustomize (the version tests/deploy/test_manifests.py is verified with) from the
# Go module proxy into $(go env GOPATH)/bin and prints its path. Idempotent: does nothing
# when a kustomize of that version is already on PATH or in $(go env GOPATH)/bin.
# kubectl embeds a kustomize too, but CI machines may have no kubectl, so the tests use
# this standalone binary.
set -euo pipefail

# v5.8.2 is the newest release whose go.mod accepts this machine's Go (1.26); v5.8.3 needs 1.27.
VERSION="v5.8.2"

command -v go >/dev/null 2>&1 || { echo "install-kustomize.sh: 'go' is required" >&2; exit 2; }
bin_dir="$(go env GOPATH)/bin"

for candidate in "$(command -v kustomize || true)" "$bin_dir/kustomize"; do
  if [ -z "$candidate" ] || [ ! -x "$candidate" ]; then continue; fi
  # `kustomize version` prints e.g. "v5.8.2".
  if [ "$("$candidate" version 2>/dev/null || true)" = "$VERSION" ]; then
    echo "$candidate"
    exit 0
  fi
done

echo "install-kustomize.sh: go install sigs.k8s.io/kustomize/kustomize/v5@$VERSION" >&2
GOFLAGS="${GOFLAGS:-} -buildvcs=false" go install "sigs.k8s.io/kustomize/kustomize/v5@$VERSION"
"$bin_dir/kustomize" version >&2
echo "$bin_dir/kustomize"
