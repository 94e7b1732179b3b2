#!/usr/bin/env bash
# Installs Helm into .state/bin (built from its Go module through the Go module proxy; no prebuilt binary is
# downloaded), only when missing. The chart's tests (tests/unit/test_helm_chart.py) and `make k8s-render`
# use it. Needs Go 1.24+ (`go` on PATH, or /usr/local/go/bin/go); without it, says what to install and fails.
# The first build takes a few CPU minutes (later ones reuse Go's build cache).
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${root}/.state/bin"
helm="${bin}/helm"
stamp="${bin}/helm.version"  # `go install` leaves no full version in the binary (it reports v3.22)

if [[ -x "$helm" && "$(cat "$stamp" 2>/dev/null)" == "$HELM_VERSION" ]]; then
  exit 0
fi

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || { [[ -x /usr/local/go/bin/go ]] && go_bin=/usr/local/go/bin/go; }
if [[ -z "$go_bin" ]]; then
  echo "bootstrap-helm: Go is missing; install Go 1.24+ (Debian: apt-get install golang-go) to build Helm" >&2
  exit 1
fi

mkdir -p "$bin"
echo "bootstrap-helm: building helm ${HELM_VERSION} from helm.sh/helm/v3 into ${bin}"
GOBIN="$bin" GOFLAGS=-mod=mod "$go_bin" install "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
echo "$HELM_VERSION" >"$stamp"
"$helm" version --short
