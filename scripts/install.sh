# Sourced by the setup scripts: `install VENV ARGS...` installs ARGS into the virtual environment VENV with uv (the
# same requirements, from the indexes and wheel folders pip is configured with), in about a minute where pip takes
# three to five on 2 cores (benchmarks/install.py); with pip where uv cannot be had or fails, or LIFT_NO_UV is set.
install() {
  local venv="$1"; shift
  if [ -z "${LIFT_NO_UV:-}" ] && "$venv/bin/python" -m pip install -q uv 2>/dev/null; then
    local from=() key location
    for key in index-url extra-index-url find-links; do
      for location in $("$venv/bin/python" -m pip config get "global.$key" 2>/dev/null); do
        from+=("--$key" "$location")
      done
    done
    # Like pip, take each package's best release across all indexes (uv's default stops at the first that has it).
    "$venv/bin/uv" pip install -q --python "$venv/bin/python" --index-strategy unsafe-best-match "${from[@]}" "$@" \
      && return
    echo "setup: uv could not install $*; installing with pip" >&2
  fi
  "$venv/bin/python" -m pip install -q "$@"
}
