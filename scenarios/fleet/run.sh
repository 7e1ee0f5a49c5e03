#!/usr/bin/env bash
# `make run-fleet`: a Mixer (with its embedded NATS) and two racks on this machine, adopted, each
# running a scenario pushed through the Mixer, their gears sharing the bus's KV. Ctrl-C stops all
# three. FLEET_TLS=1 runs the bus with mTLS: certificates in $DATA/certs, each rack confined to its
# own subjects and what racks share.
set -euo pipefail
cd "$(dirname "$0")/../.."
FLUXRIG="dist/src/cli/main.js"
DATA=.fluxrig/fleet
NATS_PORT=${FLEET_NATS_PORT:-4222}
export FLUXRIG_MIXER_API=http://127.0.0.1:${FLEET_API_PORT:-7480}
# Node's fetch, not curl: a fresh machine has node, not always curl.
healthy() { node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$FLUXRIG_MIXER_API/healthz"; }
mkdir -p "$DATA"
MIXER_TLS=()
RACK_TLS=()
SCHEME=nats
if [ "${FLEET_TLS:-0}" = 1 ]; then
  CERTS="$DATA/certs"
  [ -f "$CERTS/ca.pem" ] || $FLUXRIG certs init --dir "$CERTS" >/dev/null
  for rack in north south; do
    [ -f "$CERTS/racks/$rack.pem" ] || $FLUXRIG certs issue rack "$rack" --dir "$CERTS" >/dev/null
  done
  MIXER_TLS=(--tls --certs "$CERTS")
  RACK_TLS=(--certs "$CERTS")
  SCHEME=tls
fi
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM

$FLUXRIG mixer --data "$DATA/mixer" --nats-port "$NATS_PORT" --listen "${FLUXRIG_MIXER_API#http://}" "${MIXER_TLS[@]}" >"$DATA/mixer.log" 2>&1 &
pids+=($!)
export FLUXRIG_MIXER_TOKEN
for _ in $(seq 100); do
  if [ -s "$DATA/mixer/api-token" ] && healthy; then break; fi
  sleep 0.1
done
FLUXRIG_MIXER_TOKEN=$(cat "$DATA/mixer/api-token")
healthy || { echo "the Mixer did not start; see $DATA/mixer.log" >&2; exit 1; }

for rack in north south; do
  # One bus for both: the Mixer's (--mixer) and the gears' (--nats: the shared KV, modules, lanes).
  $FLUXRIG rack --mixer "$SCHEME://127.0.0.1:$NATS_PORT" --nats "$SCHEME://127.0.0.1:$NATS_PORT" --name "$rack" --labels "site=$rack" --workers 1 \
    --state-dir "$DATA/rack-$rack" "${RACK_TLS[@]}" >"$DATA/rack-$rack.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  enrolled=$($FLUXRIG racks list --json 2>/dev/null | grep -c '"name"' || true)
  [ "${enrolled:-0}" -ge 2 ] && break
  sleep 0.1
done
$FLUXRIG racks approve north
$FLUXRIG racks approve south
$FLUXRIG scenario push scenarios/fleet/north.yaml
$FLUXRIG scenario push scenarios/fleet/south.yaml
for _ in $(seq 100); do
  $FLUXRIG scenario status payments-north >/dev/null 2>&1 && $FLUXRIG scenario status payments-south >/dev/null 2>&1 && break
  sleep 0.1
done
$FLUXRIG racks list
cat <<TRY

A fleet is running: a Mixer (API $FLUXRIG_MIXER_API, NATS $SCHEME://127.0.0.1:$NATS_PORT) and racks north and south.

  Dashboard: $FLUXRIG_MIXER_API/   (it asks for the API token: cat $DATA/mixer/api-token)

Logs are in $DATA. From another terminal, in this directory:
  export FLUXRIG_MIXER_API=$FLUXRIG_MIXER_API FLUXRIG_MIXER_TOKEN=\$(cat $DATA/mixer/api-token)
  npx fluxrig racks list
  npx fluxrig call tcp://127.0.0.1:7431 payments.authorize '{"amount": 100, "merchant": "m-1"}'
  npx fluxrig scenario status payments-north
  npx fluxrig command north log-level debug --telemetry info
  npx fluxrig logs --follow           # the racks' logs and events, through the Mixer
  npx fluxrig audit                   # who approved, pushed or commanded what
  curl -H "authorization: Bearer \$FLUXRIG_MIXER_TOKEN" $FLUXRIG_MIXER_API/metrics
  npx fluxrig racks suspend south      # its gears stop; activate brings them back
  curl -N -H "authorization: Bearer \$FLUXRIG_MIXER_TOKEN" $FLUXRIG_MIXER_API/events
Ctrl-C stops the fleet.
TRY
wait
