#!/usr/bin/env bash
# Create the environment (with test extras and the servers the tests start: mosquitto,
# nats-server, chromium, PostgreSQL, and azurite from npm) and run the whole test suite. A
# server the tests need is never skipped.
source "$(dirname "$0")/_env.sh"
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || [ -x /usr/bin/mosquitto_passwd ] || missing+=(mosquitto)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)  # verifies the unit init writes
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "servers the tests start" "${missing[@]}"
fi
# Azurite (blob service) from the npm registry, into .cache/azurite (tests look there first).
if ! command -v azurite-blob >/dev/null 2>&1 && [ ! -x .cache/azurite/node_modules/.bin/azurite-blob ]; then
  command -v npm >/dev/null 2>&1 || apt_install "npm, to install Azurite" nodejs npm
  npm install --prefix .cache/azurite --no-audit --no-fund --silent azurite
fi
source "$(dirname "$0")/postgres.sh"
ensure_postgres
c_toolchain required
make_venv "[test,s3,mqtt,browser,fast]"
exec .venv/bin/python -m pytest -n 2 -p no:cacheprovider "$@"
