#!/usr/bin/env bash
# Build the Lambda deployment zip from lambda_function/kv_sync/ and requirements.txt.
#
#   ./build_lambda.sh [--arch arm64|x86_64] [--python-version 3.12] [--output PATH] [--include-sdk]
#                     [--no-precompile]
#
# * Dependencies are wheels for the Lambda platform (manylinux2014, the chosen
#   architecture and Python), never the build machine's: pip install --platform ...
#   --only-binary=:all: --target.
# * boto3, botocore, s3transfer and jmespath come with the Lambda runtime, and so do
#   botocore's own dependencies python-dateutil and six: they are left out unless
#   --include-sdk is given.
# * No tests, type stubs, console scripts or install records; each dist-info keeps only
#   METADATA, top_level.txt and licence files.
# * Byte-code: Lambda's /var/task is read-only, so modules shipped without .pyc are
#   compiled on every cold start. When a CPython of the target version is at hand
#   (COMPILE_PYTHON, else python3.12 on PATH, else pyenv's), every module is compiled
#   with it (unchecked-hash .pyc, paths as /var/task/...); otherwise, or with
#   --no-precompile, the zip holds sources only. Never .pyc of another Python.
# * Deterministic: entries sorted, timestamps fixed at 1980-01-01, permissions fixed
#   (0755 for shared objects, 0644 otherwise), so the same sources and requirements
#   give a byte-identical zip and Terraform's source_code_hash does not churn.
#
# Environment: PYTHON (default python3) runs pip and the zip step; COMPILE_PYTHON
# names the interpreter that byte-compiles (it must be CPython --python-version).
set -euo pipefail

usage() {
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
  echo "build_lambda.sh: error: $*" >&2
  exit 1
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ARCH="arm64"
PY_VERSION="3.12"
OUTPUT="$ROOT/lambda_function.zip"
INCLUDE_SDK=0
PRECOMPILE=1

while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || die "--arch needs a value"; ARCH="$2"; shift 2 ;;
    --arch=*) ARCH="${1#*=}"; shift ;;
    --python-version) [ $# -ge 2 ] || die "--python-version needs a value"; PY_VERSION="$2"; shift 2 ;;
    --python-version=*) PY_VERSION="${1#*=}"; shift ;;
    --output|-o) [ $# -ge 2 ] || die "--output needs a value"; OUTPUT="$2"; shift 2 ;;
    --output=*) OUTPUT="${1#*=}"; shift ;;
    --include-sdk) INCLUDE_SDK=1; shift ;;
    --no-precompile) PRECOMPILE=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

case "$ARCH" in
  arm64) PLATFORM="manylinux2014_aarch64" ;;
  x86_64) PLATFORM="manylinux2014_x86_64" ;;
  *) die "--arch must be arm64 or x86_64, not '$ARCH'" ;;
esac
[[ "$PY_VERSION" =~ ^3\.[0-9]+$ ]] || die "--python-version must look like 3.12, not '$PY_VERSION'"

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 \
  || die "'$PYTHON' not found: install Python 3 (or set PYTHON=/path/to/python3)"
"$PYTHON" -m pip --version >/dev/null 2>&1 \
  || die "pip is not available for '$PYTHON': install it (python3 -m ensurepip, or your OS's python3-pip package)"
"$PYTHON" -c 'import zipfile, zlib' >/dev/null 2>&1 \
  || die "'$PYTHON' cannot import zipfile/zlib, which build the zip"

[ -f "$ROOT/requirements.txt" ] || die "requirements.txt not found in $ROOT"
[ -f "$ROOT/lambda_function/kv_sync/handler.py" ] || die "lambda_function/kv_sync/handler.py not found in $ROOT"

case "$OUTPUT" in
  /*) ;;
  *) OUTPUT="$PWD/$OUTPUT" ;;
esac
mkdir -p "$(dirname "$OUTPUT")"

# The interpreter that byte-compiles: exactly CPython $PY_VERSION, or none.
find_compile_python() {
  local candidate version
  for candidate in "${COMPILE_PYTHON:-}" "python$PY_VERSION" \
    $(command -v pyenv >/dev/null 2>&1 && ls -d "$(pyenv root)/versions/$PY_VERSION".*/bin/"python$PY_VERSION" 2>/dev/null | sort -V -r); do
    [ -n "$candidate" ] || continue
    version=$("$candidate" -c 'import sys; print("%s %d.%d" % (sys.implementation.name, *sys.version_info[:2]))' 2>/dev/null) || continue
    if [ "$version" = "cpython $PY_VERSION" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
COMPILER=""
if [ "$PRECOMPILE" = 1 ]; then
  if COMPILER="$(find_compile_python)"; then
    echo "Byte-compiling with $COMPILER"
  else
    COMPILER=""
    echo "build_lambda.sh: warning: no CPython $PY_VERSION found (set COMPILE_PYTHON); shipping sources without .pyc, which costs cold start" >&2
  fi
elif [ -n "${COMPILE_PYTHON:-}" ]; then
  echo "build_lambda.sh: --no-precompile given: ignoring COMPILE_PYTHON" >&2
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PACKAGE="$WORK/package"
mkdir -p "$PACKAGE"

echo "Installing dependencies for $PLATFORM, CPython $PY_VERSION ..."
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install \
  --quiet \
  --no-compile \
  --no-warn-conflicts \
  --no-warn-script-location \
  --platform "$PLATFORM" \
  --implementation cp \
  --python-version "$PY_VERSION" \
  --only-binary=:all: \
  --target "$PACKAGE" \
  --requirement "$ROOT/requirements.txt" \
  || die "pip could not install requirements.txt for $PLATFORM / CPython $PY_VERSION (is PyPI reachable?)"

# The function's package last, so that no dependency can shadow it; sources only.
rm -rf "$PACKAGE/kv_sync"
mkdir -p "$PACKAGE/kv_sync"
cp "$ROOT"/lambda_function/kv_sync/*.py "$PACKAGE/kv_sync/"

"$PYTHON" - "$PACKAGE" "$OUTPUT" "$INCLUDE_SDK" "$COMPILER" <<'PY'
"""Prune the installed tree, byte-compile it if asked, and write a deterministic zip."""

import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

package, output, include_sdk = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
compiler = sys.argv[4]

# Provided by the Lambda Python runtime.
SDK = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "python_dateutil"}
SDK_FILES = {"six.py"}
JUNK_DIRS = {"__pycache__", "tests", "test", "bin"}
KEEP_IN_DIST_INFO = re.compile(r"^(METADATA|top_level\.txt|licenses/.*|LICEN[CS]E.*|COPYING.*|NOTICE.*|AUTHORS.*)$")


def dist_name(dist_info: Path) -> str:
    return re.sub(r"[-.]+", "_", dist_info.name.split("-")[0]).lower()


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


for entry in sorted(package.iterdir()):
    name = entry.name
    if not include_sdk and (
        name in SDK
        or name in SDK_FILES
        or (name.endswith(".dist-info") and dist_name(entry) in SDK)
    ):
        remove(entry)
    elif (name in JUNK_DIRS or name.endswith("-stubs")) and entry.is_dir():
        remove(entry)

for dirpath, dirnames, filenames in os.walk(package, topdown=True):
    current = Path(dirpath)
    for dirname in list(dirnames):
        if dirname in {"__pycache__", "tests", "test"}:
            shutil.rmtree(current / dirname)
            dirnames.remove(dirname)
    dist_info = next(
        (p for p in (current, *current.parents) if p.name.endswith(".dist-info")), None
    )
    for filename in filenames:
        path = current / filename
        if filename.endswith((".pyc", ".pyo", ".pyi")):
            path.unlink()
        elif dist_info is not None:
            if not KEEP_IN_DIST_INFO.match(path.relative_to(dist_info).as_posix()):
                path.unlink()

if compiler:
    # unchecked-hash: no source mtimes inside, so the .pyc are reproducible and
    # Lambda never re-checks them; a fixed hash seed keeps set constants in order.
    subprocess.run(
        [compiler, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash",
         "-s", str(package), "-p", "/var/task", str(package)],
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
files = sorted(
    (p for p in package.rglob("*") if p.is_file() and not p.is_symlink()),
    key=lambda p: p.relative_to(package).as_posix(),
)
tmp = output.with_name(output.name + ".tmp")
with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
    for path in files:
        arcname = path.relative_to(package).as_posix()
        info = zipfile.ZipInfo(arcname, date_time=FIXED_TIME)
        info.create_system = 3  # Unix, so external_attr carries the mode
        mode = 0o755 if re.search(r"\.so(\.|$)", path.name) else 0o644
        info.external_attr = (stat.S_IFREG | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, path.read_bytes(), compresslevel=9)
os.replace(tmp, output)
print(f"{len(files)} files")
PY

SIZE_BYTES=$(wc -c < "$OUTPUT" | tr -d ' ')
echo "Built $OUTPUT for $ARCH (CPython $PY_VERSION$([ "$INCLUDE_SDK" = 1 ] && echo ', AWS SDK included')$([ -n "$COMPILER" ] && echo ', byte-compiled')): $SIZE_BYTES bytes ($(( (SIZE_BYTES + 1023) / 1024 )) KiB)"
