#!/usr/bin/env bash
# Builds the real Kubernetes binaries the tests run, from the Go module proxy (k8s.io/kubernetes
# and go.etcd.io/etcd/server at the versions pinned in tests/k8s/*/go.mod), into target/k8s-bin/:
#   kube-apiserver, kubectl, etcd  tests/deploy/test_apiserver.py (the injector's admission)
#   k8s-node                       tests/node (a real node): kubelet, kube-controller-manager and
#                                  kube-scheduler linked into one binary, one link step
# Idempotent: rebuilds only when a go.mod, go.sum or main.go changed. Prints the directory.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null 2>&1 || { echo "install-k8s-test-bins.sh: 'go' is required" >&2; exit 2; }
out="$PWD/target/k8s-bin"
stamp="$out/.inputs"
inputs="$(cat tests/k8s/apiserver/go.mod tests/k8s/apiserver/go.sum tests/k8s/apiserver/*/main.go \
  tests/k8s/etcd/go.mod tests/k8s/etcd/go.sum | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ] \
   && [ -x "$out/kube-apiserver" ] && [ -x "$out/kubectl" ] && [ -x "$out/etcd" ] && [ -x "$out/k8s-node" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
version="$(cd tests/k8s/apiserver && go list -m -f "{{.Version}}" k8s.io/kubernetes)"
minor="$(echo "$version" | cut -d. -f2)"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
echo "install-k8s-test-bins.sh: building kube-apiserver, kubectl and k8s-node $version, etcd (minutes)" >&2
(cd tests/k8s/apiserver && go build -trimpath -ldflags "$ldflags" -o "$out/kube-apiserver" ./kube-apiserver \
  && go build -trimpath -ldflags "$ldflags" -o "$out/kubectl" ./kubectl \
  && go build -trimpath -ldflags "$ldflags" -o "$out/k8s-node" ./k8s-node)
(cd tests/k8s/etcd && go build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
echo "$inputs" > "$stamp"
echo "$out"
