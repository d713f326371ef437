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
  echo "installing dsbroker${extras:+[$extras]} into .venv" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  .venv/bin/python -c "import broker, sandbox, duckdb, sqlglot, grpc, tenseal" \
    || { echo "installation failed; see the pip output above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
