#!/usr/bin/env bash
# Builds the real Kubernetes API server, kubectl and etcd that tests/deploy/test_apiserver.py
# runs the injector against, from the Go module proxy (k8s.io/kubernetes and
# go.etcd.io/etcd/server at the versions pinned in tests/k8s/*/go.mod), into target/k8s-bin/.
# No cluster, kubelet or container engine is involved: the API server's admission chain,
# validation, RBAC and TokenRequest are what the test needs. Idempotent: rebuilds only when
# a go.mod or go.sum changed. Prints the directory.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null 2>&1 || { echo "install-k8s-test-bins.sh: 'go' is required" >&2; exit 2; }
out="$PWD/target/k8s-bin"
stamp="$out/.inputs"
inputs="$(cat tests/k8s/apiserver/go.mod tests/k8s/apiserver/go.sum tests/k8s/etcd/go.mod tests/k8s/etcd/go.sum | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ] \
   && [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ] && [ -x "$out/etcd" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
version="$(cd tests/k8s/apiserver && go list -m -f "{{.Version}}" k8s.io/kubernetes)"
minor="$(echo "$version" | cut -d. -f2)"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
echo "install-k8s-test-bins.sh: building kube-apiserver and kubectl $version, etcd (a few minutes)" >&2
(cd tests/k8s/apiserver && go build -trimpath -ldflags "$ldflags" -o "$out/kube-apiserver" ./kube-apiserver \
  && go build -trimpath -ldflags "$ldflags" -o "$out/kubectl" ./kubectl)
(cd tests/k8s/etcd && go build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
echo "$inputs" > "$stamp"
echo "$out"
