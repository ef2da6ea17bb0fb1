"""moto server for Step Functions: the APIs Terraform needs that it lacks, and a server that runs executions.

moto 5.2.5 implements neither ``ValidateStateMachineDefinition`` (the AWS provider
validates a definition with it at plan time) nor ``ListStateMachineVersions`` (the
provider lists versions after every create and read). Both answer 500
``NotImplementedError``, which the provider retries until it gives up: ``terraform
plan`` or ``apply`` with an ``aws_sfn_state_machine`` never ends against plain moto.
``add_missing_sfn_actions`` adds both to moto's Step Functions responses: the
validation is answered by moto's own ASL static analyser (the code LocalStack
answers the same API with), so a definition moto cannot interpret fails the plan;
the versions are the ones moto keeps (none unless ``publish``).

``serve`` is the entry point of a moto server process (``tests.support.sfn_runs``
starts it) in which Step Functions executes definitions (moto's
``execute_state_machine``) and Lambda invocations are answered, in order, by:

1. the results queued through ``/moto-api/static/lambda-simple/response`` (moto's
   simple Lambda backend), where a queued JSON object holding ``CONTROL_KEY`` stands
   for what that backend cannot return: a throttle (``TooManyRequestsException``, as
   Lambda's service answers it) or a function error (``X-Amz-Function-Error``);
2. otherwise the real ``kv_sync.handler.lambda_handler``, run in the server process
   with the function's own environment (the one Terraform gave it) plus the knob
   ``env`` (e.g. the KV emulator's plain-http URL, which Terraform refuses), pointed at
   this server, with a context counting down from the function's timeout. A handler that
   raises is a function error whose ``errorType`` is the exception's class, as in Lambda.

These settings are process-wide in moto, so they never reach the session's shared
server (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

CONTROL_KEY = "__moto_sfn__"


def add_missing_sfn_actions() -> None:
    """Let moto server answer ``ValidateStateMachineDefinition`` and ``ListStateMachineVersions``.

    Idempotent; affects every moto server of this process.
    """
    from moto.core.responses import ActionResult
    from moto.stepfunctions.responses import StepFunctionResponse

    def validate_state_machine_definition(self: Any) -> Any:
        from moto.stepfunctions.parser.asl.static_analyser.static_analyser import (
            StaticAnalyser,
        )

        diagnostics = []
        try:
            StaticAnalyser().analyse(self._get_param("definition"))
        except Exception as exc:  # what the analyser rejects, as AWS's diagnostics
            diagnostics.append(
                {"severity": "ERROR", "code": "SCHEMA_VALIDATION_FAILED", "message": repr(exc)}
            )
        result = "FAIL" if diagnostics else "OK"
        return ActionResult({"result": result, "diagnostics": diagnostics, "truncated": False})

    def list_state_machine_versions(self: Any) -> Any:
        machine = self.stepfunction_backend.describe_state_machine(
            self._get_param("stateMachineArn")
        )
        versions = [
            {"stateMachineVersionArn": version.arn, "creationDate": version.creation_date}
            for _, version in sorted(machine.versions.items(), reverse=True)
        ]
        return ActionResult({"stateMachineVersions": versions})

    for action in (validate_state_machine_definition, list_state_machine_versions):
        if not hasattr(StepFunctionResponse, action.__name__):
            setattr(StepFunctionResponse, action.__name__, action)


def serve() -> None:
    """Entry point of the server process: print the URL, serve until stdin closes.

    ``sys.argv[1]`` is a JSON object of knobs: ``list_page_size`` (the function's
    listing page), ``one_page_per_invocation`` (every invocation pauses after its
    first page, as one nearing its deadline would) and ``env`` (set over the
    function's environment when the real handler runs).
    """
    from moto.core.config import default_user_config
    from moto.server import ThreadedMotoServer

    knobs = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    add_missing_sfn_actions()
    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    default_user_config["lambda"] = {"use_docker": False}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # Step Functions calls Lambda through this server's own endpoint (MOTO_PORT).
    os.environ["MOTO_PORT"] = str(port)
    _answer_invocations(url, knobs)
    print(url, flush=True)
    # The function's log lines must not fill a pipe nobody reads.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.stdin.read()  # the test closes stdin (or ends) when it is done
    server.stop()


def _answer_invocations(url: str, knobs: dict[str, Any]) -> None:
    from moto.awslambda.exceptions import LambdaClientError
    from moto.awslambda_simple.models import LambdaSimpleBackend

    from kv_sync import engine, pages

    if knobs.get("list_page_size"):
        pages.LIST_PAGE_SIZE = int(knobs["list_page_size"])
    if knobs.get("one_page_per_invocation"):
        engine.MIN_PAGE_SECONDS = float("inf")  # no second page ever fits
    one_container = threading.Lock()

    def invoke(
        self: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, out: Any
    ) -> bytes:
        if self.lambda_simple_results_queue:
            queued = self.lambda_simple_results_queue.pop(0)
            control = json.loads(queued).get(CONTROL_KEY) if CONTROL_KEY in queued else None
            if control is None:
                return str(queued).encode("utf-8")
            if control.get("throttle"):
                error = LambdaClientError("TooManyRequestsException", "Rate Exceeded.")
                error.code = 429
                raise error
            out["x-amz-function-error"] = "Unhandled"
            return json.dumps(control["function_error"]).encode("utf-8")
        function = self.get_function(function_name, qualifier)
        with one_container:
            env = {**function.environment_vars, **knobs.get("env", {}), "AWS_ENDPOINT_URL": url}
            return _run_handler(function, body, env, out)

    setattr(LambdaSimpleBackend, "invoke", invoke)  # noqa: B010 - replaces a method


def _run_handler(function: Any, body: Any, env: dict[str, str], out: dict[str, str]) -> bytes:
    """The real handler, as Lambda would run it for this function, with ``env``."""
    from kv_sync.handler import lambda_handler
    from local.lambda_context import LambdaContext

    os.environ.update(env)
    context = LambdaContext(
        timeout_ms=int(function.timeout) * 1000,
        function_name=function.function_name,
        invoked_function_arn=function.function_arn,
    )
    try:
        reply = lambda_handler(json.loads(body) if body else {}, context)
    except Exception as exc:  # what Lambda reports for an unhandled exception
        out["x-amz-function-error"] = "Unhandled"
        reply = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
    return json.dumps(reply).encode("utf-8")
