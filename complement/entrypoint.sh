#!/bin/sh
# Complement passes the server name in SERVER_NAME and mounts its CA at /complement/ca
# (ca.crt, ca.key). The federation listener (8448) gets a certificate for SERVER_NAME signed
# by that CA, and weft trusts the CA for the other homeservers of the test.
set -e
export WEFT_SERVER_NAME="${SERVER_NAME:-localhost}"
mkdir -p /data /conf/tls
host="${WEFT_SERVER_NAME%:*}"
if [ -f /complement/ca/ca.crt ] && [ -f /complement/ca/ca.key ]; then
    openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$host" \
        -keyout /conf/tls/server.key -out /conf/tls/server.csr 2>/dev/null
    printf 'subjectAltName=DNS:%s\n' "$host" > /conf/tls/san.ext
    openssl x509 -req -in /conf/tls/server.csr -CA /complement/ca/ca.crt -CAkey /complement/ca/ca.key \
        -CAcreateserial -days 1 -extfile /conf/tls/san.ext -out /conf/tls/server.crt 2>/dev/null
    export WEFT_FEDERATION__TLS_CERT=/conf/tls/server.crt
    export WEFT_FEDERATION__TLS_KEY=/conf/tls/server.key
    export WEFT_FEDERATION__EXTRA_CA_FILES='["/complement/ca/ca.crt"]'
fi
exec weft serve --config /conf/weft.toml
