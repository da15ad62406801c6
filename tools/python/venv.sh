#!/usr/bin/env bash
# Creates (once) the Python virtualenv used by tests and benchmarks for reference runs
# (the PyPI `ncnn` package, onnxruntime + numpy + Pillow). Prints the interpreter path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${PURRIFY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/purrify}"
venv="$cache/venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "venv: installing Python reference tools into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2 \
    || { echo "venv: pip install -r $here/requirements.txt failed (see above)" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
