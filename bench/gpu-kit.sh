#!/bin/sh
# Prepares a run of bench/on-gpu.sh on a machine with a GPU but no Rust toolchain and no
# network (the `device` machine of this workplace): builds the release command line and the
# GPU test binaries here, strips and compresses them into bench/kit/ (git-ignored), and
# fetches the Vulkan
# loader's packages into .gl/ when asked (`bench/gpu-kit.sh --loader`).
set -eu
cd "$(dirname "$0")/.."
kit=bench/kit
rm -rf "$kit"
mkdir -p "$kit/tests"
cargo build --release --features cli
cp target/release/wgpu-losses "$kit/"
# The test executables, by target name, from cargo's build plan.
cargo test --release --features cli --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, shutil, sys
wanted = {"every_loss", "cross_entropy", "elementwise", "metric_losses", "plans", "large",
          "pytorch_fixtures", "engine", "linear_cross_entropy", "non_finite"}
for line in sys.stdin:
    m = json.loads(line)
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe and m["target"]["name"] in wanted:
        shutil.copy(exe, "'"$kit"'/tests/" + m["target"]["name"])
'
strip "$kit/wgpu-losses" "$kit"/tests/*
# Compressed, the kit travels in well under the device tool's 64 MiB.
gzip -9 "$kit/wgpu-losses" "$kit"/tests/*
# Tests find their fixtures under the directory they were built in.
pwd > "$kit/MANIFEST_DIR"
if [ "${1:-}" = "--loader" ]; then
    grep -qx '/.gl/' .git/info/exclude || echo /.gl/ >> .git/info/exclude
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update
    # The NVIDIA ICD (libGLX_nvidia) needs glvnd's libraries beside the loader.
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
du -sh "$kit" .gl 2>/dev/null || du -sh "$kit"
