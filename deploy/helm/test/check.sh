#!/usr/bin/env bash
# Renders the Helm chart with Go's text/template and the sprig functions
# (what `helm template` uses) and checks the objects: see render.go.
# Go and sprig come from Debian's packages (installed when missing: CI
# runs as root); no helm binary is needed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
chart="$here/../codeq"

packages=(golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev)
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/Masterminds/sprig ] \
    || [ ! -d /usr/share/gocode/src/gopkg.in/yaml.v3 ]; then
    echo "chart check: installing ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# Debian ships the Go libraries as a GOPATH tree without the /v3 module
# directories their imports name: a private GOPATH of links adds them.
gopath="$(mktemp -d)"
trap 'rm -rf "$gopath"' EXIT
cp -rs /usr/share/gocode/src "$gopath/src"
ln -s . "$gopath/src/github.com/Masterminds/sprig/v3"
ln -s . "$gopath/src/github.com/Masterminds/semver/v3"
GO111MODULE=off GOPATH="$gopath" GOCACHE="${GOCACHE:-$gopath/cache}" GOFLAGS= \
    go run "$here/render.go" "$chart"
