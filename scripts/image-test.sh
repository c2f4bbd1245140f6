#!/usr/bin/env bash
# `make image-test`: build the image, run it, wait for its HEALTHCHECK, deliver one request
# through the console channel, stop it, and check compose.yaml (its schema, and that git
# tracks every file it mounts). Needs root (podman) and about 3 minutes the first time;
# separate from `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every host file compose.yaml mounts must be committed: one that .gitignore hides or nobody
# added is missing from a fresh clone, and `docker compose up` cannot start there.
mounts=$(sed -nE 's/^[[:space:]]*-[[:space:]]*"?(\.{1,2}\/[^:"]+):.*/\1/p' compose.yaml)
[ -n "$mounts" ] || { echo "image-test: found no host files mounted in compose.yaml" >&2; exit 1; }
for path in $mounts; do
  git ls-files --error-unmatch "$path" >/dev/null 2>&1 \
    || { echo "image-test: compose.yaml mounts $path, which git does not track" >&2; exit 1; }
done
echo "image-test: every file compose.yaml mounts is tracked ($(echo $mounts))"
bash ../shared/tools/container-env.sh
image=deskbell:image-test
name=deskbell-image-test-$$
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ingest=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
read=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
podman build --format docker --build-arg BASE_IMAGE=localhost/pybase:bookworm \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro -t "$image" .
cleanup() { podman rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
# No config mounted: the built-in demo routes `sales` to the console. Credentials are set, so
# the default `serve` may listen on 0.0.0.0 inside the container.
podman run -d --name "$name" -p "127.0.0.1:$port:8000" -e "DESKBELL_API_KEYS=$ingest:ingest,$read:read" "$image" >/dev/null
for _ in $(seq 60); do
  if podman healthcheck run "$name" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 1  # polling a container from a shell script: there is nothing to wait on instead
done
[ "${healthy:-}" = 1 ] || { podman logs "$name"; echo "image-test: never healthy" >&2; exit 1; }
echo "image-test: healthcheck passed"
auth=(-H "Authorization: Bearer $read")
location=$(curl -fsS -o /dev/null -w '%header{location}' -H "Authorization: Bearer $ingest" -H 'Content-Type: application/json' \
  -H 'X-Request-ID: image-test' -d '{"topic": "sales", "description": "from the image test"}' \
  "http://127.0.0.1:$port/v1/assistance-requests")
status=
for _ in $(seq 30); do
  status=$(curl -fsS "${auth[@]}" "http://127.0.0.1:$port$location" | python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])')
  [ "$status" = sent ] && break
  sleep 1
done
[ "$status" = sent ] || { podman logs "$name"; echo "image-test: request is $status, not sent" >&2; exit 1; }
podman logs "$name" 2>&1 | grep -q 'from the image test' || { echo "image-test: console printed nothing" >&2; exit 1; }
echo "image-test: request $location sent through the console channel"
curl -fsS "${auth[@]}" "http://127.0.0.1:$port/metrics" | grep -q '^deskbell_deliveries_total{channel="demo-console",outcome="sent"} 1.0$' \
  || { echo "image-test: /metrics does not count the delivery" >&2; exit 1; }
podman stop -t 20 "$name" >/dev/null
[ "$(podman inspect -f '{{.State.ExitCode}}' "$name")" = 0 ] || { echo "image-test: unclean exit" >&2; exit 1; }
echo "image-test: stopped cleanly"
DESKBELL_API_KEYS=dummy docker-compose -f compose.yaml config -q
echo "image-test: compose.yaml is valid"
echo "image-test: OK"
