#!/usr/bin/env bash
# Build the floor page as Rally builds its frontend (the wasm-release profile, wasm-bindgen, then
# wasm-opt with Rally's arguments and with cargo-leptos's default) and print raw and Brotli bytes.
# Needs what `scripts/setup test` installs, and Debian's brotli.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
export PATH="$root/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="$root/target/wasm-floor"
cargo build --lib --target wasm32-unknown-unknown --profile wasm-release
out="$CARGO_TARGET_DIR/out"
wasm-bindgen --target=web --out-dir="$out" --out-name=floor \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/rally_wasm_floor.wasm"
for level in -Oz -Os; do
  args=("$level" --enable-bulk-memory --enable-nontrapping-float-to-int)
  [ "$level" = -Os ] && args+=(--converge)
  wasm-opt "${args[@]}" "$out/floor_bg.wasm" -o "$out/floor$level.wasm"
  printf 'wasm-opt %s: %s B, Brotli (q 11) %s B\n' "${args[*]}" \
    "$(stat -c %s "$out/floor$level.wasm")" "$(brotli -q 11 -c "$out/floor$level.wasm" | wc -c)"
done
