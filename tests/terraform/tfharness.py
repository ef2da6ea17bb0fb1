"""Run the Terraform CLI on a throw-away copy of ``terraform/``.

The copy lives in a temporary directory, so the repository never gets a
``.terraform/`` directory, a lock file or state. When ``KV_SYNC_TF_PROVIDER_MIRROR``
names a filesystem mirror (``make test`` sets it when the registry is unreachable
and ``scripts/tf_mirror.py`` finds one), a CLI configuration written by that
script selects it through ``TF_CLI_CONFIG_FILE``; otherwise Terraform downloads
the provider as usual, with the user's own CLI configuration. Against moto
server, a test-only ``override.tf`` points every AWS service the stack uses at moto.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scripts import tf_mirror

REPO_ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO_ROOT / "terraform"
LAMBDA_DIR = REPO_ROOT / "lambda_function"
# The function's one package, shipped as ``kv_sync/`` in the zip.
PACKAGE_DIR = LAMBDA_DIR / "kv_sync"
MIRROR_ENV = tf_mirror.MIRROR_ENV

# Every AWS service the configuration calls (provider endpoint names).
MOTO_SERVICES = (
    "cloudwatch",
    "dynamodb",
    "events",
    "iam",
    "kms",
    "lambda",
    "logs",
    "secretsmanager",
    "sfn",
    "sns",
    "sqs",
    "sts",
)


def terraform_binary() -> str:
    """The Terraform CLI, or skip the test with the reason."""
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform CLI not on PATH (install Terraform >= 1.5 to run these tests)")
    return binary


def terraform_version() -> tuple[int, int]:
    """(major, minor) of the Terraform CLI."""
    output = subprocess.run(
        [terraform_binary(), "version", "-json"], capture_output=True, text=True, check=True
    ).stdout
    major, minor = json.loads(output)["terraform_version"].split(".")[:2]
    return int(major), int(minor)


def provider_mirror() -> Path | None:
    """The provider mirror named by ``KV_SYNC_TF_PROVIDER_MIRROR``; None when unset.

    Unset means Terraform downloads the provider from the registry. A set but
    unusable mirror (no accepted ``hashicorp/aws`` version for this platform)
    fails the test with the reason.
    """
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return None
    path = Path(mirror).expanduser().absolute()
    target = tf_mirror.machine_platform()
    if not tf_mirror.holds_provider(path, tf_mirror.accepted_versions(), target):
        pytest.fail(f"{MIRROR_ENV}={mirror} holds no usable hashicorp/aws for {target}")
    return path


def write_cli_config(directory: Path, mirror: Path | None) -> Path:
    """The Terraform CLI configuration for the tests, in ``directory``.

    With a mirror: one that installs providers from ``mirror`` only (written by
    ``scripts/tf_mirror.py``, as for ``make terraform-check``). Without: the
    configuration Terraform would read anyway (``TF_CLI_CONFIG_FILE`` or
    ``~/.terraformrc``) when it exists, else an empty one, so providers are
    downloaded as usual.
    """
    if mirror is not None:
        config = directory / "terraformrc"
        config.write_text(tf_mirror.cli_config(mirror))
        return config
    user_config = os.environ.get("TF_CLI_CONFIG_FILE", "").strip()
    default = (
        Path(os.environ.get("APPDATA", "")) / "terraform.rc"
        if os.name == "nt"
        else Path.home() / ".terraformrc"
    )
    existing = Path(user_config).expanduser() if user_config else default
    if existing.is_file():
        return existing.absolute()
    config = directory / "terraformrc"
    config.write_text("# No provider_installation: Terraform downloads providers as usual.\n")
    return config


def moto_override(moto_url: str) -> str:
    """``override.tf`` content sending every AWS call of the stack to moto server."""
    endpoints = "\n".join(f"    {name} = {json.dumps(moto_url)}" for name in MOTO_SERVICES)
    return (
        'provider "aws" {\n'
        '  region                      = "us-east-1"\n'
        '  access_key                  = "testing"\n'
        '  secret_key                  = "testing"\n'
        "  skip_credentials_validation = true\n"
        "  skip_requesting_account_id  = true\n"
        "  skip_metadata_api_check     = true\n"
        "  s3_use_path_style           = true\n"
        "\n"
        "  endpoints {\n"
        f"{endpoints}\n"
        "  }\n"
        "}\n"
    )


def stub_package(path: Path) -> Path:
    """A tiny deployment zip: moto stores the code but never runs it."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("kv_sync/__init__.py", "")
        archive.writestr(
            "kv_sync/handler.py", "def lambda_handler(event, context):\n    return {}\n"
        )
    return path


class TerraformError(AssertionError):
    """A Terraform command failed; the message carries its output."""


@dataclass
class Terraform:
    """The Terraform CLI bound to one working directory."""

    workdir: Path
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def prepare(cls, workdir: Path, cli_config: Path, *, moto_url: str | None = None) -> Terraform:
        """Copy ``terraform/*.tf`` into ``workdir`` (plus the moto override)."""
        workdir.mkdir(parents=True, exist_ok=True)
        for source in sorted(TERRAFORM_DIR.glob("*.tf")):
            shutil.copy2(source, workdir / source.name)
        if moto_url is not None:
            (workdir / "override.tf").write_text(moto_override(moto_url))
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"AWS_PROFILE", "AWS_ENDPOINT_URL", "TF_DATA_DIR", "TF_WORKSPACE"}
            and not key.startswith(("TF_VAR_", "TF_CLI_ARGS"))
        }
        env.update(
            {
                "TF_CLI_CONFIG_FILE": str(cli_config),
                "TF_IN_AUTOMATION": "1",
                "TF_INPUT": "0",
                "CHECKPOINT_DISABLE": "1",
                "TF_CLI_ARGS": "-no-color",
            }
        )
        return cls(workdir, env)

    def fork(self, workdir: Path) -> Terraform:
        """An initialised copy with no state (plans from scratch, no second init)."""
        shutil.copytree(
            self.workdir,
            workdir,
            symlinks=True,
            ignore=shutil.ignore_patterns("terraform.tfstate*", "*.tfplan", "*.tfvars.json"),
        )
        return Terraform(workdir, dict(self.env))

    def run(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run ``terraform <args>`` in the working directory."""
        started = time.monotonic()
        result = subprocess.run(
            [terraform_binary(), f"-chdir={self.workdir}", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.timings[args[0]] = self.timings.get(args[0], 0.0) + time.monotonic() - started
        if check and result.returncode != 0:
            raise TerraformError(
                f"terraform {' '.join(args)} exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout[-8000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
            )
        return result

    def write_vars(self, values: dict[str, Any], name: str = "test.auto.tfvars.json") -> None:
        """Variables for every later plan/apply/destroy in this directory."""
        (self.workdir / name).write_text(json.dumps(values, indent=2))

    def init(self) -> None:
        self.run("init", "-backend=false", "-input=false")

    def plan(self, *args: str, out: str = "test.tfplan") -> dict[str, Any]:
        """Plan to a file and return ``terraform show -json`` of it."""
        self.run("plan", "-input=false", f"-out={out}", *args)
        return self.show_json(out)

    def show_json(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.run("show", "-json", *args).stdout)
        return data

    def outputs(self) -> dict[str, Any]:
        raw = json.loads(self.run("output", "-json").stdout)
        return {name: entry["value"] for name, entry in raw.items()}


def state_resources(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``address -> values`` of every resource and data source in a state JSON."""
    found: dict[str, dict[str, Any]] = {}

    def walk(module: dict[str, Any]) -> None:
        for resource in module.get("resources", []):
            found[resource["address"]] = resource["values"]
        for child in module.get("child_modules", []):
            walk(child)

    walk(state.get("values", {}).get("root_module", {}))
    return found


def planned_changes(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``address -> change`` for every resource change in a plan JSON."""
    return {change["address"]: change["change"] for change in plan.get("resource_changes", [])}


def policy_statements(policy_json: str) -> list[dict[str, Any]]:
    """Statements of an IAM policy document, with Action/Resource always lists."""
    statements = json.loads(policy_json)["Statement"]
    if isinstance(statements, dict):
        statements = [statements]
    normalised = []
    for original in statements:
        statement = dict(original)
        for key in ("Action", "Resource"):
            value = statement.get(key, [])
            statement[key] = [value] if isinstance(value, str) else list(value)
        normalised.append(statement)
    return normalised
