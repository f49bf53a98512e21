#!/usr/bin/env bash
# Makes the mutual-TLS material between the control plane and the gateway Envoys and stores it
# as the Secrets the manifests mount: a private CA, a server certificate for the Service
# `sluice-xds` (Secret `sluice-xds-server`: tls.crt, tls.key, ca.crt) and a client certificate
# for the Envoys (Secret `sluice-xds-client`: tls.crt, tls.key, ca.crt). Run it once before
# `kubectl apply -f deploy/ingress/` (again to rotate: restart both Deployments after). Needs
# openssl and kubectl. (cert-manager can issue the same two Secrets instead.)
set -euo pipefail
NS=${NAMESPACE:-knative-serving}
NAME=sluice-xds.$NS.svc
DAYS=${DAYS:-365}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days "$DAYS" -subj "/CN=sluice xDS CA" -keyout ca.key -out ca.crt 2>/dev/null
issue() { # name, SAN
  openssl req -new "${ec[@]}" -subj "/CN=$1" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf 'subjectAltName=%s\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$DAYS" \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
}
issue server "DNS:$NAME,DNS:$NAME.cluster.local"
issue client "DNS:sluice-gateway"
for who in server client; do
  kubectl -n "$NS" create secret generic "sluice-xds-$who" \
    --from-file=tls.crt="$who.crt" --from-file=tls.key="$who.key" --from-file=ca.crt=ca.crt \
    --dry-run=client -o yaml | kubectl apply -f -
done
echo "Secrets sluice-xds-server and sluice-xds-client are in $NS (CA valid $DAYS days)."
