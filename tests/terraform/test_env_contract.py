"""Env var contract without Terraform: what the code reads, what terraform/ sets.

The applied-stack test (test_terraform_stack.py) checks the same on real state;
this one runs everywhere, provider mirror or not.
"""

from __future__ import annotations

import ast
import re

from kv_sync.settings import ENV_VARS
from tests.terraform.tfharness import PACKAGE_DIR, TERRAFORM_DIR

POWERTOOLS_ENV = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}
# Read by the code but set by the Lambda runtime or only by tests and local runs.
NOT_FOR_TERRAFORM = {
    "LAMBDA_TASK_ROOT",
    "POWERTOOLS_TRACE_DISABLED",
    "AWS_SAM_LOCAL",
    # requests' own CA bundle settings, read once by the Cloudflare session
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
}
# What an environment variable's name looks like: upper case, at least one underscore.
ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


def terraform_env_names() -> set[str]:
    """Keys of ``local.lambda_environment`` in terraform/main.tf."""
    text = (TERRAFORM_DIR / "main.tf").read_text()
    block = re.search(r"lambda_environment\s*=\s*\{(?P<body>.*?)\n  \}", text, re.DOTALL)
    assert block is not None, "local.lambda_environment not found in terraform/main.tf"
    return set(re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*=", block.group("body"), re.MULTILINE))


def names_read_by_the_code() -> set[str]:
    """Variable names the package reads, found in its source.

    ``os.environ[NAME]``, and every call whose first argument is a literal that
    looks like a variable name: ``os.environ.get(NAME)``, ``os.getenv(NAME)`` and
    any helper of the package's that wraps them. (``settings`` reads ENV_VARS
    itself, by looping over it.)
    """
    found: set[str] = set()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            name: ast.expr | None = None
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                name = node.slice
            elif isinstance(node, ast.Call) and node.args:
                name = node.args[0]
            if (
                isinstance(name, ast.Constant)
                and isinstance(name.value, str)
                and ENV_NAME.fullmatch(name.value)
            ):
                found.add(name.value)
    return found


def test_terraform_sets_every_env_var_in_settings_and_no_other():
    # GIVEN the variables kv_sync.settings declares and the Powertools ones
    # WHEN Terraform's function environment is read
    # THEN it sets exactly those
    assert terraform_env_names() == set(ENV_VARS) | POWERTOOLS_ENV


def test_settings_env_vars_list_every_name_the_code_reads():
    # GIVEN every variable name the package's source reads
    read = names_read_by_the_code()

    # THEN each is declared in ENV_VARS, or is a Powertools, runtime or test-only one
    unlisted = read - set(ENV_VARS) - POWERTOOLS_ENV - NOT_FOR_TERRAFORM
    assert not unlisted, f"read by kv_sync but not in settings.ENV_VARS: {sorted(unlisted)}"
