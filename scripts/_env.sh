# Shared by scripts/run.sh and scripts/test.sh: a virtualenv in .venv with the project.
# Installs missing system packages with apt when it can (root + apt-get), saying what and why.
# (Re)installs the project into .venv only when pyproject.toml, setup.py, the C extension's
# source or the extras changed since the last install (a stamp in .venv), so a restart is quick.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
APT_UPDATED=0
apt_install() {  # apt_install REASON PACKAGE...
  local reason="$1"; shift
  if ! can_apt; then
    echo "missing system packages: $* (install them, e.g. sudo apt-get install $*)" >&2
    return 1
  fi
  echo "installing with apt-get: $* ($reason)" >&2
  if [ "$APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The C extensions (src/auditshipd/*/_*_c.c: redaction, formats, integrity) need a C compiler and Python.h.
# Without them the package still installs (redaction on its Python tiers, ~3x slower):
# "required" fails instead (the test suite checks the C tier is built).
c_toolchain() {  # c_toolchain required|optional
  local want=()
  command -v cc >/dev/null 2>&1 || want+=(gcc libc6-dev)
  "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || want+=(python3-dev)
  [ ${#want[@]} -eq 0 ] && return 0
  if apt_install "to build the C tier of redaction" "${want[@]}"; then return 0; fi
  [ "$1" = required ] && return 1
  echo "building without the C tier of redaction (slower): install ${want[*]} to build it" >&2
}

make_venv() {  # make_venv EXTRAS
  local extras="$1"
  if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
      rm -rf .venv
      apt_install "to create .venv" python3-venv
      "$PYTHON" -m venv .venv
    fi
  fi
  local stamp=.venv/.auditshipd-installed
  local want
  # "cc": a compiler installed since the last install gets the C tier built.
  want="$(cat pyproject.toml setup.py src/auditshipd/*/_*_c.c | sha256sum | cut -c1-16) ${extras}"
  command -v cc >/dev/null 2>&1 && want="$want cc"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "installing auditshipd${extras} into .venv (pyproject.toml, setup.py or the C source changed)" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".${extras}"
  echo "$want" > "$stamp"
}
