#!/usr/bin/env bash
# On a GPU host: build hatch with its CUDA kernels, run the whole test suite, and record the result
# (GPU model, driver, torch / CUDA / nvcc versions, build info, pass / fail / skip counts, failures)
# under benchmarks/results/ as gpu_check_<UTC time>.{json,md,log}.
#
#   bash scripts/gpu_check.sh [extra pytest args]
#
# Needs: a CUDA build of torch on the python in PATH (or $PYTHON), nvcc (CUDA_HOME), and the package's
# dependencies already installed (the build uses --no-deps: GPU hosts are often offline; set
# HATCH_GPU_CHECK_DEPS=1 to let pip resolve dependencies). If the editable install fails, the script
# falls back to `python setup.py build_ext --inplace` and runs the tests with PYTHONPATH.
# Exit status: 0 iff the build has the CUDA kernels and no test failed or errored.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1
PY=${PYTHON:-python}
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() and torch.version.cuda else 1)'; then
  echo "gpu_check: torch on '$PY' has no usable CUDA GPU (torch.version.cuda / torch.cuda.is_available()); nothing to check" >&2
  exit 2
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
outdir=benchmarks/results
mkdir -p "$outdir"
base="$outdir/gpu_check_${stamp}"
log="$base.log"
junit=$(mktemp --suffix=.xml)
: > "$log"

echo "== build: pip install --no-build-isolation -e . (log: $log)"
deps="--no-deps"
[ "${HATCH_GPU_CHECK_DEPS:-0}" = "1" ] && deps=""
build_start=$(date +%s)
build_mode=editable
if ! "$PY" -m pip install --no-build-isolation $deps -e . >> "$log" 2>&1; then
  echo "editable install failed (see $log); falling back to setup.py build_ext --inplace" | tee -a "$log"
  build_mode=inplace
  if ! "$PY" setup.py build_ext --inplace >> "$log" 2>&1; then
    echo "gpu_check: the build failed; see $log" | tee -a "$log"
    tail -40 "$log"
    exit 1
  fi
  export PYTHONPATH="$PWD:$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
fi
build_s=$(( $(date +%s) - build_start ))

echo "== tests: pytest -q -rs $*"
test_start=$(date +%s)
"$PY" -m pytest -q -rs --junitxml="$junit" "$@" 2>&1 | tee -a "$log"
test_rc=${PIPESTATUS[0]}
test_s=$(( $(date +%s) - test_start ))

"$PY" - "$junit" "$base" "$build_mode" "$build_s" "$test_s" "$test_rc" <<'EOF'
"""Writes the JSON record and a short markdown summary of this GPU check."""
import json
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET

import torch

junit, base, build_mode, build_s, test_s, test_rc = sys.argv[1:]


def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception as e:  # noqa: BLE001 - a missing tool must not lose the record
        return f"unavailable ({e})"


counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
failed = []
try:
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for s in suites:
        for k in counts:
            counts[k] += int(s.get(k, 0))
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname')}::{case.get('name')}")
except Exception as e:  # noqa: BLE001
    failed.append(f"(could not read the junit report: {e})")
passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]

try:
    import hatch_ext
    build_info = hatch_ext.build_info()
    cuda_kernels = hatch_ext.has_cuda_kernels()
except Exception as e:  # noqa: BLE001
    build_info, cuda_kernels = {"error": str(e)}, False

props = torch.cuda.get_device_properties(0)
record = {
    "when_utc": base.rsplit("_", 1)[-1],
    "git_commit": run(["git", "rev-parse", "HEAD"]),
    "gpu": torch.cuda.get_device_name(0),
    "gpu_capability": f"{props.major}.{props.minor}",
    "gpu_memory_gib": round(props.total_memory / 2**30, 1),
    "nvidia_smi": run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                       "--format=csv,noheader"]),
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "nvcc": (run(["nvcc", "--version"]).splitlines() or [None])[-1],
    "python": platform.python_version(),
    "hatch_build_info": build_info,
    "hatch_cuda_kernels": cuda_kernels,
    "build_mode": build_mode,
    "build_seconds": int(build_s),
    "test_seconds": int(test_s),
    "pytest_exit_code": int(test_rc),
    "passed": passed,
    **counts,
    "failed_tests": failed,
}
with open(base + ".json", "w") as f:
    json.dump(record, f, indent=2)
ok = cuda_kernels and counts["failures"] == 0 and counts["errors"] == 0
with open(base + ".md", "w") as f:
    f.write(f"# GPU check {record['when_utc']} ({'PASS' if ok else 'FAIL'})\n\n")
    f.write(f"* GPU: {record['gpu']} (sm {record['gpu_capability']}, {record['gpu_memory_gib']} GiB); "
            f"nvidia-smi: {record['nvidia_smi']}\n")
    f.write(f"* torch {record['torch']}, CUDA {record['torch_cuda']}, nvcc: {record['nvcc']}, "
            f"Python {record['python']}\n")
    f.write(f"* commit {record['git_commit']}; CUDA kernels built: {cuda_kernels}; "
            f"build {build_s} s ({build_mode}), tests {test_s} s\n")
    f.write(f"* tests: {passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
            f"{counts['skipped']} skipped (of {counts['tests']})\n")
    if failed:
        f.write("\nFailed:\n\n" + "".join(f"* `{t}`\n" for t in failed))
print(open(base + ".md").read())
sys.exit(0 if ok else 1)
EOF
status=$?
rm -f "$junit"
echo "recorded: $base.{json,md,log}"
exit $status
