#!/usr/bin/env bash
# Build the C extensions with AddressSanitizer and UndefinedBehaviorSanitizer and run their
# tests against that build (by hand; needs .venv from scripts/test.sh and gcc):
#   bash scripts/asan_c.sh [redaction|formats|integrity|tsvector|pgcopy ...] [-- pytest args]
# Without names: all five. Each extension's tests include a loop that checks it leaks no
# memory (tracemalloc) and no references (sys.getrefcount) over thousands of calls.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
declare -A SOURCE=(
  [redaction]=src/auditshipd/redaction/_redact_c.c
  [formats]=src/auditshipd/formats/_formats_c.c
  [integrity]=src/auditshipd/integrity/_chain_c.c
  [tsvector]=src/auditshipd/portal/_tsvector_c.c
  [pgcopy]=src/auditshipd/portal/_pgcopy_c.c
)
declare -A TESTS=(
  [redaction]="tests/unit/test_redact_c.py tests/unit/test_scope_c.py tests/unit/test_redact_fastpath.py tests/unit/test_redact_fastpath_runs.py"
  [formats]="tests/unit/test_formats_c.py tests/unit/test_formats_fast.py"
  [integrity]="tests/unit/test_integrity_chain_c.py tests/unit/test_integrity_chain.py"
  [tsvector]="tests/unit/test_portal_tsvector_c.py tests/unit/test_portal_rows_c.py"
  [pgcopy]="tests/unit/test_portal_pgcopy_c.py"
)
names=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do names+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#names[@]} -eq 0 ] && names=(redaction formats integrity tsvector pgcopy)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PY=.venv/bin/python
INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
SUFFIX="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
cp -r src/auditshipd "$WORK/"
find "$WORK/auditshipd" -name '_*_c*.so' -delete
tests=()
modules=()
for name in "${names[@]}"; do
  src="${SOURCE[$name]:?unknown extension $name (known: ${!SOURCE[*]})}"
  mod="${src#src/}"
  gcc -shared -fPIC -O1 -g -std=c11 -fsanitize=address,undefined -fno-omit-frame-pointer \
    -I"$INCLUDE" "$src" -o "$WORK/${mod%.c}$SUFFIX"
  modules+=("$(echo "${mod%.c}" | tr / .)")
  read -r -a more <<< "${TESTS[$name]}"
  tests+=("${more[@]}")
done
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for m in "${modules[@]}"; do  # the tests must load the sanitized builds, not those in src/
  PYTHONPATH="$WORK" "$PY" -c 'import importlib, sys; m = importlib.import_module(sys.argv[2]); sys.exit(not m.__file__.startswith(sys.argv[1]))' \
    "$WORK" "$m"
done
PYTHONPATH="$WORK" "$PY" -m pytest -q -p no:cacheprovider -p no:xdist "${tests[@]}" "$@"
