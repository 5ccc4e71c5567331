#!/usr/bin/env bash
# The C tier of redaction under AddressSanitizer and UndefinedBehaviorSanitizer (kept for
# the commands people know): scripts/asan_c.sh does it for every C extension.
#   bash scripts/asan_redact_c.sh [pytest args]
exec bash "$(dirname "${BASH_SOURCE[0]}")/asan_c.sh" redaction -- "$@"
