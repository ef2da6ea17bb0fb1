"""build_lambda.sh: a reproducible zip for the Lambda platform that really runs.

The builds download wheels from PyPI (pip's cache makes repeats quick). The zip
that runs is built for this machine's architecture and for the Python that runs
it (3.12, the Lambda runtime's, when this machine has it), then unpacked into an
empty directory and imported by ``python -I -S`` with nothing else on the path
but a stand-in for the runtime's boto3 (and, last, the repository root, for the
standard-library-only ``local.lambda_context``), with tracing on as in Lambda.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.terraform.tfharness import PACKAGE_DIR, REPO_ROOT

BUILD_SCRIPT = REPO_ROOT / "build_lambda.sh"
SDK_TOP_LEVEL = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py")


def build(output: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BUILD_SCRIPT), "--output", str(output), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"build_lambda.sh failed:\n{result.stdout}\n{result.stderr}"
    return result


def python_for_lambda() -> tuple[str, str]:
    """An interpreter for the runtime's Python (3.12) if there is one, else this one."""
    candidates = [shutil.which("python3.12"), "/usr/bin/python3.12", "/usr/local/bin/python3.12"]
    candidates += [str(p) for p in sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))]
    for candidate in candidates:
        if not candidate or not Path(candidate).exists():
            continue
        probe = subprocess.run(
            [candidate, "-I", "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "3.12":
            return candidate, "3.12"
    return sys.executable, f"{sys.version_info.major}.{sys.version_info.minor}"


def host_arch() -> str:
    machine = platform.machine().lower()
    return "arm64" if machine in {"aarch64", "arm64"} else "x86_64"


@dataclass
class Builds:
    first: Path
    second: Path
    output: str


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    """The default build (arm64, CPython 3.12), twice."""
    root = tmp_path_factory.mktemp("builds")
    result = build(root / "one" / "lambda_function.zip")
    build(root / "two" / "lambda_function.zip")
    return Builds(
        root / "one" / "lambda_function.zip", root / "two" / "lambda_function.zip", result.stdout
    )


def test_two_builds_are_byte_identical(builds: Builds):
    assert builds.first.read_bytes() == builds.second.read_bytes()


def test_byte_code_is_for_the_runtime_and_never_checked_against_sources(builds: Builds):
    # GIVEN the default build, byte-compiled when a CPython 3.12 is at hand
    with zipfile.ZipFile(builds.first) as archive:
        pycs = [n for n in archive.namelist() if n.endswith(".pyc")]
        if "byte-compiled" not in builds.output:
            # THEN without one it ships sources only, and says why
            assert pycs == []
            pytest.skip("no CPython 3.12 on this machine: the build shipped sources only")
        handler = archive.read("kv_sync/__pycache__/handler.cpython-312.pyc")

    # THEN every module has its .pyc, hash-based and unchecked (flags 0b01), so
    # the zip stays reproducible and Lambda loads them without reading sources
    assert len(pycs) > 100
    assert int.from_bytes(handler[4:8], "little") == 0b01


def test_no_precompile_ships_sources_only(tmp_path: Path):
    build(tmp_path / "plain.zip", "--no-precompile")

    with zipfile.ZipFile(tmp_path / "plain.zip") as archive:
        assert not any(n.endswith(".pyc") for n in archive.namelist())


def test_build_prints_the_zip_size(builds: Builds):
    size = builds.first.stat().st_size

    assert f"{size} bytes" in builds.output
    assert size < 10 * 1024 * 1024, (
        "the zip should stay well under Lambda's 50 MB direct-upload cap"
    )


def test_entries_are_sorted_with_fixed_timestamps_and_permissions(builds: Builds):
    with zipfile.ZipFile(builds.first) as archive:
        infos = archive.infolist()

    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    for info in infos:
        mode = info.external_attr >> 16
        expected = 0o100755 if ".so" in info.filename.rsplit("/", 1)[-1] else 0o100644
        assert mode == expected, (info.filename, oct(mode))


def test_zip_holds_the_function_and_its_dependencies_but_not_the_sdk_or_junk(builds: Builds):
    with zipfile.ZipFile(builds.first) as archive:
        names = archive.namelist()
    top = {name.split("/", 1)[0] for name in names}
    modules = {
        entry.removesuffix(".py")
        for entry in top
        if not entry.endswith(".dist-info") and entry != "__pycache__"
    }

    # the function is the kv_sync package, every source of it and nothing else
    assert {n for n in names if n.startswith("kv_sync/") and n.endswith(".py")} == {
        f"kv_sync/{source.name}" for source in PACKAGE_DIR.glob("*.py")
    }
    # no module of ours at the top level: everything else belongs to a dependency
    assert not modules & {source.stem for source in PACKAGE_DIR.glob("*.py")}
    assert modules - {"kv_sync"} <= set(packages_distributions()), modules
    for package in ("aws_lambda_powertools", "aws_xray_sdk", "requests", "tenacity", "urllib3"):
        assert package in top, package
    for sdk in SDK_TOP_LEVEL:
        assert sdk not in top, sdk
    assert not any(t.startswith(("boto3-", "botocore-", "s3transfer-", "jmespath-")) for t in top)
    sources = set(names)
    for name in names:
        parts = name.split("/")
        assert not name.endswith(".pyo"), name
        if name.endswith(".pyc"):
            # byte-code only for the runtime's CPython, beside the module it belongs to
            assert parts[-2] == "__pycache__", name
            assert name.endswith(".cpython-312.pyc"), name
            module = "/".join([*parts[:-2], parts[-1].split(".")[0] + ".py"])
            assert module in sources, name
        else:
            assert "__pycache__" not in parts, name
        assert "tests" not in parts, name
        assert parts[0] != "bin", name
        if parts[0].endswith(".dist-info"):
            assert parts[-1] not in {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}, name


def test_default_build_is_for_arm64_and_cpython_312(builds: Builds):
    with zipfile.ZipFile(builds.first) as archive:
        shared = [name for name in archive.namelist() if ".so" in name.rsplit("/", 1)[-1]]

    assert shared, "expected compiled dependencies (charset_normalizer, wrapt)"
    assert all("cpython-312-aarch64-linux-gnu" in name for name in shared), shared


def test_include_sdk_keeps_boto3(tmp_path: Path):
    output = tmp_path / "with-sdk.zip"

    build(output, "--include-sdk", "--arch", "x86_64")

    with zipfile.ZipFile(output) as archive:
        top = {name.split("/", 1)[0] for name in archive.namelist()}
        shared = [n for n in archive.namelist() if ".so" in n.rsplit("/", 1)[-1]]
    assert {"boto3", "botocore", "s3transfer", "jmespath"} <= top
    assert shared and all("x86_64-linux-gnu" in name for name in shared), shared


def test_bad_arguments_fail_with_a_clear_message(tmp_path: Path):
    bad_arch = subprocess.run(
        [str(BUILD_SCRIPT), "--arch", "sparc", "--output", str(tmp_path / "x.zip")],
        capture_output=True,
        text=True,
        check=False,
    )
    no_python = subprocess.run(
        [str(BUILD_SCRIPT), "--output", str(tmp_path / "x.zip")],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHON": "no-such-python3"},
    )

    assert bad_arch.returncode != 0
    assert "--arch must be arm64 or x86_64" in bad_arch.stderr
    assert no_python.returncode != 0
    assert "'no-such-python3' not found" in no_python.stderr
    assert not (tmp_path / "x.zip").exists()


# --------------------------------------------------------------------------------------
# The zip runs
# --------------------------------------------------------------------------------------

RUNNER = r"""
import json, os, sys
package, sdk, repo = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path[:0] = [package, sdk]
# The fake context only (standard library), and last, so that it shadows nothing.
sys.path.append(repo)

from kv_sync import handler
from local.lambda_context import LambdaContext

response = handler.lambda_handler({"key_name": sys.argv[4]}, LambdaContext(timeout_ms=60_000))

# Every top-level package in the zip imports, compiled extensions included.
import importlib
for entry in sorted(os.listdir(package)):
    name = entry[:-3] if entry.endswith(".py") else entry
    if name.isidentifier() and (entry.endswith(".py") or os.path.isdir(os.path.join(package, entry))):
        importlib.import_module(name)
from aws_lambda_powertools import Tracer

import sysconfig

paths = sysconfig.get_paths()
allowed = tuple(os.path.join(p, "") for p in (package, sdk, paths["stdlib"], paths["platstdlib"]))
outside = sorted(
    name
    for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not os.path.abspath(module.__file__).startswith(allowed)
    and name not in {"local", "local.lambda_context"}
)
origins = {
    name: os.path.dirname(os.path.dirname(os.path.abspath(sys.modules[name].__file__)))
    for name in (
        "boto3", "botocore", "requests", "urllib3", "aws_lambda_powertools", "aws_xray_sdk",
        "wrapt", "kv_sync",
    )
}
compiled = sorted(
    name
    for name, module in list(sys.modules.items())
    if (getattr(module, "__file__", None) or "").endswith(".so")
    and os.path.abspath(module.__file__).startswith(os.path.join(package, ""))
)
print(json.dumps(
    {"response": response, "outside": outside, "origins": origins, "compiled": compiled},
    default=str,
))
"""


@pytest.fixture
def runnable_zip(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The host-arch build for the chosen Python, unpacked; and an SDK stand-in."""
    python, version = python_for_lambda()
    output = tmp_path / "lambda_function.zip"
    build(output, "--arch", host_arch(), "--python-version", version)
    package = tmp_path / "task"
    package.mkdir()
    with zipfile.ZipFile(output) as archive:
        archive.extractall(package)
    # Stand-in for the runtime's SDK: boto3 and what it brings, from this venv.
    sdk = tmp_path / "runtime-sdk"
    sdk.mkdir()
    for name in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, f"{name} is not installed in this venv"
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            (sdk / name).symlink_to(origin.parent, target_is_directory=True)
        else:
            (sdk / origin.name).symlink_to(origin)
    yield python, package, sdk


def test_built_zip_runs_a_sync_in_a_clean_interpreter(
    runnable_zip: tuple[str, Path, Path],
    moto_server_url: str,
    kv_emulator: Any,
    daemon: socket.socket,
    tmp_path: Path,
):
    # GIVEN the zip unpacked alone, a table, a secret and a key, and Lambda's tracing
    python, package, sdk = runnable_zip
    trace_parent = uuid.uuid4().hex[:16]
    suffix = uuid.uuid4().hex[:8]
    table, secret = f"zip-{suffix}", f"zip/{suffix}"
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_server_url)
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
    )
    namespace_id = kv_emulator.test_namespace_id
    boto3.client("secretsmanager", endpoint_url=moto_server_url).create_secret(
        Name=secret,
        SecretString=json.dumps(
            {
                "api_token": "test-token",
                "account_id": kv_emulator.account_id,
                "kv_namespace_id": namespace_id,
                "kv_namespace": "kv-sync-test",
            }
        ),
    )
    kv_emulator.put(namespace_id, "from-the-zip", "zipped value", metadata={"built": True})
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_server_url,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "DYNAMODB_TABLE_NAME": table,
        "SECRETS_MANAGER_SECRET_NAME": secret,
        "CLOUDFLARE_API_BASE_URL": kv_emulator.base_url,
        "POWERTOOLS_SERVICE_NAME": "kv-sync",
        "POWERTOOLS_METRICS_NAMESPACE": "KvSync",
        # Lambda's variables with active tracing: traced by the zip's own X-Ray SDK
        "LAMBDA_TASK_ROOT": str(package),
        "_X_AMZN_TRACE_ID": f"Root=1-6766e0c0-{uuid.uuid4().hex[:24]};Parent={trace_parent};"
        "Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{daemon.getsockname()[1]}",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    }

    # WHEN a fresh interpreter imports kv_sync from it and syncs the key
    run = subprocess.run(
        [python, "-I", "-S", "-c", RUNNER, str(package), str(sdk), str(REPO_ROOT), "from-the-zip"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )

    # THEN the sync succeeds with nothing but the zip and the SDK imported
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["response"]["success"] is True, result["response"]
    assert result["outside"] == []
    assert result["origins"]["boto3"] == result["origins"]["botocore"] == str(sdk)
    assert result["origins"]["requests"] == result["origins"]["urllib3"] == str(package)
    for name in ("aws_lambda_powertools", "aws_xray_sdk", "wrapt", "kv_sync"):
        assert result["origins"][name] == str(package), name
    # the platform wheels' extension modules loaded in this interpreter
    assert result["compiled"], "no compiled extension from the zip was imported"
    item = dynamodb.get_item(
        TableName=table,
        Key={"pk": {"S": f"NAMESPACE#{namespace_id}"}, "sk": {"S": "KEY#from-the-zip"}},
    )["Item"]
    assert item["value"] == {"S": "zipped value"}
    assert item["metadata"] == {"M": {"built": {"BOOL": True}}}
    # the invocation was traced under Lambda's segment, with our subsegments
    traced = received_subsegments(daemon)
    assert "## lambda_handler" in traced, traced
    assert traced["## lambda_handler"]["parent_id"] == trace_parent
    assert {"## secrets.read", "## cloudflare.fetch", "## dynamodb.write", "dynamodb"} <= set(
        traced
    )


@pytest.fixture
def daemon() -> Iterator[socket.socket]:
    """A UDP socket standing in for the X-Ray daemon."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    with sock:
        yield sock


def received_subsegments(sock: socket.socket) -> dict[str, dict[str, Any]]:
    """Every (sub)segment the daemon stand-in received, by name, nested ones included."""
    found: dict[str, dict[str, Any]] = {}
    while True:
        try:
            datagram = sock.recv(65536)
        except TimeoutError:
            return found
        header, _, body = datagram.decode().partition("\n")
        assert json.loads(header) == {"format": "json", "version": 1}
        pending = [json.loads(body)]
        while pending:
            entity = pending.pop()
            found[entity["name"]] = entity
            pending.extend(entity.get("subsegments", []))
