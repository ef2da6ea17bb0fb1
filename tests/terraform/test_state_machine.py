"""The state machine Terraform renders, executed by moto's Step Functions interpreter.

``terraform apply`` creates the whole stack on a moto server of this module's own
(``tests.support.sfn_runs.SfnMotoServer``) whose Step Functions executes definitions;
the tests start executions of the state machine exactly as Terraform created it and
read what each Lambda invocation was sent and answered from the execution history.
Two kinds of invocation answers:

* the real handler, run by the server with the environment Terraform gave the function
  against a KV emulator namespace, every invocation pausing after one 10-key listing
  page (as one nearing its deadline does): real cursors, the real lease;
* documents queued by the test, built by the function's own reply code
  (``kv_sync.replies``), for the failures a real run cannot be made to produce on cue.

moto 5.2.5 interprets everything the definition uses: Pass with Parameters and the
intrinsics JsonMerge, MathAdd, Array and ArrayGetItem; Choice with And, Or,
IsPresent, IsString, BooleanEquals, NumericLessThan; the lambda:invoke Task with
ResultSelector, ResultPath, Retry (JitterStrategy) and Catch; Wait with SecondsPath;
Succeed with OutputPath; Fail with ErrorPath and CausePath; TimeoutSeconds. Its gaps:
no ``ValidateStateMachineDefinition`` or ``ListStateMachineVersions`` (the provider
needs both; ``tests.support.moto_sfn`` adds them); its Lambda backend cannot throttle
or report a function error (the server stands in for both, see ``moto_sfn``); Wait
states and retry intervals sleep for real (hence 1-second retry delays here); the
logging and tracing configuration is stored but nothing is delivered to CloudWatch
Logs or X-Ray; EventBridge never fires a schedule, so the schedule's target, role
and input are checked, not run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from kv_sync import cursor, replies
from kv_sync.errors import (
    ApiError,
    AuthError,
    ConflictError,
    DeletionRefusedError,
    NetworkError,
    RateLimitedError,
    SyncError,
)
from kv_sync.model import RunResult, SyncRequest, SyncStats
from local.kv_emulator import KVEmulator
from tests.support import sfn_runs
from tests.support.sfn_runs import THROTTLE, Execution, SfnMotoServer, function_error
from tests.support.stack import NAMESPACE_TITLE, TOKEN, Stack
from tests.terraform.tfharness import (
    Terraform,
    policy_statements,
    provider_mirror,
    state_resources,
    stub_package,
    terraform_binary,
    write_cli_config,
)

pytestmark = pytest.mark.terraform

FUNCTION = "kvsync-sfn"
TABLE = f"{FUNCTION}-records"
SECRET = f"{FUNCTION}/cloudflare"
PREFIX = "flags/"
KEYS = {f"{PREFIX}{index:02}": f"value {index}".encode() for index in range(25)}
PAGE = 10  # the smallest listing page Cloudflare serves: 25 keys take 3 invocations
RETRY_DELAYS = [1, 1]  # seconds; moto's Wait state really waits
SCHEDULE = {"prefix": PREFIX, "delete_missing": True}


@dataclass
class Applied:
    """The stack as applied on the module's moto server."""

    tf: Terraform
    server: SfnMotoServer
    state: dict[str, Any]
    outputs: dict[str, Any]
    stack: Stack
    destroyed: bool = False

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.server.url, region_name="us-east-1")

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return state_resources(self.state)

    def run(self, selector: Any) -> Execution:
        machine = self.outputs["state_machine_arn"]
        return sfn_runs.run(self.client("stepfunctions"), machine, selector)

    def destroy(self) -> None:
        if not self.destroyed:
            self.tf.run("destroy", "-auto-approve", "-input=false", "-refresh=false")
            self.destroyed = True


@pytest.fixture(scope="module")
def emulator() -> Iterator[KVEmulator]:
    with KVEmulator(tokens=[TOKEN]) as started:
        namespace = started.create_namespace(NAMESPACE_TITLE)
        started.test_namespace_id = namespace  # type: ignore[attr-defined]
        for key, value in KEYS.items():
            started.put(namespace, key, value)
        yield started


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory, emulator: KVEmulator) -> Iterator[Applied]:
    """terraform/ applied on a moto server that executes state machines; destroyed last."""
    terraform_binary()
    root = tmp_path_factory.mktemp("sfn")
    cli_config = write_cli_config(root, provider_mirror())
    # Terraform accepts only an https API base; the server gives the function the
    # emulator's instead, over the rest of the environment Terraform set.
    api = {"CLOUDFLARE_API_BASE_URL": emulator.base_url}
    with SfnMotoServer(list_page_size=PAGE, one_page_per_invocation=True, env=api) as server:
        tf = Terraform.prepare(root / "stack", cli_config, moto_url=server.url)
        tf.write_vars(
            {
                "lambda_function_name": FUNCTION,
                "dynamodb_table_name": TABLE,
                "cloudflare_secret_name": SECRET,
                "lambda_package_path": str(stub_package(root / "lambda_function.zip")),
                "lambda_architecture": "x86_64",
                "lambda_timeout": 60,
                "duration_threshold_ms": 30000,
                "secret_recovery_window_days": 0,
                "retry_max_attempts": 1,
                "log_retention_days": 7,
                "sync_schedule_expression": "rate(1 hour)",
                "sync_schedule_input": SCHEDULE,
                "state_machine_timeout_seconds": 600,
                "state_machine_retry_delays_seconds": RETRY_DELAYS,
            }
        )
        tf.init()
        tf.run("apply", "-input=false", "-auto-approve")
        stack = Stack(
            emulator,
            emulator.test_namespace_id,  # type: ignore[attr-defined]
            TABLE,
            SECRET,
            server.url,
            boto3.client("dynamodb", endpoint_url=server.url, region_name="us-east-1"),
            boto3.client("secretsmanager", endpoint_url=server.url, region_name="us-east-1"),
        )
        stack.put_secret(TOKEN)  # what the operator does after the apply
        built = Applied(tf, server, tf.show_json(), tf.outputs(), stack)
        try:
            yield built
        finally:
            built.destroy()


def reply(
    next_cursor: str | None,
    *,
    complete: bool = False,
    error: SyncError | None = None,
) -> dict[str, Any]:
    """The document the function answers a prefix run's invocation with."""
    result = RunResult(complete=complete, next_cursor=next_cursor, error=error)
    request = SyncRequest(prefix=PREFIX)
    _, document = replies.multi_key(request, result, SyncStats(), 12.5, {})
    return document


def run_id(next_cursor: str) -> str:
    """The run a cursor of the prefix run belongs to (the one holding the lease)."""
    _, state = cursor.decode(SyncRequest(prefix=PREFIX, cursor=next_cursor))
    assert state is not None
    return state.run_id


# --------------------------------------------------------------------------------------
# What Terraform created
# --------------------------------------------------------------------------------------


def test_the_state_machine_is_standard_logged_traced_and_holds_the_rendered_definition(
    applied: Applied,
):
    machine = applied.resources["aws_sfn_state_machine.sync"]
    log_group = applied.resources["aws_cloudwatch_log_group.state_machine"]

    described = applied.client("stepfunctions").describe_state_machine(
        stateMachineArn=applied.outputs["state_machine_arn"]
    )

    assert described["name"] == applied.outputs["state_machine_name"] == f"{FUNCTION}-multi-key"
    assert described["type"] == "STANDARD"
    assert described["definition"] == machine["definition"]
    assert described["roleArn"] == applied.resources["aws_iam_role.state_machine"]["arn"]
    assert described["tracingConfiguration"] == {"enabled": True}
    logging = described["loggingConfiguration"]
    assert (logging["level"], logging["includeExecutionData"]) == ("ALL", True)
    destination = logging["destinations"][0]["cloudWatchLogsLogGroup"]["logGroupArn"]
    assert destination == f"{log_group['arn']}:*"
    assert log_group["retention_in_days"] == 7
    definition = json.loads(described["definition"])
    assert definition["TimeoutSeconds"] == 600


def test_the_state_machine_may_invoke_only_the_function_and_the_schedule_only_start_it(
    applied: Applied,
):
    iam = applied.client("iam")
    function_arn = applied.outputs["lambda_function_arn"]
    machine_arn = applied.outputs["state_machine_arn"]

    machine_role = applied.resources["aws_iam_role.state_machine"]["name"]
    machine_policy = iam.get_role_policy(RoleName=machine_role, PolicyName=f"{FUNCTION}-sfn-policy")
    schedule_role = applied.resources["aws_iam_role.schedule[0]"]["name"]
    schedule_policy = iam.get_role_policy(
        RoleName=schedule_role, PolicyName=f"{FUNCTION}-evb-policy"
    )
    target = applied.client("events").list_targets_by_rule(Rule=f"{FUNCTION}-schedule")["Targets"]

    grants = policy_statements(json.dumps(machine_policy["PolicyDocument"]))
    lambda_grants = [s for s in grants if any(a.startswith("lambda:") for a in s["Action"])]
    assert [(s["Action"], s["Resource"]) for s in lambda_grants] == [
        (["lambda:InvokeFunction"], [function_arn])
    ]
    assert all(
        action.startswith(("logs:", "xray:"))
        for statement in grants
        if statement not in lambda_grants
        for action in statement["Action"]
    )
    starts = policy_statements(json.dumps(schedule_policy["PolicyDocument"]))
    assert [(s["Action"], s["Resource"]) for s in starts] == [
        (["states:StartExecution"], [machine_arn])
    ]
    # A multi-key schedule starts an execution with the selector itself as input.
    assert [(t["Arn"], t["RoleArn"]) for t in target] == [
        (machine_arn, applied.resources["aws_iam_role.schedule[0]"]["arn"])
    ]
    assert (
        json.loads(target[0]["Input"]) == SCHEDULE == json.loads(applied.outputs["schedule_input"])
    )


def test_failed_and_timed_out_executions_alarm_on_the_topic_and_show_on_the_dashboard(
    applied: Applied,
):
    machine_arn = applied.outputs["state_machine_arn"]

    alarms = applied.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{FUNCTION}-executions")
    dashboard = applied.client("cloudwatch").get_dashboard(DashboardName=FUNCTION)

    assert {
        (a["MetricName"], a["Namespace"], a["Threshold"], tuple(a["AlarmActions"]))
        for a in alarms["MetricAlarms"]
    } == {
        (metric, "AWS/States", 1.0, (applied.outputs["sns_topic_arn"],))
        for metric in ("ExecutionsFailed", "ExecutionsTimedOut")
    }
    assert all(
        a["Dimensions"] == [{"Name": "StateMachineArn", "Value": machine_arn}]
        for a in alarms["MetricAlarms"]
    )
    widgets = json.loads(dashboard["DashboardBody"])["widgets"]
    charted = {
        tuple(metric[:4])
        for widget in widgets
        for metric in widget["properties"].get("metrics", [])
        if metric[0] == "AWS/States"
    }
    assert {m for _, m, _, arn in charted if arn == machine_arn} >= {
        "ExecutionsStarted",
        "ExecutionsSucceeded",
        "ExecutionsFailed",
        "ExecutionsTimedOut",
    }


# --------------------------------------------------------------------------------------
# Runs with the real function
# --------------------------------------------------------------------------------------


def test_a_run_longer_than_one_invocation_passes_each_cursor_on_and_completes(
    applied: Applied,
):
    # GIVEN 25 keys under the prefix, and a function that answers one 10-key page per
    # invocation
    # WHEN an execution runs the prefix selector
    execution = applied.run({"prefix": PREFIX})

    # THEN it takes three invocations, each sent the cursor the previous one answered
    assert execution.status == "SUCCEEDED", execution
    assert len(execution.payloads) == 3
    answered = [document["data"]["next_cursor"] for document in execution.replies]
    assert answered[0] and answered[1] and answered[2] is None
    assert execution.cursors == [None, answered[0], answered[1]]
    assert all(payload["prefix"] == PREFIX for payload in execution.payloads)
    # one run throughout: both cursors carry the id the lease is held for
    assert run_id(answered[0]) == run_id(answered[1])
    # AND the output is the last document; the table mirrors KV; the lease is released
    assert execution.output == execution.replies[-1]
    assert execution.output["data"]["complete"] is True
    assert [d["statistics"]["keys_listed"] for d in execution.replies] == [10, 10, 5]
    assert applied.stack.values() == KEYS
    assert applied.stack.lease() is None


def test_a_run_on_a_leased_namespace_fails_fast_with_conflict(applied: Applied):
    # GIVEN another run holding the namespace's lease
    lease = {
        "pk": {"S": f"NAMESPACE#{applied.stack.namespace_id}"},
        "sk": {"S": "#LEASE"},
        "run_id": {"S": "another-run"},
        "started_at": {"S": "2026-01-01T00:00:00.000000Z"},
        "selector": {"S": '{"all": true}'},
        "expires_at": {"N": str(int(time.time()) + 600)},
    }
    applied.stack.dynamodb.put_item(TableName=TABLE, Item=lease)
    try:
        # WHEN an execution starts on the same namespace
        execution = applied.run({"all": True})
    finally:
        applied.stack.dynamodb.delete_item(TableName=TABLE, Key={k: lease[k] for k in ("pk", "sk")})

    # THEN it fails at the first invocation with CONFLICT, without waiting or retrying
    assert execution.status == "FAILED"
    assert execution.error == "CONFLICT"
    assert execution.cause is not None
    assert execution.cause.startswith("Another multi-key run has been syncing namespace")
    assert len(execution.payloads) == 1
    assert "Backoff" not in execution.states


def test_an_event_the_function_rejects_fails_with_its_validation_error(applied: Applied):
    execution = applied.run({"all": True, "colour": "blue"})

    assert execution.status == "FAILED"
    assert execution.error == "VALIDATION_ERROR"
    assert execution.cause is not None
    assert "Unknown field(s) 'colour'" in execution.cause
    assert len(execution.payloads) == 1


# --------------------------------------------------------------------------------------
# Failures, with queued replies
# --------------------------------------------------------------------------------------


def test_a_key_name_input_fails_without_invoking_the_function(applied: Applied):
    execution = applied.run({"key_name": "classic-domain"})

    assert (execution.status, execution.error) == ("FAILED", "VALIDATION_ERROR")
    assert execution.cause is not None
    assert "key_names, prefix or all" in execution.cause
    assert execution.payloads == []


def test_a_retryable_error_is_retried_from_its_cursor_after_a_backoff(applied: Applied):
    # GIVEN a second invocation that stops with RATE_LIMITED, having moved the cursor on
    limited = RateLimitedError("Cloudflare answered 429", retry_after=30)
    applied.server.queue_replies(
        reply("c1"), reply("c1-after-page", error=limited), reply(None, complete=True)
    )

    execution = applied.run({"prefix": PREFIX})

    # THEN the retry waits, then resumes from the cursor the failed invocation answered
    assert execution.status == "SUCCEEDED", execution
    assert execution.cursors == [None, "c1", "c1-after-page"]
    assert execution.states.count("Backoff") == 1


def test_retries_end_after_the_last_delay_with_the_error_type_and_message(applied: Applied):
    failures = [reply("c1", error=NetworkError("Connection reset by Cloudflare"))] * 3
    applied.server.queue_replies(*failures)

    execution = applied.run({"prefix": PREFIX})

    assert (execution.status, execution.error) == ("FAILED", "NETWORK_ERROR")
    assert execution.cause == "Connection reset by Cloudflare"
    assert len(execution.payloads) == 1 + len(RETRY_DELAYS)
    assert execution.states.count("Backoff") == len(RETRY_DELAYS)


@pytest.mark.parametrize(
    "error",
    [
        DeletionRefusedError("Refused to delete: it would delete 9 of 10 stored records"),
        ApiError("Cloudflare answered success: false (code 10001)", is_retryable=False),
        AuthError("Cloudflare rejected the API token"),
    ],
    ids=lambda error: error.type,
)
def test_a_non_retryable_error_fails_at_once_with_its_type_and_message(
    applied: Applied, error: SyncError
):
    applied.server.queue_replies(reply("c1"), reply("c1", error=error))

    execution = applied.run({"prefix": PREFIX})

    assert (execution.status, execution.error, execution.cause) == (
        "FAILED",
        error.type,
        error.message,
    )
    assert len(execution.payloads) == 2
    assert "Backoff" not in execution.states


def test_conflict_is_not_retried_although_the_document_calls_it_retryable(applied: Applied):
    conflict = ConflictError("Another multi-key run has been syncing namespace ns since ...")
    assert conflict.is_retryable
    applied.server.queue_replies(reply(None, error=conflict))

    execution = applied.run({"prefix": PREFIX})

    assert (execution.status, execution.error) == ("FAILED", "CONFLICT")
    assert len(execution.payloads) == 1


def test_lambda_throttles_are_retried_by_the_task(applied: Applied):
    applied.server.queue_replies(THROTTLE, reply(None, complete=True))

    execution = applied.run({"prefix": PREFIX})

    assert execution.status == "SUCCEEDED", execution
    assert execution.task_errors == ["Lambda.TooManyRequestsException"]
    assert len(execution.payloads) == 2


def test_a_function_error_ends_the_execution_with_lambdas_error(applied: Applied):
    applied.server.queue_replies(function_error("Sandbox.Timedout", "Task timed out"))

    execution = applied.run({"prefix": PREFIX})

    assert (execution.status, execution.error) == ("FAILED", "Sandbox.Timedout")
    assert execution.cause is not None
    assert "Task timed out" in execution.cause
    assert execution.states[-1] == "InvocationFailed"


# --------------------------------------------------------------------------------------
# Last: destroy
# --------------------------------------------------------------------------------------


def test_destroy_removes_the_state_machine_and_its_roles(applied: Applied):
    roles = [
        applied.resources[r]["name"]
        for r in ("aws_iam_role.state_machine", "aws_iam_role.schedule[0]")
    ]

    applied.destroy()

    assert applied.client("stepfunctions").list_state_machines()["stateMachines"] == []
    existing = {role["RoleName"] for role in applied.client("iam").list_roles()["Roles"]}
    assert not existing & set(roles)
    logs = applied.client("logs").describe_log_groups(logGroupNamePrefix="/aws/vendedlogs/states/")
    assert logs["logGroups"] == []
