#!/bin/sh
# Runs the GPU tests and the full benchmark on the machine this runs on, with the binaries
# bench/gpu-kit.sh built, and writes everything under bench/results/<adapter>/ (or straight
# into $OUT, where set). Arguments go to `bench` (e.g. --quick); TESTS="plans every_loss" runs only
# those test binaries. Installs nothing it cannot get: the Vulkan loader comes from .gl/*.deb when
# brought, the NVIDIA driver's ICD from /usr/local/nvidia when no ICD is found.
set -u
start=$(date +%s)
cd "$(dirname "$0")/.."
[ -e bench/kit/wgpu-losses.gz ] || { echo "run bench/gpu-kit.sh first" >&2; exit 2; }
kit=/tmp/wgpu-losses-kit
rm -rf "$kit" && mkdir -p "$kit/tests"
cp bench/kit/MANIFEST_DIR "$kit/"
gunzip -c bench/kit/wgpu-losses.gz > "$kit/wgpu-losses"
for t in bench/kit/tests/*.gz; do gunzip -c "$t" > "$kit/tests/$(basename "$t" .gz)"; done
chmod +x "$kit/wgpu-losses" "$kit"/tests/*
# The loader and glvnd (which the NVIDIA ICD, libGLX_nvidia, needs to start) from .gl/, if brought.
if ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1 && [ -e "$nvidia_icd" ]; then
    export VK_DRIVER_FILES="$nvidia_icd"
fi
export NODEVICE_SELECT=1
# The test binaries read fixtures from the directory they were built in.
built=$(cat "$kit/MANIFEST_DIR")
if [ ! -e "$built" ]; then
    mkdir -p "$(dirname "$built")" && ln -s "$PWD" "$built"
fi
# The eval tests run the command line from where cargo built it.
mkdir -p "$built/target/release" && cp "$kit/wgpu-losses" "$built/target/release/"
"$kit/wgpu-losses" info > /tmp/wgpu-losses-info.txt 2>&1
cat /tmp/wgpu-losses-info.txt
adapter=$(sed -n 's/^chosen: \(.*\) (\(.*\))$/\1-\2/p' /tmp/wgpu-losses-info.txt |
    tr 'A-Z' 'a-z' | tr -cs 'a-z0-9.' '-' | sed 's/^-//; s/-$//')
[ -n "$adapter" ] || { echo "no adapter found" >&2; exit 1; }
# Straight into $OUT where set, so that a run cut off at its limit still brings back what it wrote.
out="${OUT:-bench/results/$adapter}"
mkdir -p "$out"
cp /tmp/wgpu-losses-info.txt "$out/info.txt"
failed=0
: > "$out/tests.txt"
# Time limits (seconds, from the start of this script) keep a lease's single call inside its
# limit: TEST_UNTIL for the tests, BENCH_UNTIL for the benchmark; a phase past its limit fails.
left() { r=$(( start + $1 - $(date +%s) )); echo $(( r > 1 ? r : 1 )); }
for t in ${TESTS:-$(ls "$kit/tests")}; do
    t="$kit/tests/$t"
    echo "== $(basename "$t")" | tee -a "$out/tests.txt"
    timeout -k 10 "$(left "${TEST_UNTIL:-100000}")" "$t" --test-threads 8 >> "$out/tests.txt" 2>&1 || failed=1
    grep -E '^test result' "$out/tests.txt" | tail -1
done
timeout -k 10 "$(left "${BENCH_UNTIL:-100000}")" "$kit/wgpu-losses" bench --json "$out/bench.json" \
    --svg "$out/bench.svg" "$@" > "$out/bench.txt" 2>&1 || failed=1
cat "$out/bench.txt"
echo "tests: $([ $failed = 0 ] && echo passed || echo FAILED); results in $out"
exit $failed
