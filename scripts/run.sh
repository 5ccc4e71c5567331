#!/usr/bin/env bash
# Create the environment and run the daemon on the embedded default config
# (journal under ./var/journal, state under ./var/state, file sink under ./var/out).
source "$(dirname "$0")/_env.sh"
c_toolchain optional
make_venv "[fast]"
exec .venv/bin/auditshipd run -c config/auditshipd.toml "$@"
