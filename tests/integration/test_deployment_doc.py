"""DEPLOYMENT.md, checked against the code, terraform/ and running services.

The document's ``sh`` blocks are run in order, as one operator's shell session,
by :class:`~tests.support.doc_shell.DocShell`. Each command is checked by a
handler here:

- ``aws ...``: parsed like the AWS CLI (global options, ``--option`` names from
  botocore's service model, JSON values, ``file://``), validated against the
  operation's input shape; ``lambda invoke`` runs the real handler with the
  payload, other reads and writes run against moto server;
- ``terraform -chdir=terraform ...``: subcommands and flags as the installed CLI
  lists them, ``-var`` names in variables.tf, ``output -raw`` names in
  outputs.tf, plan files git-ignored and applied only after being planned;
- ``curl --aws-sigv4``: run for real against a loopback Function URL that checks
  the signature and runs the handler; ``scripts/invoke_url.py`` and
  ``local.runner``: run in-process against the same services;
- ``./build_lambda.sh``: its arguments parsed by the real script (stopped before
  it builds anything); the rest (``cp``, ``rm``, ``jq``, ``make``...) checked
  for what they touch.

Static checks cover what no command exercises: the 15 sections of issue 7 in
order, links, Terraform variables and outputs named in prose and tables,
environment variables, the execution role's actions (and the DynamoDB calls the
text says the function makes), the handler Terraform deploys, alarms, metrics,
error types and the caller policy.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import jmespath  # type: ignore[import-untyped]
import pytest
from botocore import xform_name
from botocore.session import get_session
from botocore.validate import ParamValidator

from local.kv_emulator import KVEmulator
from local.lambda_context import LambdaContext
from tests.support import doc_shell
from tests.support.doc_shell import Command, DocShell
from tests.support.function import reset_function_state
from tests.support.iam import granted_dynamodb_operations
from tests.support.signed_function_url import SignedFunctionUrl
from tests.support.sigv4 import ACCESS_KEY, SECRET_KEY, SESSION_TOKEN
from tests.support.stack import fresh_container

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "DEPLOYMENT.md"
README = REPO / "README.md"
TERRAFORM = REPO / "terraform"
PACKAGE = REPO / "lambda_function" / "kv_sync"

FUNCTION_NAME = "cloudflare-data-sync"
REGION = "us-east-1"
OLD_TOKEN = "doc-token-old-7c1e"
NEW_TOKEN = "doc-token-new-9a4b"
NAMESPACE_TITLE = "kv-sync-doc"

ISSUE_SECTIONS = (
    "Prerequisites",
    "Build",
    "Configure",
    "Deploy",
    "Put the secret value",
    "Invoke",
    "Call the signed Function URL",
    "The caller's IAM policy for the URL",
    "Read results in DynamoDB",
    "Monitoring",
    "Token rotation",
    "Upgrading the function",
    "Scaling knobs",
    "Troubleshooting",
    "`terraform destroy`",
)

# AWS CLI options that are not operation parameters.
AWS_GLOBAL_WITH_VALUE = {
    "--region",
    "--profile",
    "--output",
    "--query",
    "--endpoint-url",
    "--cli-binary-format",
    "--cli-read-timeout",
    "--cli-connect-timeout",
    "--color",
}
AWS_GLOBAL_FLAGS = {"--no-cli-pager", "--debug", "--no-paginate", "--version"}
AWS_PAGINATION = {"--max-items", "--starting-token", "--page-size"}
# Operations the walk-through really performs against moto server (and, for
# lambda invoke, the real handler); every other AWS command is validated only.
EXECUTED = {
    ("secretsmanager", "put-secret-value"),
    ("secretsmanager", "list-secret-version-ids"),
    ("dynamodb", "get-item"),
    ("dynamodb", "query"),
    ("sqs", "receive-message"),
    ("sts", "get-caller-identity"),
    ("cloudwatch", "describe-alarms"),
    ("lambda", "invoke"),
    ("stepfunctions", "start-execution"),
    ("stepfunctions", "describe-execution"),
    ("stepfunctions", "get-execution-history"),
    ("stepfunctions", "stop-execution"),
}


# --------------------------------------------------------------------------- sources


@cache
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@cache
def terraform_sources() -> str:
    return "\n".join(path.read_text() for path in sorted(TERRAFORM.glob("*.tf")))


@cache
def terraform_variables() -> dict[str, str]:
    """Each variable's block text, by name."""
    text = terraform_sources()
    found: dict[str, str] = {}
    for match in re.finditer(r'^variable "([a-z0-9_]+)" \{', text, re.MULTILINE):
        end = text.find("\n}", match.end())
        found[match.group(1)] = text[match.start() : end]
    return found


@cache
def terraform_outputs() -> set[str]:
    return set(re.findall(r'^output "([a-z0-9_]+)" \{', terraform_sources(), re.MULTILINE))


@cache
def package_sources() -> str:
    """The source of every module of the function's package."""
    return "\n".join(path.read_text() for path in sorted(PACKAGE.rglob("*.py")))


def slugs(markdown: str) -> set[str]:
    return {heading.slug for heading in doc_shell.headings(markdown)}


def shell_blocks() -> list[doc_shell.Block]:
    return [b for b in doc_shell.fenced_blocks(doc()) if b.language in doc_shell.SHELL_LANGUAGES]


def section_number(title: str) -> int:
    match = re.match(r"(\d+)\. ", title)
    return int(match.group(1)) if match else 0


def git_ignored(path: str) -> bool:
    """Whether the repository's .gitignore ignores ``path`` (its simple patterns only)."""
    patterns = [
        line.strip()
        for line in (REPO / ".gitignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "negations are not handled here"
    parts = Path(path).parts
    for raw in patterns:
        directory, pattern = raw.endswith("/"), raw.rstrip("/")
        if "/" in pattern:
            if fnmatch.fnmatch(path, pattern.lstrip("/")):
                return True
            continue
        candidates = parts[:-1] if directory else parts
        if any(fnmatch.fnmatch(part, pattern) for part in candidates):
            return True
    return False


# --------------------------------------------------------------------------- AWS CLI


@dataclass
class AwsCall:
    """An ``aws`` command line read as the CLI reads it."""

    command: Command
    service: str
    operation: str  # as typed: put-secret-value
    api_name: str  # PutSecretValue ("" for CLI-only commands)
    params: dict[str, Any]
    global_options: dict[str, str]
    positional: list[str]
    executed: bool = False
    result: Any = None


def parse_aws(command: Command, files: dict[str, str]) -> AwsCall:
    """Parse an ``aws`` command like the CLI and validate it against the service model."""
    tokens = command.argv[1:]
    global_options: dict[str, str] = {}
    index = 0

    def take_global() -> bool:
        nonlocal index
        token = tokens[index]
        if token in AWS_GLOBAL_WITH_VALUE:
            global_options[token] = tokens[index + 1]
            index += 2
            return True
        if token in AWS_GLOBAL_FLAGS:
            global_options[token] = ""
            index += 1
            return True
        return False

    while index < len(tokens) and tokens[index].startswith("--"):
        assert take_global(), f"line {command.line}: {tokens[index]} before the service"
    if "--version" in global_options:
        return AwsCall(command, "", "--version", "", {}, global_options, [])
    assert len(tokens) >= index + 2, f"line {command.line}: aws needs a service and an operation"
    service, operation = tokens[index], tokens[index + 1]
    index += 2
    shape: Any = None
    operation_model: Any = None
    members: dict[str, str] = {}
    api_name = ""
    counts: dict[str, int] = {}
    if (service, operation) in CLI_ONLY:
        counts = CLI_ONLY[(service, operation)]
    else:
        model = get_session().get_service_model(service)
        operations = {xform_name(name, "-"): name for name in model.operation_names}
        assert operation in operations, f"line {command.line}: aws {service} has no {operation}"
        api_name = operations[operation]
        operation_model = model.operation_model(api_name)
        shape = operation_model.input_shape
        members = {f"--{xform_name(name, '-')}": name for name in (shape.members if shape else {})}
        for option, name in members.items():
            kind = shape.members[name].type_name
            counts[option] = 0 if kind == "boolean" else -1 if kind == "list" else 1
            if kind == "boolean":
                counts[f"--no-{option[2:]}"] = 0
        counts.update(dict.fromkeys(AWS_PAGINATION, 1))
    options: list[tuple[str, list[str]]] = []
    positional: list[str] = []
    while index < len(tokens):
        if take_global():
            continue
        token = tokens[index]
        index += 1
        if not token.startswith("--"):
            positional.append(token)
            continue
        assert token in counts, f"line {command.line}: aws {service} {operation} has no {token}"
        wanted = counts[token]
        values: list[str] = []
        while (
            index < len(tokens)
            and not tokens[index].startswith("--")
            and (wanted < 0 or len(values) < wanted)
        ):
            values.append(tokens[index])
            index += 1
        assert wanted < 0 or len(values) == wanted, f"line {command.line}: {token} {values}"
        options.append((token, values))
    if "--query" in global_options:
        jmespath.compile(global_options["--query"])
    if shape is None and operation_model is None:
        return _cli_only(command, service, operation, options, positional, global_options)

    params: dict[str, Any] = {}
    for option, values in options:
        if option in AWS_PAGINATION:
            continue
        negated = option.startswith("--no-") and f"--{option[5:]}" in members
        name = members[f"--{option[5:]}" if negated else option]
        params[name] = _cli_value(command, shape.members[name], values, negated, files)
    report = ParamValidator().validate(params, shape) if shape else None
    assert report is None or not report.has_errors(), (
        f"line {command.line}: {report.generate_report() if report else ''}"
    )
    if (service, operation) == ("lambda", "invoke"):
        assert len(positional) == 1, f"line {command.line}: lambda invoke needs one outfile"
    else:
        assert not positional, f"line {command.line}: unexpected arguments {positional}"
    if "--query" in global_options:
        _check_query_fields(command, global_options["--query"], operation_model.output_shape)
    return AwsCall(command, service, operation, api_name, params, global_options, positional)


# CLI commands that are no API operation, with how many values each option takes.
CLI_ONLY: dict[tuple[str, str], dict[str, int]] = {
    ("logs", "tail"): {
        "--follow": 0,
        "--since": 1,
        "--format": 1,
        "--filter-pattern": 1,
        "--log-stream-names": -1,
        "--log-stream-name-prefix": 1,
    },
    ("configure", "export-credentials"): {"--format": 1},
}


def _cli_only(
    command: Command,
    service: str,
    operation: str,
    options: list[tuple[str, list[str]]],
    rest: list[str],
    global_options: dict[str, str],
) -> AwsCall:
    """``aws logs tail`` and ``aws configure export-credentials``: CLI commands, no API."""
    params = dict(options)
    if (service, operation) == ("logs", "tail"):
        assert len(rest) == 1, f"line {command.line}: aws logs tail takes one log group"
        if "--format" in params:
            assert params["--format"][0] in {"short", "detailed", "json"}
        if "--since" in params:
            assert re.fullmatch(r"\d+[smhdw]", params["--since"][0])
    else:
        assert not rest
        assert params.get("--format", ["env"])[0] in {"env", "env-no-export", "process"}
    return AwsCall(command, service, operation, "", params, global_options, rest)


def _cli_value(
    command: Command, shape: Any, values: list[str], negated: bool, files: dict[str, str]
) -> Any:
    kind = shape.type_name
    if kind == "boolean":
        assert not values, f"line {command.line}: boolean options take no value"
        return not negated
    assert values, f"line {command.line}: an option needs a value"
    if kind == "list":
        if len(values) == 1 and values[0].startswith("["):
            return json.loads(values[0])
        return [_scalar(command, shape.member, value, files) for value in values]
    assert len(values) == 1, f"line {command.line}: one value expected, got {values}"
    if kind in {"structure", "map"}:
        assert values[0].lstrip().startswith("{"), (
            f"line {command.line}: give {shape.name} as JSON (shorthand is not checked)"
        )
        return json.loads(values[0])
    return _scalar(command, shape, values[0], files)


def _scalar(command: Command, shape: Any, value: str, files: dict[str, str]) -> Any:
    kind = shape.type_name
    if value.startswith(("file://", "fileb://")):
        name = value.split("://", 1)[1]
        assert name in files, f"line {command.line}: {name} was not written before"
        value = files[name]
    if kind in {"integer", "long"}:
        return int(value)
    if kind == "blob":
        return value.encode("utf-8")
    if kind == "string" and shape.enum:
        assert value in shape.enum, f"line {command.line}: {value} not in {shape.enum}"
    return value


def _check_query_fields(command: Command, query: str, output_shape: Any) -> None:
    """Top-level fields a ``--query`` names exist in the operation's output."""
    members = set(output_shape.members) if output_shape is not None else set()
    for name in re.findall(r"(?<![\w.])([A-Z][A-Za-z0-9]+)\b", query):
        assert name in members, f"line {command.line}: --query names {name}, not in the output"


# --------------------------------------------------------------------------- the walk-through


@dataclass
class Invoked:
    """One function invocation the document made, however it made it."""

    line: int
    section: str
    how: str  # "aws lambda invoke", "curl", "invoke_url.py", "local.runner"
    payload: Any
    document: Any
    status: int | None = None


@dataclass
class Walk:
    """Everything the document's commands did."""

    shell: DocShell
    emulator: KVEmulator
    namespace_id: str
    table: str
    secret: str
    url: SignedFunctionUrl
    queue_url: str
    state_machine_arn: str
    section: str = ""
    aws: list[AwsCall] = field(default_factory=list)
    terraform: list[list[str]] = field(default_factory=list)
    builds: list[list[str]] = field(default_factory=list)
    invoked: list[Invoked] = field(default_factory=list)
    curl_runs: list[list[str]] = field(default_factory=list)
    written: set[str] = field(default_factory=set)
    plans: set[str] = field(default_factory=set)
    rotation: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    # the function's own minimum time for a further page (the walk raises it)
    min_page_seconds: float = 0.0


@cache
def terraform_flags(subcommand: str) -> set[str] | None:
    """Flags ``terraform <subcommand> -help`` lists (None without the CLI)."""
    binary = shutil.which("terraform")
    if binary is None:
        return None
    flags: set[str] = set()
    for name in {"destroy": ("plan", "apply")}.get(subcommand, (subcommand,)):
        result = subprocess.run(
            [binary, *name.split(), "-help"], capture_output=True, text=True, check=False
        )
        flags |= set(re.findall(r"^\s+(-[a-z][a-z-]*)", result.stdout, re.MULTILINE))
    return flags


class Handlers:
    """The commands DEPLOYMENT.md may run, each checked (and, where it can be, run)."""

    def __init__(self, walk: Walk, moto_url: str) -> None:
        self.walk = walk
        self.moto_url = moto_url

    def table(self) -> dict[str, Callable[[Command], str]]:
        return {
            "aws": self.aws,
            "terraform": self.terraform,
            "./build_lambda.sh": self.build,
            "curl": self.curl,
            "python3": self.python,
            ".venv/bin/python": self.python,
            "make": self.make,
            "git": self.git,
            "cp": self.cp,
            "cat": self.cat,
            "rm": self.rm,
            "umask": self.umask,
            "jq": self.jq,
            "true": lambda command: "",  # $EDITOR
        }

    # aws -------------------------------------------------------------------------

    def aws(self, command: Command) -> str:
        call = parse_aws(command, self.walk.shell.files)
        self.walk.aws.append(call)
        if call.operation == "--version":
            return "aws-cli/2.22.0 Python/3.12.6 Linux/6.1 exe/x86_64\n"
        if (call.service, call.operation) == ("configure", "export-credentials"):
            return (
                f"export AWS_ACCESS_KEY_ID={ACCESS_KEY}\n"
                f"export AWS_SECRET_ACCESS_KEY={SECRET_KEY}\n"
                f"export AWS_SESSION_TOKEN={SESSION_TOKEN}\n"
            )
        if (call.service, call.operation) == ("logs", "tail"):
            assert call.positional == [f"/aws/lambda/{FUNCTION_NAME}"], call.positional
            return ""
        if (call.service, call.operation) not in EXECUTED:
            return ""
        call.executed = True
        if (call.service, call.operation) == ("lambda", "invoke"):
            return self._lambda_invoke(call)
        if call.service == "secretsmanager":
            assert call.params["SecretId"] == self.walk.secret, call.params
        if call.service == "dynamodb":
            assert call.params["TableName"] == self.walk.table, call.params
        client = boto3.client(call.service, endpoint_url=self.moto_url, region_name=REGION)
        call.result = getattr(client, xform_name(call.api_name))(**call.params)
        call.result.pop("ResponseMetadata", None)
        output = call.result
        if "--query" in call.global_options:
            output = jmespath.search(call.global_options["--query"], output)
        if call.global_options.get("--output") == "text" and isinstance(output, str):
            return output + "\n"  # a scalar, as the CLI prints it: no quotes
        return json.dumps(output, default=str) + "\n"

    def _lambda_invoke(self, call: AwsCall) -> str:
        from kv_sync import engine, events
        from kv_sync.handler import lambda_handler

        params = call.params
        assert params["FunctionName"] == FUNCTION_NAME
        if "Payload" in params:
            assert call.global_options.get("--cli-binary-format") == "raw-in-base64-out", (
                f"line {call.command.line}: AWS CLI v2 needs --cli-binary-format "
                "raw-in-base64-out for an inline JSON payload"
            )
        payload = json.loads(params.get("Payload", b"{}"))
        events.parse_event(payload, "default-key")  # a ValidationError fails the test
        asynchronous = params.get("InvocationType") == "Event"
        with pytest.MonkeyPatch.context() as patch:
            if asynchronous or not (payload == {"all": True} or "cursor" in payload):
                # Only the run the document continues with its next_cursor stops after a
                # page; every other one runs to its end, as in a small namespace, so that
                # no unfinished run keeps the namespace's lease from the next commands.
                patch.setattr(engine, "MIN_PAGE_SECONDS", self.walk.min_page_seconds)
            document = lambda_handler(payload, LambdaContext(timeout_ms=60_000))
        self.walk.invoked.append(
            Invoked(call.command.line, self.walk.section, "aws lambda invoke", payload, document)
        )
        outfile = call.positional[0]
        self.walk.shell.files[outfile] = "" if asynchronous else json.dumps(document)
        self.walk.written.add(outfile)
        status = 202 if asynchronous else 200
        return json.dumps({"StatusCode": status, "ExecutedVersion": "$LATEST"}) + "\n"

    # terraform -------------------------------------------------------------------

    def terraform(self, command: Command) -> str:
        argv = command.argv[1:]
        self.walk.terraform.append(argv)
        if argv == ["version"]:
            return "Terraform v1.11.4\non linux_amd64\n"
        assert argv[:1] == ["-chdir=terraform"], (
            f"line {command.line}: run Terraform from the root with -chdir=terraform"
        )
        words = argv[1:]
        subcommand = " ".join(words[:2]) if words[:1] == ["providers"] else words[0]
        rest = words[len(subcommand.split()) :]
        known = terraform_flags(subcommand)
        positional: list[str] = []
        index = 0
        while index < len(rest):
            token = rest[index]
            if not token.startswith("-"):
                positional.append(token)
                index += 1
                continue
            flag, _, value = token.partition("=")
            if known is not None:
                assert flag in known, f"line {command.line}: terraform {subcommand} {flag}?"
            if flag == "-var":
                if not value:
                    index += 1
                    value = rest[index]
                name = value.split("=", 1)[0]
                assert name in terraform_variables(), f"line {command.line}: no variable {name}"
            if flag == "-out":
                assert git_ignored(f"terraform/{value}"), f"{value} would not be git-ignored"
                self.walk.plans.add(value)
            index += 1
        if subcommand == "output":
            if not positional:
                return "".join(f"{name} = ...\n" for name in sorted(terraform_outputs()))
            (name,) = positional
            assert name in terraform_outputs(), f"line {command.line}: no output {name}"
            return self.output_value(name)
        if subcommand == "apply" and positional:
            assert positional[0] in self.walk.plans, (
                f"line {command.line}: apply {positional[0]} before any plan -out wrote it"
            )
        else:
            assert not positional, f"line {command.line}: unexpected {positional}"
        return ""

    def output_value(self, name: str) -> str:
        values = {
            "lambda_function_name": FUNCTION_NAME,
            "lambda_function_arn": f"arn:aws:lambda:{REGION}:123456789012:function:{FUNCTION_NAME}",
            "lambda_function_url": self.walk.url.url,
            "dynamodb_table_name": self.walk.table,
            "secrets_manager_secret_name": self.walk.secret,
            "lambda_log_group_name": f"/aws/lambda/{FUNCTION_NAME}",
            "failure_queue_url": self.walk.queue_url,
            "state_machine_arn": self.walk.state_machine_arn,
            "cloudwatch_dashboard_url": (
                f"https://{REGION}.console.aws.amazon.com/cloudwatch/home?region={REGION}"
                f"#dashboards:name={FUNCTION_NAME}"
            ),
        }
        return str(values.get(name, f"fake-{name}")) + "\n"

    # build, python, curl -----------------------------------------------------------

    def build(self, command: Command) -> str:
        """Let the real script parse the arguments; it stops before building."""
        self.walk.builds.append(command.argv[1:])
        missing = "/nonexistent/python-for-the-doc-test"
        result = subprocess.run(
            ["bash", str(REPO / "build_lambda.sh"), *command.argv[1:]],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHON": missing},
            check=False,
        )
        if "--help" in command.argv or "-h" in command.argv:
            assert result.returncode == 0 and "--arch" in result.stdout, result
        else:
            assert f"'{missing}' not found" in result.stderr, (
                f"line {command.line}: build_lambda.sh rejected its arguments: {result.stderr}"
            )
        return result.stdout

    def python(self, command: Command) -> str:
        args = command.argv[1:]
        if args == ["--version"]:
            return "Python 3.12.6\n"
        assert command.argv[0] == ".venv/bin/python", (
            f"line {command.line}: the client and the runner need the project's virtualenv"
        )
        out, err = io.StringIO(), io.StringIO()
        if args[:2] == ["-m", "local.runner"]:
            from local import runner

            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = runner.main(args[2:])
            documents = _documents(out.getvalue())
            config = runner.parse_args(args[2:])
            for document in documents:
                self.walk.invoked.append(
                    Invoked(
                        command.line,
                        self.walk.section,
                        "local.runner",
                        runner.build_invocations(config)[0].event,
                        document,
                    )
                )
            assert code == 0, f"line {command.line}: runner exited {code}: {err.getvalue()}"
            return out.getvalue()
        if args[:1] == ["scripts/invoke_url.py"]:
            from scripts import invoke_url

            parsed = invoke_url.build_parser().parse_args(args[1:])
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = invoke_url.main(args[1:])
            reply = self.walk.url.received[-1]
            (document,) = _documents(out.getvalue())
            self.walk.invoked.append(
                Invoked(
                    command.line,
                    self.walk.section,
                    "invoke_url.py",
                    invoke_url.build_body(parsed),
                    document,
                    reply.status,
                )
            )
            assert code == 0, f"line {command.line}: invoke_url.py exited {code}: {err.getvalue()}"
            return out.getvalue()
        raise AssertionError(f"line {command.line}: unexpected python command {args}")

    def curl(self, command: Command) -> str:
        args = command.argv[1:]
        if args == ["--version"]:
            return "curl 7.88.1\n"
        options = dict(itertools.pairwise(args))
        sigv4 = options.get("--aws-sigv4", "")
        assert re.fullmatch(r"aws:amz:[a-z]{2}(-gov)?-[a-z]+-\d:lambda", sigv4), sigv4
        assert options.get("--user") == f"{ACCESS_KEY}:{SECRET_KEY}"
        assert f"x-amz-security-token: {SESSION_TOKEN}" in args
        self.walk.curl_runs.append(args)
        if not curl_supports_sigv4():
            return ""
        result = subprocess.run(
            ["curl", "-sS", "--max-time", "60", "-w", "\n%{http_code}", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        body, _, status = result.stdout.rpartition("\n")
        data = options.get("--data")
        self.walk.invoked.append(
            Invoked(
                command.line,
                self.walk.section,
                "curl",
                json.loads(data) if data else {},
                json.loads(body) if body.startswith("{") else body,
                int(status or 0),
            )
        )
        return body

    # files and the rest ------------------------------------------------------------

    def make(self, command: Command) -> str:
        targets = re.findall(r"^([a-z-]+):", (REPO / "Makefile").read_text(), re.MULTILINE)
        for target in command.argv[1:]:
            assert target in targets, f"line {command.line}: no make target {target}"
        return ""

    def git(self, command: Command) -> str:
        assert command.argv[1:] in (["pull"], ["fetch"]), command.argv
        return ""

    def cp(self, command: Command) -> str:
        source, target = command.argv[1:]
        assert (REPO / source).is_file(), f"line {command.line}: {source} does not exist"
        assert git_ignored(target), f"line {command.line}: {target} would not be git-ignored"
        self.walk.shell.files[target] = (REPO / source).read_text()
        return ""

    def cat(self, command: Command) -> str:
        if command.stdin is not None:
            assert command.argv == ["cat"] and command.stdout is not None
            self.walk.written.add(command.stdout)
            return command.stdin
        (name,) = command.argv[1:]
        assert name in self.walk.shell.files, f"line {command.line}: {name} was not written"
        return self.walk.shell.files[name]

    def rm(self, command: Command) -> str:
        for name in command.argv[1:]:
            assert name in self.walk.shell.files, f"line {command.line}: rm {name}?"
            del self.walk.shell.files[name]
            self.walk.written.discard(name)
        return ""

    def umask(self, command: Command) -> str:
        assert command.argv[1:] == ["077"], command.argv
        return ""

    def jq(self, command: Command) -> str:
        args = command.argv[1:]
        raw = args[:1] == ["-r"]
        path, name = args[1:] if raw else args
        assert re.fullmatch(r"\.|(\.[a-z_]+)+", path), f"line {command.line}: jq {path}?"
        value: Any = json.loads(self.walk.shell.files[name])
        for part in filter(None, path.split(".")):
            value = value.get(part) if isinstance(value, dict) else None
        if raw and isinstance(value, str):
            return value + "\n"
        return json.dumps(value, indent=2) + "\n"


@cache
def curl_supports_sigv4() -> bool:
    if shutil.which("curl") is None:
        return False
    result = subprocess.run(["curl", "--help", "all"], capture_output=True, text=True, check=False)
    return "--aws-sigv4" in result.stdout


def _documents(text: str) -> list[Any]:
    decoder, documents, index = json.JSONDecoder(), [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        document, index = decoder.raw_decode(text, index)
        # The handler runs in this process: its EMF metric lines land on stdout too.
        if not (isinstance(document, dict) and "_aws" in document):
            documents.append(document)
    return documents


# Under flags/: one listing page (a prefix run completes in one invocation and frees
# the namespace's lease); with the three named keys, two pages for the whole namespace.
FLAG_KEYS = 9


def seed(emulator: KVEmulator, namespace_id: str) -> None:
    """The keys the document's examples name, and enough for an ``all`` run of two pages."""
    emulator.put(namespace_id, "redirect-all-users-to-essentials", '{"enabled": true}')
    emulator.put(namespace_id, "classic-domain", "classic.example.com")
    emulator.put(namespace_id, "maintenance-window", "sat 02:00-04:00", metadata={"tz": "UTC"})
    for index in range(FLAG_KEYS):
        emulator.put(namespace_id, f"flags/{index:03d}", json.dumps({"on": index % 2 == 0}))


@pytest.fixture(scope="module")
def walk(moto_server_url: str) -> Iterator[Walk]:
    """Run every shell block of DEPLOYMENT.md in order, as one session."""
    from kv_sync import engine, pages
    from kv_sync.handler import lambda_handler

    suffix = uuid.uuid4().hex[:8]
    table, secret = f"doc-kv-{suffix}", f"doc-cf-{suffix}"
    patch = pytest.MonkeyPatch()
    with KVEmulator(tokens=[OLD_TOKEN]) as emulator:
        namespace_id = emulator.create_namespace(NAMESPACE_TITLE)
        seed(emulator, namespace_id)
        for name, value in {
            "AWS_ENDPOINT_URL": moto_server_url,
            "DYNAMODB_TABLE_NAME": table,
            "SECRETS_MANAGER_SECRET_NAME": secret,
            "CLOUDFLARE_API_BASE_URL": emulator.base_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_SESSION_TOKEN": SESSION_TOKEN,
            "AWS_SECURITY_TOKEN": SESSION_TOKEN,
        }.items():
            patch.setenv(name, value)
        # Ten keys a listing page and one page an invocation (no invocation has the
        # time a second page needs), so the document's "continue with next_cursor"
        # commands meet a real, unfinished run. (An unfinished run keeps the namespace's
        # lease, so the runs nobody continues fit in one page; see seed.)
        min_page_seconds = engine.MIN_PAGE_SECONDS
        patch.setattr(pages, "LIST_PAGE_SIZE", 10)
        patch.setattr(engine, "MIN_PAGE_SECONDS", 3_600.0)
        fresh_container()
        from local.aws_setup import create_secret, create_table

        dynamodb = boto3.client("dynamodb", endpoint_url=moto_server_url, region_name=REGION)
        secrets = boto3.client("secretsmanager", endpoint_url=moto_server_url, region_name=REGION)
        sqs = boto3.client("sqs", endpoint_url=moto_server_url, region_name=REGION)
        create_table(dynamodb, table)
        create_secret(secrets, secret)
        queue_url = sqs.create_queue(QueueName=f"doc-failures-{suffix}")["QueueUrl"]
        # The state machine's commands run against moto's Step Functions: a machine of the
        # stack's name (tests/terraform/test_state_machine.py executes the real definition).
        sfn = boto3.client("stepfunctions", endpoint_url=moto_server_url, region_name=REGION)
        state_machine_arn = sfn.create_state_machine(
            name=f"{FUNCTION_NAME}-multi-key-{suffix}",
            definition=json.dumps(
                {"StartAt": "Sync", "States": {"Sync": {"Type": "Pass", "End": True}}}
            ),
            roleArn="arn:aws:iam::123456789012:role/doc-sfn-role",
        )["stateMachineArn"]

        def function_url(event: dict[str, Any]) -> dict[str, Any]:
            reply: dict[str, Any] = lambda_handler(event, LambdaContext(timeout_ms=60_000))
            return reply

        with SignedFunctionUrl(function_url) as url:
            shell = DocShell(
                handlers={},
                variables={
                    "EDITOR": "true",
                    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                    "AWS_SESSION_TOKEN": SESSION_TOKEN,
                },
                placeholders={
                    "token": OLD_TOKEN,
                    "new token": NEW_TOKEN,
                    "account id": emulator.account_id,
                    "namespace id": namespace_id,
                    "namespace name": NAMESPACE_TITLE,
                    "previous version id": str(uuid.uuid4()),
                    "current version id": str(uuid.uuid4()),
                },
            )
            result = Walk(
                shell, emulator, namespace_id, table, secret, url, queue_url, state_machine_arn
            )
            result.min_page_seconds = min_page_seconds
            shell.handlers.update(Handlers(result, moto_server_url).table())
            try:
                for block in shell_blocks():
                    result.section = block.section
                    if section_number(block.section) == 11 and "revoked" not in result.rotation:
                        # Worst case of a rotation: the old token is revoked before the
                        # warm function has re-read the secret.
                        emulator.set_tokens([NEW_TOKEN])
                        emulator.reset_stats()
                        result.rotation["revoked"] = True
                    shell.run(block.text, block.line + 1)
                    if section_number(block.section) == 11 and "requests" not in result.rotation:
                        result.rotation["requests"] = list(emulator.requests)
            except Exception as exc:  # reported by the tests, with the line that failed
                result.error = exc
            yield result
        patch.undo()
        reset_function_state()
        dynamodb.delete_table(TableName=table)
        secrets.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)


def completed(walk: Walk) -> Walk:
    if walk.error is not None:
        last = walk.shell.history[-1] if walk.shell.history else None
        where = f" at line {last.line}: {last.source}" if last else ""
        raise AssertionError(f"the DEPLOYMENT.md walk-through stopped{where}: {walk.error!r}")
    return walk


# --------------------------------------------------------------------------- structure


def test_the_fifteen_sections_of_issue_7_in_order() -> None:
    numbered = [
        h.text for h in doc_shell.headings(doc()) if h.level == 2 and re.match(r"\d+\. ", h.text)
    ]
    assert numbered == [f"{n}. {title}" for n, title in enumerate(ISSUE_SECTIONS, start=1)]
    others = [h.text for h in doc_shell.headings(doc()) if h.level == 2 and h.text not in numbered]
    assert others == []  # nothing between or after them at the same level


@pytest.mark.parametrize(
    ("section", "required"),
    [
        (
            "1.",
            ["Terraform", ">= 1.5", "AWS CLI", "v2", "curl", ">= 7.75", "Workers KV Storage Read"],
        ),
        ("2.", ["./build_lambda.sh", "--arch", "lambda_architecture"]),
        ("3.", ["terraform/terraform.tfvars.example", "terraform.tfvars"]),
        ("4.", ["init", "plan", "apply"]),
        ("5.", ["aws secretsmanager put-secret-value", "Workers KV Storage Read"]),
        (
            "6.",
            [
                "--cli-binary-format raw-in-base64-out --payload "
                '\'{"key_name":"classic-domain"}\' response.json',
                "key_names",
                "prefix",
                '"all": true',
                "next_cursor",
            ],
        ),
        ("7.", ["curl --aws-sigv4", "scripts/invoke_url.py"]),
        ("8.", ["lambda:InvokeFunctionUrl", "lambda:InvokeFunction", "October 2025"]),
        ("9.", ["aws dynamodb get-item", "NAMESPACE#", "KEY#"]),
        ("10.", ["cloudwatch_dashboard_url", "aws logs tail", "Alarms", "X-Ray"]),
        ("11.", ["put-secret-value", "401", "403", "SECRET_CACHE_SECONDS"]),
        ("12.", ["./build_lambda.sh", "apply", "source_code_hash"]),
        (
            "13.",
            [
                "reserved_concurrency",
                "lambda_memory_size",
                "lambda_timeout",
                "RETRY_MAX_ATTEMPTS",
                "API_TIMEOUT_SECONDS",
                "CLOUDFLARE_REQUESTS_PER_5_MINUTES",
                "sync_schedule_expression",
                "delete_missing",
            ],
        ),
        ("15.", ["recovery", "deletion_protection", "table and every record"]),
    ],
)
def test_each_section_covers_what_issue_7_asks(section: str, required: list[str]) -> None:
    text = doc_shell.section_text(doc(), section)
    for phrase in required:
        assert phrase in text, f"section {section} lacks {phrase!r}"


def test_links_resolve() -> None:
    own = slugs(doc())
    readme = slugs(README.read_text())
    for text, target in doc_shell.links(doc()):
        path, _, anchor = target.partition("#")
        if target.startswith(("http://", "https://")):
            continue
        if not path:
            assert anchor in own, f"[{text}]({target}): no such heading"
        elif path == "README.md":
            assert not anchor or anchor in readme, f"[{text}]({target}): not in README"
        else:
            assert (REPO / path).exists(), f"[{text}]({target})"
    readme_links = [t for _, t in doc_shell.links(README.read_text()) if t.startswith("DEPLOYMENT")]
    assert readme_links, "README links to DEPLOYMENT.md"
    for target in readme_links:
        anchor = target.partition("#")[2]
        assert not anchor or anchor in own, f"README links to missing {target}"


def test_every_shell_block_is_valid_bash() -> None:
    for block in shell_blocks():
        result = subprocess.run(
            ["bash", "-n"], input=block.text, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"block at line {block.line}: {result.stderr}"


# --------------------------------------------------------------------------- the walk-through


def test_every_command_runs(walk: Walk) -> None:
    completed(walk)
    names = {command.argv[0] for command in walk.shell.history}
    assert {"aws", "terraform", "curl", "./build_lambda.sh", ".venv/bin/python"} <= names


def test_every_invocation_is_accepted_and_succeeds(walk: Walk) -> None:
    completed(walk)
    expected = {"aws lambda invoke", "curl", "invoke_url.py", "local.runner"}
    if not curl_supports_sigv4():
        expected.discard("curl")  # checked, not sent: see the signed URL test
    assert {invoked.how for invoked in walk.invoked} == expected
    for invoked in walk.invoked:
        document = invoked.document
        assert isinstance(document, dict), (invoked.line, document)
        assert document.get("success") is True, (invoked.line, invoked.payload, document)
        if invoked.status is not None:
            assert invoked.status == 200, (invoked.line, invoked.status)


def test_the_documented_payloads(walk: Walk) -> None:
    completed(walk)
    payloads = [i.payload for i in walk.invoked if i.how == "aws lambda invoke"]
    assert {"key_name": "classic-domain"} in payloads
    assert {} in payloads
    assert any("key_names" in p for p in payloads)
    assert any(p.get("prefix") and p.get("delete_missing") is True for p in payloads)
    # The cursor example continues a real, unfinished run with its next_cursor.
    (continued,) = [i for i in walk.invoked if isinstance(i.payload.get("cursor"), str)]
    earlier = walk.invoked[walk.invoked.index(continued) - 1]
    assert earlier.payload == {"all": True}
    assert earlier.document["data"]["complete"] is False
    assert continued.payload["cursor"] == earlier.document["data"]["next_cursor"]
    # The local runner's --all --follow ran until complete, over several invocations.
    runner_documents = [i.document for i in walk.invoked if i.how == "local.runner"]
    assert len(runner_documents) >= 2
    assert runner_documents[-1]["data"]["complete"] is True


def test_aws_commands_match_the_service_models_and_run_where_they_can(walk: Walk) -> None:
    completed(walk)
    typed = {(call.service, call.operation) for call in walk.aws}
    assert {
        ("secretsmanager", "put-secret-value"),
        ("lambda", "invoke"),
        ("dynamodb", "get-item"),
        ("logs", "tail"),
    } <= typed
    executed = {(c.service, c.operation) for c in walk.aws if c.executed}
    assert executed == EXECUTED


def test_the_secret_is_put_as_the_function_reads_it(walk: Walk) -> None:
    from kv_sync import credentials

    completed(walk)
    puts = [c for c in walk.aws if c.operation == "put-secret-value"]
    assert len(puts) == 2  # first put, then the rotation
    first = credentials.parse_credentials(puts[0].params["SecretString"], "s")
    assert (first.api_token, first.namespace_id) == (OLD_TOKEN, walk.namespace_id)
    assert credentials.parse_credentials(puts[1].params["SecretString"], "s").api_token == (
        NEW_TOKEN
    )
    assert "cloudflare.json" not in walk.shell.files  # the doc deletes the file again


def test_the_secret_template_is_rejected_until_filled_in() -> None:
    from kv_sync import credentials
    from kv_sync.errors import ConfigurationError

    block = next(b for b in shell_blocks() if section_number(b.section) == 5)
    template = block.text.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    with pytest.raises(ConfigurationError, match="placeholder"):
        credentials.parse_credentials(template, "cloudflare-kv-credentials")


def test_get_item_and_query_find_the_synced_records(walk: Walk) -> None:
    completed(walk)
    get, sync_state = [c for c in walk.aws if c.operation == "get-item"]
    assert get.params["Key"] == {
        "pk": {"S": f"NAMESPACE#{walk.namespace_id}"},
        "sk": {"S": "KEY#classic-domain"},
    }
    # the freshness marker the document reads: the whole namespace's last complete run
    assert sync_state.params["Key"]["sk"] == {"S": "#SYNC#all"}
    run = sync_state.result["Item"]["last_complete"]["M"]
    assert run["complete"] == {"BOOL": True} and int(run["listed"]["N"]) > 0
    item = get.result["Item"]
    assert item["value"] == {"S": "classic.example.com"}
    assert item["namespace_name"] == {"S": NAMESPACE_TITLE}
    (query,) = [c for c in walk.aws if c.operation == "query"]
    keys = [item["sk"]["S"] for item in query.result["Items"]]
    assert keys and all(key.startswith("KEY#flags/") for key in keys)
    assert set(query.result["Items"][0]) == {"sk", "value_type", "synced_at"}


def test_the_signed_url_calls_verify_and_reach_the_function(walk: Walk) -> None:
    completed(walk)
    assert walk.url.rejections == []
    (block,) = [b for b in shell_blocks() if "--aws-sigv4" in b.text]
    assert '--aws-sigv4 "aws:amz:$REGION:lambda"' in block.text
    assert '--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY"' in block.text
    assert '-H "x-amz-security-token: $AWS_SESSION_TOKEN"' in block.text
    assert walk.curl_runs, "the curl command was checked"
    if not curl_supports_sigv4():
        pytest.skip("this curl has no --aws-sigv4: the command was checked, not sent")
    (curl,) = [i for i in walk.invoked if i.how == "curl"]
    assert curl.document["data"]["key_name"] == "classic-domain"
    clients = [i for i in walk.invoked if i.how == "invoke_url.py"]
    assert [i.payload for i in clients] == [
        {"key_name": "classic-domain"},
        {"key_names": ["classic-domain", "maintenance-window"]},
        {"prefix": "flags/", "delete_missing": True},
    ]


def test_token_rotation_survives_an_early_revocation(walk: Walk) -> None:
    completed(walk)
    requests = walk.rotation["requests"]
    rejected = [r for r in requests if r.status == 401]
    assert rejected, "the warm function first used the cached, revoked token"
    assert requests[-1].status == 200
    (verify,) = [i for i in walk.invoked if section_number(i.section) == 11]
    assert verify.document["success"] is True


def test_terraform_commands(walk: Walk) -> None:
    completed(walk)
    subcommands = {argv[1] for argv in walk.terraform if argv[:1] == ["-chdir=terraform"]}
    assert {"init", "plan", "apply", "output", "destroy", "providers"} <= subcommands
    assert walk.plans == {"kv-sync.tfplan", "destroy.tfplan"}


def test_build_lines_are_accepted_by_the_script(walk: Walk) -> None:
    completed(walk)
    assert [] in walk.builds
    assert ["--arch", "x86_64"] in walk.builds
    assert ["--help"] in walk.builds


def test_files_left_behind_are_git_ignored(walk: Walk) -> None:
    completed(walk)
    assert walk.written  # response.json at least
    for name in walk.written:
        assert git_ignored(name), f"{name} is left in the checkout and not git-ignored"


# --------------------------------------------------------------------------- names


def _code_spans() -> list[str]:
    return doc_shell.code_spans(doc())


def test_terraform_variables_named_in_the_tables_exist() -> None:
    variables = terraform_variables()
    for title in ("3.", "13."):
        for row in doc_shell.table_rows(doc_shell.section_text(doc(), title)):
            column = row[0] if title == "3." else row[1]
            for name in re.findall(r"`([a-z][a-z0-9_]*)`", column):
                assert name in variables, f"section {title} names variable {name!r}"


def test_every_snake_case_name_is_known() -> None:
    from kv_sync import credentials, events, settings

    readme = README.read_text()
    record_attributes = set(re.findall(r"^\| `([a-z_]+)`", readme, re.MULTILINE))
    response_fields = set(re.findall(r'"([a-z_]+)":', readme))
    known = (
        set(terraform_variables())
        | terraform_outputs()
        | set(events.ALLOWED_FIELDS)
        | set(credentials.REQUIRED_FIELDS)
        | record_attributes
        | response_fields
        | {name.lower() for name in settings.ENV_VARS}
        # log fields (Powertools' own, and the ones the function adds)
        | {"function_request_id", "error_type", "is_retryable", "selector", "key_name"}
        # Terraform resource attributes and provider arguments
        | {"hash_key", "range_key", "source_code_hash", "invoked_via_function_url"}
    )
    # Or a literal of the code, of terraform/ (x86_64) or of build_lambda.sh (wheel tags).
    sources = "\n".join(
        [package_sources(), terraform_sources(), (REPO / "build_lambda.sh").read_text()]
    )
    for span in _code_spans():
        for name in re.findall(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$", span):
            literal = re.search(rf"[\"' ]{re.escape(name)}[\"' ]", sources)
            assert name in known or literal, f"unknown name `{name}`"


def test_environment_variables_exist() -> None:
    from kv_sync import errors, settings
    from local import runner

    error_types = {cls.type for cls in vars(errors).values() if _is_error_class(cls)}
    known = (
        set(settings.ENV_VARS)
        | error_types
        | set(runner.CLOUDFLARE_ENV_VARS)
        | {"AWS_IAM", "TF_CLI_CONFIG_FILE"}
        | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
        # the variables build_lambda.sh reads
        | set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", (REPO / "build_lambda.sh").read_text()))
    )
    for span in _code_spans():
        for name in re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", span):
            assert name in known or name.startswith("POWERTOOLS_"), f"unknown variable {name}"


def test_scaling_knobs_feed_the_environment_variables_they_name() -> None:
    main_tf = (TERRAFORM / "main.tf").read_text()
    for row in doc_shell.table_rows(doc_shell.section_text(doc(), "13.")):
        pairs = re.findall(r"`([a-z_0-9]+)` \(`([A-Z_0-9]+)`\)", row[1])
        for variable, env in pairs:
            pattern = rf"{env}\s*=\s*[^\n]*var\.{variable}\b"
            assert re.search(pattern, main_tf), f"{env} is not set from var.{variable}"


def test_hcl_examples_use_real_variables_and_schedule_inputs_the_function_accepts() -> None:
    from kv_sync import events

    variables = terraform_variables()
    for block in doc_shell.fenced_blocks(doc()):
        if block.language != "hcl" or block.text.lstrip().startswith("terraform {"):
            continue
        for name, value in re.findall(r"^([a-z_0-9]+)\s*=\s*(.+)$", block.text, re.MULTILINE):
            assert name in variables, f"line {block.line}: no variable {name}"
            if name == "sync_schedule_input":
                event = _schedule_event(value, variables[name], block.line)
                request = events.parse_event(event, "default")  # as EventBridge sends it
                fields = event.get("detail", event)
                assert request.selector() == {
                    k: v for k, v in fields.items() if k != "delete_missing"
                }, f"line {block.line}"
                assert request.delete_missing == fields.get("delete_missing")


def _schedule_event(value: str, declared: str, line: int) -> dict[str, Any]:
    """The event the schedule sends for an HCL ``sync_schedule_input`` value, as Terraform
    would build it: checked against the variable's validation and type, and wrapped as
    ``schedule.tf`` wraps it."""
    fields = dict(re.findall(r"(\w+)\s*=\s*([^,}]+)", value))
    event: dict[str, Any] = {key: json.loads(raw.strip()) for key, raw in fields.items()}
    # The validation's list of allowed fields: the contains([...], x) naming key_name.
    lists = re.findall(r"contains\(\[([^\]]*)\],\s*\w+\)", declared)
    (allowed,) = [items for items in lists if '"key_name"' in items]
    assert set(event) <= set(re.findall(r'"(\w+)"', allowed)), (
        f"line {line}: the variable's validation refuses {sorted(event)}"
    )
    if re.search(r"^\s*type\s*=\s*map\(string\)", declared, re.MULTILINE):
        # Terraform would turn every value into a string first.
        event = {k: v if isinstance(v, str) else json.dumps(v) for k, v in event.items()}
    if re.search(r"detail\s*=\s*var\.sync_schedule_input", (TERRAFORM / "schedule.tf").read_text()):
        event = {"detail-type": "Scheduled Event", "source": "aws.events", "detail": event}
    return event


def test_the_execution_role_table_is_what_iam_tf_grants() -> None:
    text = doc_shell.section_text(doc(), "4.")
    table = text.split("The execution role may:", 1)[1].split("\n\n", 2)[1]
    documented = set(re.findall(r"`([a-z0-9-]+:[A-Za-z*]+)`", table))
    iam = (TERRAFORM / "iam.tf").read_text()
    granted = set(re.findall(r'"([a-z0-9-]+:[A-Za-z*]+)"', iam)) - {"sts:AssumeRole"}
    granted |= {f"dynamodb:{op}" for op in granted_dynamodb_operations()}
    assert documented == granted


def test_the_deploy_section_names_only_dynamodb_operations_the_role_grants() -> None:
    # GIVEN the DynamoDB operations section 4 says the function calls
    model = get_session().get_service_model("dynamodb")
    text = doc_shell.section_text(doc(), "4.")
    named = {
        span.removeprefix("dynamodb:")
        for span in re.findall(r"`([A-Za-z:]+)`", text)
        if span.removeprefix("dynamodb:") in model.operation_names
    }
    assert named, "section 4 names the DynamoDB calls the function makes"
    # THEN the execution role may call each of them
    assert named <= granted_dynamodb_operations(), named - granted_dynamodb_operations()


def test_the_function_is_deployed_with_the_handler_the_document_names() -> None:
    # GIVEN the handler section 4's table of created resources names
    text = doc_shell.section_text(doc(), "4.")
    (row,) = [r for r in doc_shell.table_rows(text) if r[0] == "Lambda function"]
    documented = re.search(r"handler `([\w.]+)`", row[2])
    assert documented is not None, row
    deployed = re.search(r'^\s*handler\s*=\s*"([\w.]+)"', terraform_sources(), re.MULTILINE)
    assert deployed is not None
    # THEN it is the one Terraform deploys, and that one exists in the package
    assert documented.group(1) == deployed.group(1)
    module, _, name = deployed.group(1).rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))


def test_the_alarm_table_is_what_monitoring_tf_creates() -> None:
    table = doc_shell.section_text(doc(), "10.").split("### Alarms", 1)[1]
    documented = set(re.findall(r"`<fn>-([a-z-]+)`", table.split("**The failure queue**")[0]))
    monitoring = (TERRAFORM / "monitoring.tf").read_text()
    # the state machine's alarms, one for_each over local.state_machine_alarms
    state_machine = (TERRAFORM / "stepfunctions.tf").read_text()
    executions = re.search(
        r"state_machine_alarms = \{\n(?P<body>.*?)\n  \}\n", state_machine, re.DOTALL
    )
    assert executions is not None
    created = set(re.findall(r"^    ([a-z-]+) = \{", executions["body"], re.M))
    created |= set(
        re.findall(r'alarm_name\s*=\s*"\$\{var\.lambda_function_name\}-([a-z-]+)"', monitoring)
    )
    # the DynamoDB alarms come from one for_each over local.dynamodb_alarms
    per_metric = re.search(r"dynamodb_alarms = \{\n(?P<body>.*?)\n  \}\n", monitoring, re.DOTALL)
    assert per_metric is not None
    created |= {
        f"dynamodb-{key}" for key in re.findall(r"^    ([a-z-]+) = \{", per_metric["body"], re.M)
    }
    assert 'alarm_name          = "${var.lambda_function_name}-dynamodb-${each.key}"' in monitoring
    # one alarm per critical error type, from one for_each over local.critical_errors
    critical = re.search(r"critical_errors = \{\n(?P<body>.*?)\n  \}\n", monitoring, re.DOTALL)
    assert critical is not None
    created |= set(re.findall(r"^    ([a-z-]+) = \{", critical["body"], re.M))
    assert 'alarm_name          = "${var.lambda_function_name}-${each.key}"' in monitoring
    assert documented == created


def test_documented_metrics_are_the_ones_the_code_emits() -> None:
    text = doc_shell.section_text(doc(), "10.")
    bullet = text.split("**Custom metrics**", 1)[1].split("\n\n", 1)[0]
    documented = {n for n in re.findall(r"`([A-Z][A-Za-z]+)`", bullet)}
    sources = package_sources()
    emitted = set(re.findall(r'count\("([A-Za-z]+)"', sources))
    emitted |= set(re.findall(r'single_metric\(\s*name="([A-Za-z]+)"', sources))
    if "capture_cold_start_metric=True" in sources:
        emitted.add("ColdStart")
    namespace = re.search(r'default\s*=\s*"(\w+)"', terraform_variables()["metrics_namespace"])
    assert namespace is not None
    assert documented - {"ErrorType", namespace.group(1)} == emitted


def _is_error_class(value: object) -> bool:
    from kv_sync import errors

    return isinstance(value, type) and issubclass(value, errors.SyncError)


def test_troubleshooting_covers_every_error_type_with_its_status() -> None:
    from kv_sync import errors

    classes = {cls.type: cls for cls in vars(errors).values() if _is_error_class(cls)}
    text = doc_shell.section_text(doc(), "14.")
    rows = {
        row[0].strip("`"): row
        for row in doc_shell.table_rows(text)
        if row[0].startswith("`") and row[0].strip("`") in classes
    }
    assert set(rows) == set(classes)
    for name, cls in classes.items():
        _, status, retryable, severity = rows[name]
        assert int(status) == cls.http_status, name
        assert severity == cls.severity, name
        expected = ("yes",) if cls.default_retryable else ("no", "when ")
        assert retryable.startswith(expected), (name, retryable)
        assert f"### {name}\n" in text, f"no troubleshooting entry for {name}"


def test_the_caller_policy_is_valid_iam_with_both_actions(moto_server_url: str) -> None:
    (block,) = [
        b for b in doc_shell.fenced_blocks(doc()) if b.language == "json" and "Statement" in b.text
    ]
    policy = json.loads(block.text)
    assert policy["Version"] == "2012-10-17"
    statements = policy["Statement"]
    assert {s["Action"] for s in statements} == {
        "lambda:InvokeFunctionUrl",
        "lambda:InvokeFunction",
    }
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert re.fullmatch(
            r"arn:aws:lambda:[a-z0-9-]+:\d{12}:function:" + FUNCTION_NAME, statement["Resource"]
        )
    url_statement = next(s for s in statements if s["Action"] == "lambda:InvokeFunctionUrl")
    assert url_statement["Condition"] == {"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}}
    invoke_statement = next(s for s in statements if s["Action"] == "lambda:InvokeFunction")
    assert invoke_statement["Condition"] == {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}
    iam = boto3.client("iam", endpoint_url=moto_server_url, region_name=REGION)
    created = iam.create_policy(
        PolicyName=f"doc-caller-{uuid.uuid4().hex[:8]}", PolicyDocument=block.text
    )
    assert created["Policy"]["Arn"]


def test_quoted_log_lines_and_messages_are_the_functions_own() -> None:
    prose: list[str] = []
    inside = False
    for line in doc().splitlines():
        if re.match(r"\s*```", line):
            inside = not inside
        elif not inside:
            prose.append(re.sub(r"`[^`]*`", "", line))
    quoted = {" ".join(q.split()) for q in re.findall(r'"([^"]+)"', "\n".join(prose))}
    sources = package_sources()
    messages = {q for q in quoted if " " in q}
    assert messages, "the document quotes log lines and messages"
    for message in messages:
        assert message in sources, f'"{message}" is not a message of the function'
