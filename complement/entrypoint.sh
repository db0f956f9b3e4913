#!/bin/sh
# Complement passes the server name in SERVER_NAME and mounts its CA at /complement/ca.
# Federation (TLS on 8448 with a certificate signed by that CA) is not served yet: weft does
# not federate so far, so only Client-Server tests apply.
set -e
export WEFT_SERVER_NAME="${SERVER_NAME:-localhost}"
mkdir -p /data
exec weft serve --config /conf/weft.toml
