#!/usr/bin/env bash
# Fails when protos/ breaks the wire or source compatibility of the given commit's protos.
# Skips (successfully) when that commit does not exist or had no protos yet.
set -euo pipefail
against="${1:-HEAD}"
buf="${BUF:-buf}"
if ! commit=$(git rev-parse --verify -q "${against}^{commit}"); then
  echo "buf breaking: no commit ${against}; skipped"
  exit 0
fi
if ! git cat-file -e "${commit}:buf.yaml" 2>/dev/null; then
  echo "buf breaking: ${against} has no protos yet; skipped"
  exit 0
fi
"$buf" breaking --against ".git#ref=${commit},depth=100"
echo "buf breaking: compatible with ${against} (${commit:0:12})"
