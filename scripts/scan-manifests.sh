#!/usr/bin/env bash
# The manifest security scan (checkov) of what deploy/ renders and of the Containerfile.
#
#   scripts/scan-manifests.sh            render every deploy/overlays/* and scan it, with the Containerfile
#   scripts/scan-manifests.sh FILE...    scan these files instead (Kubernetes YAML, or a Containerfile)
#
# checkov pins dependencies older than the agent's, so it lives in a virtual environment of its own,
# .venv-scan (made on first use from the package index, about 25 s). Nothing is sent anywhere:
# --skip-download keeps checkov from asking its vendor's API for guidelines. Findings kept on purpose
# are skipped in the manifests themselves (checkov.io/skipN annotations, each with its reason). Exit 0
# when nothing fails.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
VENV=.venv-scan
PYTHON=${PYTHON:-python3}

if ! [ -x "$VENV/bin/checkov" ] || [ "$("$VENV/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
	rm -rf "$VENV"
	"$PYTHON" -m venv "$VENV"
	"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

kubectl=.venv/bin/kubectl
[ -x "$kubectl" ] || kubectl=$(command -v kubectl) || {
	echo "scan-manifests.sh: no kubectl (make .venv/.installed, or put kubectl on PATH)" >&2
	exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ $# -eq 0 ]; then
	for overlay in deploy/overlays/*/; do
		name=$(basename "$overlay")
		"$kubectl" kustomize "$overlay" >"$work/$name.yaml"
	done
	set -- Containerfile
else
	for f in "$@"; do
		case $(basename "$f") in
		Containerfile | Dockerfile | *.Containerfile | *.Dockerfile) ;;
		*) cp "$f" "$work/$(basename "$f")" ;;
		esac
	done
fi
# checkov knows a Dockerfile by its name: each Containerfile is scanned as one, in a folder of its own.
i=0
for f in "$@"; do
	case $(basename "$f") in
	Containerfile | Dockerfile | *.Containerfile | *.Dockerfile)
		i=$((i + 1))
		mkdir -p "$work/image-$i"
		cp "$f" "$work/image-$i/Dockerfile"
		;;
	esac
done
exec "$VENV/bin/checkov" --directory "$work" --framework kubernetes dockerfile \
	--compact --quiet --skip-download --output cli
