#!/usr/bin/env bash
# Build tests/interop/noteverify (Go's golang.org/x/mod/sumdb/note, unchanged) fully offline.
#
#   tests/interop/build-noteverify.sh OUT
#
# Needs the Debian 12 packages golang-go and golang-golang-x-mod-dev
# (x/mod 0.7.0 source under /usr/share/gocode/src/golang.org/x/mod).
# GOPATH mode (GO111MODULE=off): imports resolve from GOPATH; no proxy, no go.sum, no network.
# A private GOPATH entry and build cache keep the system tree and ~/.cache untouched.
# Override the x/mod location with GOCODE=/path/to/gocode (the dir that holds src/golang.org/x/mod).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUT" >&2; exit 2; }
out=$1
here=$(cd "$(dirname "$0")" && pwd)
gocode=${GOCODE:-/usr/share/gocode}

command -v go >/dev/null 2>&1 || { echo "$0: go not found (apt-get install golang-go)" >&2; exit 127; }
[ -f "$gocode/src/golang.org/x/mod/sumdb/note/note.go" ] || {
  echo "$0: $gocode/src/golang.org/x/mod/sumdb/note missing (apt-get install golang-golang-x-mod-dev)" >&2
  exit 127
}

work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/gopath"

env GO111MODULE=off \
    GOPATH="$work/gopath:$gocode" \
    GOCACHE="${NOTEVERIFY_GOCACHE:-$work/cache}" \
    GOPROXY=off GOSUMDB=off GOFLAGS= GOTOOLCHAIN=local GOWORK=off \
    go build -o "$out" "$here/noteverify/main.go"
