#!/usr/bin/env bash
# Build the C tier of redaction with AddressSanitizer and UndefinedBehaviorSanitizer and run
# its tests against that build (by hand; needs .venv from scripts/test.sh and gcc):
#   bash scripts/asan_redact_c.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PY=.venv/bin/python
INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
SUFFIX="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
cp -r src/auditshipd "$WORK/"
rm -f "$WORK"/auditshipd/redaction/_redact_c*.so
gcc -shared -fPIC -O1 -g -std=c11 -fsanitize=address,undefined -fno-omit-frame-pointer \
  -I"$INCLUDE" src/auditshipd/redaction/_redact_c.c -o "$WORK/auditshipd/redaction/_redact_c$SUFFIX"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
PYTHONPATH="$WORK" "$PY" -c 'import auditshipd.redaction._redact_c as m, sys; sys.exit(not m.__file__.startswith(sys.argv[1]))' "$WORK"
PYTHONPATH="$WORK" "$PY" -m pytest -q -p no:cacheprovider -p no:xdist \
  tests/unit/test_redact_c.py tests/unit/test_redact_fastpath.py tests/unit/test_redact_fastpath_runs.py "$@"
