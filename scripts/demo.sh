#!/usr/bin/env bash
# Builds examples/demo (a real project with crates.io dependencies) through the wrapper and runs it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/dist:$PATH"
cd "$root/examples/demo"
cargo clean --quiet
cargo buildx build --locked
bin="$root/examples/demo/target/debug/rustcbuildx-demo"
"$bin"
rustcbuildx stats
echo "demo: the binary is $bin"
