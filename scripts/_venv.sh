# Sourced by the scripts: make .venv if missing and (re)install when pyproject.toml changes.
# Usage: . scripts/_venv.sh EXTRAS   (e.g. "test", or "" for none)
set -euo pipefail
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv" >&2
  "$python" -m venv .venv
fi
stamp=".venv/.dsbroker-installed-${extras:-base}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing dsbroker${extras:+[$extras]} into .venv (log: .venv/install.log)" >&2
  if ! { .venv/bin/python -m pip install --quiet --upgrade pip \
         && .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"; } > .venv/install.log 2>&1 \
     || ! .venv/bin/python -c "import dsbroker, broker, sandbox, duckdb, sqlglot, grpc, tenseal" >> .venv/install.log 2>&1; then
    tail -n 40 .venv/install.log >&2
    echo "installation failed; the full log is .venv/install.log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
