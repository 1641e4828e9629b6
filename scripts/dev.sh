#!/usr/bin/env bash
# One entry point for people and CI:
#   scripts/dev.sh run [CONFIG]     install into .venv and serve CONFIG (default: the built-in quickstart)
#   scripts/dev.sh test [ARGS]      install into .venv, then ruff + mypy --strict + the whole pytest suite
#   scripts/dev.sh bench [ARGS]     install bench tools (wrk, nginx) and run bench/run.py
#   scripts/dev.sh bench --llm [ARGS]  install the AI gateway peers (LiteLLM, Portkey) and run bench/llm.py
#   scripts/dev.sh system PROFILE   install the system packages PROFILE needs (test | bench)
# System packages are installed with apt-get when running as root; otherwise the exact apt line is
# printed and the script fails (it never guesses at sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${FASTGW_VENV:-$ROOT/.venv}

# command -> Debian package, per profile. Tests start a real redis-server and a real PostgreSQL (initdb and
# pg_ctl: Debian keeps them in /usr/lib/postgresql/VERSION/bin, off PATH); bench needs wrk, h2load, nginx.
declare -A TEST_PKGS=([redis-server]=redis-server [initdb]=postgresql)
declare -A BENCH_PKGS=([wrk]=wrk [nginx]=nginx [h2load]=nghttp2-client)
declare -A VENV_PKGS=([venv]=python3-venv)
# Installing fastgw compiles its hot-path modules with mypyc (setup.py): a C compiler and Python's headers.
declare -A BUILD_PKGS=([gcc]=gcc [python-headers]=python3-dev)

need_system() {
    local profile=$1 missing=()
    local -n pkgs="${profile^^}_PKGS"
    for cmd in "${!pkgs[@]}"; do
        if [ "$cmd" = venv ]; then
            missing+=("${pkgs[$cmd]}")  # asked for only after `python3 -m venv` failed
            continue
        fi
        if [ "$cmd" = python-headers ]; then
            "${PYTHON:-python3}" -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
                || missing+=("${pkgs[$cmd]}")
            continue
        fi
        if [ "$cmd" = initdb ]; then
            command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
                || missing+=("${pkgs[$cmd]}")
            continue
        fi
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${pkgs[$cmd]}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing system packages: ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing system packages; run as root:" >&2
        echo "  apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
}

need_python() {
    local py=${PYTHON:-python3}
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "fastgw needs Python >= 3.11 (found: $("$py" --version 2>&1))" >&2
        exit 1
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$py" -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            need_system venv  # Debian's system Python ships venv separately
            "$py" -m venv "$VENV"
        fi
    fi
    local extras=$1
    local stamp="$VENV/.installed-$extras"
    # Reinstall when the project changed, or when a module compiled with mypyc (fastgw/native.py,
    # setup.py) was edited since: the old extension would still be the one imported.
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
        || [ fastgw/native.py -nt "$stamp" ] || ! "$VENV/bin/python" -m fastgw.native --clean >/dev/null 2>&1; then
        need_system build
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e ".[$extras]"
        touch "$stamp"
    fi
}

# The AI gateway bench's peers, installed once under bench/.peers (git-ignored), each apart from fastgw's
# own venv: litellm[proxy] pins its own openai, pydantic and httpx, which would change the SDK versions the
# tests run against. Versions are the ones issue 22's bars were measured with. Portkey streams only with
# @hono/node-server 1.13.8 (newer ones answer every stream 500 "TypeError: immutable", Portkey issues
# #1389/#1550): an npm override pins it under the gateway. A peer that cannot be installed (no registry)
# is reported and bench/llm.py runs without its rows.
PEERS=$ROOT/bench/.peers
LITELLM_SPEC='litellm[proxy]==1.108.*'
PORTKEY_SPEC='1.15.2'
HONO_NODE_SERVER='1.13.8'
install_llm_peers() {
    if [ ! -x "$PEERS/litellm/bin/litellm" ]; then
        echo "installing $LITELLM_SPEC into $PEERS/litellm (once)" >&2
        if ! { python3 -m venv "$PEERS/litellm" && "$PEERS/litellm/bin/pip" install -q "$LITELLM_SPEC"; }; then
            echo "could not install $LITELLM_SPEC from PyPI: the LiteLLM rows will be missing" >&2
            rm -rf "$PEERS/litellm"
        fi
    fi
    if [ ! -f "$PEERS/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ]; then
        echo "installing @portkey-ai/gateway@$PORTKEY_SPEC into $PEERS/portkey (once)" >&2
        mkdir -p "$PEERS/portkey"
        cat >"$PEERS/portkey/package.json" <<JSON
{"private": true,
 "dependencies": {"@portkey-ai/gateway": "$PORTKEY_SPEC", "@hono/node-server": "$HONO_NODE_SERVER"},
 "overrides": {"@hono/node-server": "$HONO_NODE_SERVER"}}
JSON
        if ! { command -v npm >/dev/null && npm install --prefix "$PEERS/portkey" --silent --no-audit --no-fund; }; then
            echo "could not install @portkey-ai/gateway from npm (is npm installed?): the Portkey rows will be missing" >&2
            rm -rf "$PEERS/portkey/node_modules"
        fi
    fi
}

cmd=${1:-}
shift || true
case "$cmd" in
    run)
        need_python test
        exec "$VENV/bin/fastgw" run "$@"
        ;;
    test)
        need_system test
        need_python test
        export PATH="$VENV/bin:$PATH"
        ruff check fastgw tests bench
        ruff format --check fastgw tests bench
        mypy fastgw
        if [ "${CI:-}" = "true" ]; then export HYPOTHESIS_PROFILE=ci; fi
        # The slowest tests at the end of every run: CI must stay under 30 minutes (the brief). Two test
        # processes (pytest-xdist; FASTGW_TEST_PROCESSES to change): most tests wait on gateways in
        # subprocesses, and every test owns its ports, Redis, database and temporary directory.
        exec python -m pytest -n "${FASTGW_TEST_PROCESSES:-2}" --durations=25 "$@"
        ;;
    bench)
        need_system bench
        need_python "test,bench"
        if [ "${1:-}" = "--llm" ]; then
            shift
            install_llm_peers
            exec "$VENV/bin/python" bench/llm.py --peers "$PEERS" "$@"
        fi
        case " $* " in *" --store "* | *" --store="*) need_system test ;; esac  # PostgreSQL for --store
        exec "$VENV/bin/python" bench/run.py "$@"
        ;;
    system)
        need_system "${1:?profile: test or bench}"
        ;;
    *)
        sed -n '2,8p' "$0" >&2
        exit 2
        ;;
esac
