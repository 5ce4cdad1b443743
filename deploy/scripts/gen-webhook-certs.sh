#!/usr/bin/env bash
# Certificates for the rmq-sidecar injector webhook without cert-manager: a private CA and a
# serving certificate for the injector's Service, made with openssl.
#
#   gen-webhook-certs.sh --out-dir DIR [--service NAME] [--namespace NS] [--san SAN]...
#                        [--days N] [--apply [--secret NAME] [--webhook NAME]]
#
# Writes DIR/ca.crt, DIR/ca.key, DIR/tls.crt and DIR/tls.key. The serving certificate's SANs
# are DNS:<service>.<namespace>.svc and DNS:<service>.<namespace>.svc.cluster.local, plus
# every --san (openssl syntax: DNS:name or IP:address). An existing DIR/ca.crt + DIR/ca.key
# is reused, so running the script again renews the serving certificate without changing
# the CA that the API server trusts. DIR holds the CA key: keep it private, never commit it.
#
# --apply (needs kubectl and a cluster) then creates or updates the TLS Secret (default
# rmq-sidecar-injector-tls) in the namespace and writes the CA into the caBundle of every
# webhook of the MutatingWebhookConfiguration (default rocketmq-sidecar-injector). Without
# --apply nothing but openssl is used.
set -euo pipefail

service="rmq-sidecar-injector"
namespace="rocketmq-sidecar"
secret="rmq-sidecar-injector-tls"
webhook="rocketmq-sidecar-injector"
out_dir=""
days=365
apply=false
extra_sans=()

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}
die() { echo "gen-webhook-certs.sh: $*" >&2; exit 2; }
# Runs a command, showing its output only if it fails (openssl chatters on stderr).
quiet() {
  local log
  if ! log="$("$@" 2>&1)"; then
    echo "$log" >&2
    die "failed: $1 $2"
  fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --service) service="${2:?--service needs a value}"; shift 2 ;;
    --namespace) namespace="${2:?--namespace needs a value}"; shift 2 ;;
    --out-dir) out_dir="${2:?--out-dir needs a value}"; shift 2 ;;
    --san) extra_sans+=("${2:?--san needs a value}"); shift 2 ;;
    --days) days="${2:?--days needs a value}"; shift 2 ;;
    --secret) secret="${2:?--secret needs a value}"; shift 2 ;;
    --webhook) webhook="${2:?--webhook needs a value}"; shift 2 ;;
    --apply) apply=true; shift ;;
    -h|--help) usage 0 ;;
    *) echo "gen-webhook-certs.sh: unknown option $1" >&2; usage 2 ;;
  esac
done
[ -n "$out_dir" ] || die "--out-dir is required"
case "$days" in ''|*[!0-9]*|0) die "--days must be a positive number of days, got '$days'" ;; esac
command -v openssl >/dev/null 2>&1 || die "openssl is required"
for san in ${extra_sans[@]+"${extra_sans[@]}"}; do
  case "$san" in DNS:?*|IP:?*) ;; *) die "--san must be DNS:name or IP:address, got '$san'" ;; esac
done
if $apply; then
  command -v kubectl >/dev/null 2>&1 || die "--apply needs kubectl"
fi

umask 077  # keys readable by their owner only
mkdir -p "$out_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. The CA, unless DIR already has one. It lives 5 times --days, so it outlives several
#    serving certificates.
if [ -s "$out_dir/ca.crt" ] && [ -s "$out_dir/ca.key" ]; then
  echo "reusing the CA in $out_dir" >&2
else
  quiet openssl req -x509 -new -nodes -sha256 -days $((days * 5)) \
    -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$out_dir/ca.key" -out "$out_dir/ca.crt" \
    -subj "/CN=${service}.${namespace} webhook CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign"
fi

# 2. The serving certificate, signed by the CA. The API server checks the name
#    <service>.<namespace>.svc against the SANs (the CN is ignored).
sans="DNS:${service}.${namespace}.svc,DNS:${service}.${namespace}.svc.cluster.local"
for san in ${extra_sans[@]+"${extra_sans[@]}"}; do
  sans="${sans},${san}"
done
cat > "$work/ext.cnf" <<CNF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = ${sans}
CNF
quiet openssl req -new -nodes -sha256 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout "$work/tls.key" -out "$work/tls.csr" \
  -subj "/CN=${service}.${namespace}.svc"
quiet openssl x509 -req -sha256 -days "$days" -in "$work/tls.csr" \
  -CA "$out_dir/ca.crt" -CAkey "$out_dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
  -extfile "$work/ext.cnf" -out "$work/tls.crt"
# Moved into place only once both exist: a failure above leaves the previous pair untouched.
mv "$work/tls.key" "$out_dir/tls.key"
mv "$work/tls.crt" "$out_dir/tls.crt"
echo "wrote $out_dir/ca.crt $out_dir/tls.crt $out_dir/tls.key (SANs: $sans)" >&2

$apply || exit 0

# 3. The Secret the injector mounts (create or update), then the caBundle of each webhook.
kubectl create secret tls "$secret" --namespace "$namespace" \
  --cert "$out_dir/tls.crt" --key "$out_dir/tls.key" --dry-run=client -o yaml \
  | kubectl apply -f -
ca_bundle="$(base64 < "$out_dir/ca.crt" | tr -d '\n')"
# One "x" per webhook of the configuration: its length is the number of webhooks.
count="$(kubectl get mutatingwebhookconfiguration "$webhook" -o jsonpath='{range .webhooks[*]}x{end}')"
[ -n "$count" ] || die "MutatingWebhookConfiguration $webhook has no webhooks (apply the manifests first)"
patch=""
for ((i = 0; i < ${#count}; i++)); do
  patch="${patch:+$patch,}{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$ca_bundle\"}"
done
kubectl patch mutatingwebhookconfiguration "$webhook" --type=json -p "[$patch]"
echo "Secret $namespace/$secret and the caBundle of $webhook are set" >&2
