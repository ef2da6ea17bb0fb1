"""Env var contract without Terraform: what the code reads, what terraform/ sets.

The applied-stack test (test_terraform_stack.py) checks the same on real state;
this one runs everywhere, provider mirror or not.
"""

from __future__ import annotations

import ast
import re

from tests.terraform.tfharness import LAMBDA_DIR, TERRAFORM_DIR

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


def terraform_env_names() -> set[str]:
    """Keys of ``local.lambda_environment`` in terraform/main.tf."""
    text = (TERRAFORM_DIR / "main.tf").read_text()
    block = re.search(r"lambda_environment\s*=\s*\{(?P<body>.*?)\n  \}", text, re.DOTALL)
    assert block is not None, "local.lambda_environment not found in terraform/main.tf"
    return set(re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*=", block.group("body"), re.MULTILINE))


def names_read_by_the_code() -> set[str]:
    """Literal names in os.environ[...], os.environ.get(...) and os.getenv(...) calls."""
    found: set[str] = set()
    for path in sorted(LAMBDA_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            name: ast.expr | None = None
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                name = node.slice
            elif (
                isinstance(node, ast.Call)
                and node.args
                and ast.unparse(node.func) in {"os.environ.get", "os.getenv"}
            ):
                name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found.add(name.value)
    return found


def test_terraform_sets_every_env_var_in_config_and_no_other():
    import config

    assert terraform_env_names() == set(config.ENV_VARS) | POWERTOOLS_ENV


def test_config_env_vars_list_every_name_the_code_reads_directly():
    import config

    unlisted = names_read_by_the_code() - set(config.ENV_VARS) - POWERTOOLS_ENV - NOT_FOR_TERRAFORM

    assert not unlisted, f"read by lambda_function/ but not in config.ENV_VARS: {sorted(unlisted)}"
