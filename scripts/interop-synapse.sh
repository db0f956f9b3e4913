#!/usr/bin/env bash
# Interop test: weft federates with Synapse (PyPI matrix-synapse) on loopback.
# Installs Synapse into its own venv under target/interop/ on first use, configures it for
# loopback federation (self-signed TLS, no IP blocklist, no key notaries), starts it and a
# weft binary, and runs tests/interop/synapse_federation.py against both.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/interop-lib.sh

venv=$(scripts/install-synapse.sh)
nio_venv=target/interop/nio-venv
if [ ! -x "$nio_venv/bin/python" ] || ! "$nio_venv/bin/python" -c 'import nio, vodozemac' 2>/dev/null; then
    echo "== installing matrix-nio (with its vodozemac E2EE support) into $nio_venv"
    python3 -m venv "$nio_venv"
    "$nio_venv/bin/pip" install --quiet --disable-pip-version-check 'matrix-nio[e2e]==0.26.0'
fi
cargo build --quiet --bin weft

start_work_dir
synapse_port=$(free_port)
weft_fed_port=$(free_port)
weft_client_port=$(free_port)
synapse_name="127.0.0.1:$synapse_port"
weft_name="127.0.0.1:$weft_fed_port"

# A self-signed certificate for Synapse's federation listener.
"$venv/bin/python" - "$work" <<'PY'
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
import ipaddress
work = sys.argv[1]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256()))
open(f"{work}/tls.crt", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(f"{work}/tls.key", "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
PY

cat > "$work/log.yaml" <<YAML
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $work/homeserver.log
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
YAML

cat > "$work/homeserver.yaml" <<YAML
server_name: "$synapse_name"
pid_file: $work/homeserver.pid
listeners:
  - port: $synapse_port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    x_forwarded: false
    resources:
      - names: [client, federation]
tls_certificate_path: $work/tls.crt
tls_private_key_path: $work/tls.key
database:
  name: sqlite3
  args:
    database: $work/homeserver.db
log_config: $work/log.yaml
media_store_path: $work/media
signing_key_path: $work/signing.key
registration_shared_secret: "interop-secret"
report_stats: false
enable_registration: true
enable_registration_without_verification: true
federation_verify_certificates: false
ip_range_blacklist: []
trusted_key_servers: []
suppress_key_server_warning: true
allow_public_rooms_over_federation: true
room_list_publication_rules: [{action: allow}]
bcrypt_rounds: 4
federation:
  max_long_retry_delay: 2s
destination_min_retry_interval: 10s
rc_message: {per_second: 1000, burst_count: 1000}
rc_joins:
  local: {per_second: 1000, burst_count: 1000}
  remote: {per_second: 1000, burst_count: 1000}
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
YAML

"$venv/bin/python" -m synapse.app.homeserver --generate-keys -c "$work/homeserver.yaml" >/dev/null
"$venv/bin/python" -m synapse.app.homeserver -c "$work/homeserver.yaml" >"$work/synapse.out" 2>&1 &
pids+=($!)

WEFT_DATA_DIR="$work/weft" WEFT_DATABASE__URL="$(test_database_url synapse_peer)" WEFT_SERVER_NAME="$weft_name" WEFT_LISTEN="127.0.0.1:$weft_client_port" \
    WEFT_FEDERATION__LISTEN="$weft_name" WEFT_FEDERATION__VERIFY_TLS=false WEFT_FEDERATION__IP_RANGE_BLOCKLIST='[]' \
    WEFT_FEDERATION__MAX_RETRY_DELAY_MS=2000 WEFT_FEDERATION__ALLOW_PUBLIC_ROOMS_OVER_FEDERATION=true WEFT_REGISTRATION__ENABLED=true WEFT_RATE_LIMITS__ENABLED=false \
    RUST_LOG="${WEFT_LOG:-warn}" target/debug/weft serve >"$work/weft.out" 2>&1 &
pids+=($!)

run "weft and Synapse federate" "$venv/bin/python" tests/interop/synapse_federation.py \
    --synapse "https://$synapse_name" --synapse-name "$synapse_name" \
    --weft "http://127.0.0.1:$weft_client_port" --weft-name "$weft_name" --secret interop-secret
run "E2EE between weft and Synapse users (matrix-nio)" "$nio_venv/bin/python" tests/interop/nio_e2ee.py \
    "http://127.0.0.1:$weft_client_port" "https://$synapse_name"
if [ "$failed" -ne 0 ]; then
    echo "--- weft log (tail)"; tail -n 40 "$work/weft.out"
    echo "--- synapse log (warnings)"; grep -E "WARNING|ERROR" "$work/homeserver.log" | grep -v "STARTING\|Copyright\|Licensed\|Server /" | tail -n 40
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
