"""Building the deployment zip and running it the way Lambda does.

The zip comes from ``build_lambda.sh`` (for this machine's architecture and
Python, so its compiled wheels load here) and is unpacked into an empty
directory that plays ``/var/task``. The AWS SDK, which Lambda's runtime
provides in ``/var/runtime`` already byte-compiled, comes from this
interpreter's own installation (byte-compiled too). Children run with ``-S``
(no site-packages of ours leak in), ``PYTHONPATH=task:runtime`` and
``PYTHONDONTWRITEBYTECODE=1``: ``/var/task`` is read-only in Lambda, so
whatever the zip lacks in ``.pyc`` is compiled again on every cold start. The
function is the ``kv_sync`` package in the zip; Lambda runs
``kv_sync.handler.lambda_handler``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from benchmarks._support.common import ROOT

CACHE = ROOT / "build" / "bench"
SOURCES = ROOT / "lambda_function"
HANDLER = "kv_sync.handler.lambda_handler"
# What the Lambda Python runtime ships besides the standard library.
SDK_MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six")
CHILD = Path(__file__).with_name("child.py")


def host_arch() -> str:
    machine = platform.machine().lower()
    return "arm64" if machine in {"aarch64", "arm64"} else "x86_64"


def host_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _inputs_digest(*extra: str) -> str:
    digest = hashlib.sha256()
    paths = sorted(SOURCES.rglob("*.py"))
    paths += [ROOT / "requirements.txt", ROOT / "build_lambda.sh"]
    for path in paths:
        if path.exists():
            digest.update(path.relative_to(ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:16]


def build_zip(
    *, arch: str | None = None, python: str | None = None, include_sdk: bool = False
) -> Path:
    """The deployment zip for ``arch``/``python`` (default: this machine), built once
    per content of the sources, requirements and build script (cached in build/bench)."""
    arch = arch or host_arch()
    python = python or host_python()
    key = _inputs_digest(arch, python, str(include_sdk))
    output = CACHE / key / "lambda_function.zip"
    if output.exists():
        return output
    output.parent.mkdir(parents=True, exist_ok=True)
    # Built beside, then renamed: two benchmarks building at once never see half a zip.
    partial = output.with_name(f"building-{os.getpid()}.zip")
    command = ["bash", str(ROOT / "build_lambda.sh"), "--arch", arch, "--python-version", python]
    command += ["--output", str(partial)] + (["--include-sdk"] if include_sdk else [])
    built = subprocess.run(
        command,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        sys.stderr.write(built.stdout + built.stderr)
        raise RuntimeError(f"build_lambda.sh failed ({built.returncode})")
    partial.replace(output)
    _prune(keep=output.parent)
    return output


def _prune(keep: Path, builds: int = 6) -> None:
    """Keep the newest few builds in the cache (sources change while people work)."""
    entries = sorted(
        (p for p in CACHE.iterdir() if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in entries[builds - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def unpack(zip_path: Path, target: Path) -> Path:
    """Unpack the zip into ``target`` (which must be empty or absent)."""
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise RuntimeError(f"{target} is not empty")
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(target)
    return target


def precompile(task: Path) -> None:
    """Byte-compile an unpacked tree, as a zip shipping ``.pyc`` would be."""
    import compileall
    import py_compile

    compileall.compile_dir(
        str(task), quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
    )


def prepare(work: Path) -> tuple[Path, Path]:
    """The built zip unpacked into ``work/task``, and ``work/runtime`` beside it."""
    task = unpack(build_zip(), work / "task")
    return task, make_runtime_dir(work / "runtime")


def make_runtime_dir(target: Path) -> Path:
    """A stand-in for Lambda's ``/var/runtime``: the AWS SDK, byte-compiled."""
    target.mkdir(parents=True, exist_ok=True)
    for name in SDK_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"{name} is not installed; run `make venv` first")
        origin = Path(spec.origin)
        source = origin.parent if origin.name == "__init__.py" else origin
        (target / source.name).symlink_to(source, target_is_directory=source.is_dir())
    return target


def child_command(mode: str) -> list[str]:
    """A fresh interpreter running the child driver in ``mode``."""
    return [sys.executable, "-S", "-P", str(CHILD), mode]


def lambda_env(
    task: Path, runtime: Path, *, trace_header: str, xray_address: str
) -> dict[str, str]:
    """The variables Lambda sets for a Python function with active tracing."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONPATH": f"{task}{os.pathsep}{runtime}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_TASK_ROOT": str(task),
        "LAMBDA_RUNTIME_DIR": str(runtime),
        "_HANDLER": HANDLER,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{host_python()}",
        "AWS_LAMBDA_FUNCTION_NAME": "cloudflare-data-sync",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/cloudflare-data-sync",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2025/01/01/[$LATEST]bench",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": xray_address,
        "_AWS_XRAY_DAEMON_ADDRESS": xray_address.rsplit(":", 1)[0],
        "_AWS_XRAY_DAEMON_PORT": xray_address.rsplit(":", 1)[1],
        "_X_AMZN_TRACE_ID": trace_header,
        "POWERTOOLS_SERVICE_NAME": "kv-sync",
        "POWERTOOLS_METRICS_NAMESPACE": "KvSync",
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }
