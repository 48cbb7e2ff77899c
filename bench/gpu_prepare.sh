#!/usr/bin/env bash
# Prepare .gpu/ for bench/gpu_kernels.ts on the GPU machine: ../shared/gpu/prepare.sh (the Deno
# binary, the Vulkan loader, the bundle, remote.sh) plus the tiny fixture model the "TexForce
# epoch" row trains (12 MB; the whole .gpu/ stays under the 64 MiB the device tool carries).
# Usage, from anywhere in the project: bash bench/gpu_prepare.sh [ENTRY.ts]
# Then the device tool: command `bash .gpu/remote.sh --runs 3 --budget-s 420`, carry [".gpu"].
# In a git worktree (.git is a file) prepare.sh's `mkdir .git/info` fails, so there a copy of it
# runs that keeps .gpu/ out of git with a .gpu/.gitignore of `*` instead (git reads info/exclude
# from the main checkout only); elsewhere prepare.sh runs as it is.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
entry=${1:-bench/gpu_kernels.ts}
common=$(cd "$(git rev-parse --git-common-dir)" && pwd)
shared=${TEXFORCE_SHARED_GPU:-$(dirname "$common")/../shared/gpu}
[ -x "$shared/prepare.sh" ] || shared="$root/../shared/gpu"
if [ -d .git ]; then
  "$shared/prepare.sh" "$entry"
else
  tmp=$(mktemp -d)
  sed -e 's#mkdir -p .git/info .gpu/gl#mkdir -p .gpu/gl#' \
    -e "s#^grep -qx '/.gpu/' .git/info/exclude.*#printf '*\\\\n' > .gpu/.gitignore#" \
    "$shared/prepare.sh" > "$tmp/prepare.sh"
  cp "$shared/remote.sh" "$tmp/remote.sh"
  bash "$tmp/prepare.sh" "$entry"
  rm -rf "$tmp"
fi
# A local run of remote.sh (on lavapipe) leaves the unpacked Deno binary (~100 MB) and its
# runtime folder in .gpu/: drop them, or the folder outgrows what the device tool carries.
rm -rf .gpu/deno .gpu/xdg .gpu/tiny-sd
cp -r tests/fixtures/sd-tiny/tiny-sd .gpu/tiny-sd
[ -e .gpu/.gitignore ] || printf '*\n' > .gpu/.gitignore
du -sh .gpu >&2
