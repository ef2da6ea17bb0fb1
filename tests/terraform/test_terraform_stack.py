"""The whole stack applied by Terraform against moto server, then used and destroyed.

One module-scoped ``terraform apply`` serves every test here (about a minute on
moto); the last test destroys it and checks that nothing is left. Between the
two, the tests check the resources through the AWS APIs, run the real handler
in-process with the environment Terraform gave the function, and hold the code
and the infrastructure to the same contract: env var names, IAM actions,
metric names and dimensions. Tracing stays off in this process: the X-Ray SDK
patches botocore and requests globally, for good (the benchmarks and the zip
test run the function traced, in interpreters of their own).

moto 5.2.5 gaps met here: none for the resources this stack creates. The stack
has no X-Ray group or sampling rule (moto has neither API): the default sampling
rule suits a function invoked a few times an hour, so one would not earn its
place; tracing itself is the function's ``tracing_config``, checked below.
Configurations other than the applied one (customer-managed key, no schedule, no
URL principals, no self-invocation) are checked on ``terraform plan`` JSON; every
shape of the schedule's input on plans with the AWS provider mocked (``terraform
test``); bad schedule inputs on plans of ``variables.tf`` alone, which need no
provider.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import io
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from kv_sync import events
from kv_sync.errors import ValidationError
from kv_sync.model import Trigger
from kv_sync.settings import ENV_VARS
from local.lambda_context import LambdaContext
from tests.support.function import load_event
from tests.terraform.tfharness import (
    Terraform,
    planned_changes,
    policy_statements,
    provider_mirror,
    state_resources,
    stub_package,
    terraform_binary,
    terraform_version,
    write_cli_config,
)

pytestmark = pytest.mark.terraform

SUFFIX = uuid.uuid4().hex[:6]
FUNCTION = f"kvsync-{SUFFIX}"
TABLE = f"kvsync-{SUFFIX}-records"
SECRET = f"kvsync/{SUFFIX}/cloudflare"
SERVICE = "kv-sync-tf"
NAMESPACE = "KvSyncTf"
DEFAULT_KEY = "tf-default-key"
OTHER_KEY = "classic-domain"  # synced first by the whole-namespace run
URL_PRINCIPAL = "arn:aws:iam::111122223333:role/kv-sync-caller"
TOKEN = "tf-stack-token-5d1c"
SCHEDULE_INPUT = {"prefix": "flags/"}

VARIABLES: dict[str, Any] = {
    "environment": "test",
    "tags": {"owner": "kv-sync-tests"},
    "lambda_function_name": FUNCTION,
    "dynamodb_table_name": TABLE,
    "cloudflare_secret_name": SECRET,
    "lambda_architecture": "x86_64",
    "lambda_timeout": 60,
    "lambda_memory_size": 256,
    "reserved_concurrency": 5,
    "service_name": SERVICE,
    "metrics_namespace": NAMESPACE,
    "default_key_name": DEFAULT_KEY,
    "retry_max_attempts": 2,
    "api_timeout_seconds": 10,
    "record_ttl_days": 7,
    "secret_cache_seconds": 120,
    "log_retention_days": 7,
    "alert_email": "oncall@example.com",
    "duration_threshold_ms": 30000,
    "secret_recovery_window_days": 0,
    "sync_schedule_expression": "rate(1 hour)",
    "sync_schedule_input": SCHEDULE_INPUT,
    "function_url_allowed_principals": [URL_PRINCIPAL],
    "delete_missing": True,
    "self_invoke_continuation": True,
    "max_continuations": 20,
}

ALARMS = {
    "errors",
    "duration",
    "throttles",
    "auth-errors",
    "dynamodb-throttles",
    "dynamodb-system-errors",
    "failure-queue-depth",
}
POWERTOOLS_ENV = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}
# IAM actions of boto3 operations whose names differ from them.
IAM_ACTIONS = {("lambda", "Invoke"): "lambda:InvokeFunction"}
# What kv_sync/store.py calls: conditional puts (new and changed records), conditional
# updates (ttl extensions), conditional deletes (delete_missing), batched reads of named
# keys (a single key_name included), queries of listed ranges.
DYNAMODB_OPERATIONS = ("PutItem", "UpdateItem", "DeleteItem", "BatchGetItem", "Query")
# Keys seeded for the multi-key runs; GONE_KEY is deleted from KV between two of them.
BULK_KEYS = ("flags/alpha", "flags/beta", "flags/gamma")
GONE_KEY = "flags/beta"
# Seeded last, for a run longer than one invocation: more keys than a listing page.
LONG_PREFIX = "long/"
LONG_KEYS = tuple(f"{LONG_PREFIX}{index:02}" for index in range(12))
LONG_PAGE_SIZE = 10  # the smallest listing page Cloudflare serves


@dataclass
class Deployment:
    """The applied stack: its Terraform directory, plan, state and outputs."""

    tf: Terraform
    moto_url: str
    package_path: str
    plan: dict[str, Any]
    state: dict[str, Any]
    outputs: dict[str, Any]
    destroyed: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        return state_resources(self.state)

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.moto_url, region_name="us-east-1")

    @property
    def function_env(self) -> dict[str, str]:
        env: dict[str, str] = self.resources["aws_lambda_function.sync"]["environment"][0][
            "variables"
        ]
        return env

    def granted_actions(self) -> set[str]:
        policy = self.resources["aws_iam_role_policy.lambda"]["policy"]
        return {action for s in policy_statements(policy) for action in s["Action"]}

    def destroy(self) -> None:
        if not self.destroyed:
            # Fresh state: skip the refresh (the provider waits ~25 s reading an SQS queue).
            self.tf.run("destroy", "-auto-approve", "-input=false", "-refresh=false")
            self.destroyed = True


@pytest.fixture(scope="module")
def cli_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    terraform_binary()
    mirror = provider_mirror()
    return write_cli_config(tmp_path_factory.mktemp("tfcli"), mirror)


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, cli_config: Path, moto_server_url: str
) -> Iterator[Deployment]:
    """``terraform apply`` of terraform/ against moto server, destroyed at the end."""
    root = tmp_path_factory.mktemp("tfstack")
    tf = Terraform.prepare(root / "stack", cli_config, moto_url=moto_server_url)
    package = stub_package(root / "lambda_function.zip")
    tf.write_vars({**VARIABLES, "lambda_package_path": str(package)})
    tf.init()
    plan = tf.plan()
    tf.run("apply", "-input=false", "-auto-approve", "test.tfplan")
    built = Deployment(
        tf, moto_server_url, str(package), plan, tf.show_json(), tf.outputs(), timings=tf.timings
    )
    try:
        yield built
    finally:
        built.destroy()


# --------------------------------------------------------------------------------------
# What was created
# --------------------------------------------------------------------------------------


def test_table_has_the_key_schema_ttl_pitr_and_encryption(deployment: Deployment):
    dynamodb = deployment.client("dynamodb")

    table = dynamodb.describe_table(TableName=TABLE)["Table"]

    assert deployment.outputs["dynamodb_table_name"] == TABLE
    assert deployment.outputs["dynamodb_table_arn"] == table["TableArn"]
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {
        ("pk", "HASH"),
        ("sk", "RANGE"),
    }
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "S"),
    }
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["DeletionProtectionEnabled"] is False
    assert table["SSEDescription"]["Status"] == "ENABLED"
    ttl = dynamodb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == ("ttl", "ENABLED")
    backups = dynamodb.describe_continuous_backups(TableName=TABLE)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    tags = {
        t["Key"]: t["Value"]
        for t in dynamodb.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
    }
    assert tags == {"project": "kv-sync", "environment": "test", "owner": "kv-sync-tests"}


def test_secret_exists_without_a_value_in_aws_or_in_state(deployment: Deployment):
    secrets = deployment.client("secretsmanager")

    described = secrets.describe_secret(SecretId=SECRET)

    assert described["ARN"] == deployment.outputs["secrets_manager_secret_arn"]
    assert deployment.outputs["secrets_manager_secret_name"] == SECRET
    assert not described.get("VersionIdsToStages")
    with pytest.raises(ClientError) as missing:
        secrets.get_secret_value(SecretId=SECRET)
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert not any(a.startswith("aws_secretsmanager_secret_version") for a in deployment.resources)


def test_function_runs_the_handler_with_the_declared_settings(deployment: Deployment):
    config = deployment.client("lambda").get_function_configuration(FunctionName=FUNCTION)

    assert config["FunctionArn"] == deployment.outputs["lambda_function_arn"]
    assert config["Handler"] == "kv_sync.handler.lambda_handler"
    assert config["Runtime"] == "python3.12"
    assert config["Architectures"] == ["x86_64"]
    assert (config["Timeout"], config["MemorySize"]) == (60, 256)
    assert config["TracingConfig"]["Mode"] == "Active"
    assert config["Role"] == deployment.resources["aws_iam_role.lambda"]["arn"]
    assert config["Environment"]["Variables"] == {
        "DYNAMODB_TABLE_NAME": TABLE,
        "SECRETS_MANAGER_SECRET_NAME": SECRET,
        "SECRET_CACHE_SECONDS": "120",
        "CLOUDFLARE_API_BASE_URL": "https://api.cloudflare.com/client/v4",
        "DEFAULT_KEY_NAME": DEFAULT_KEY,
        "RETRY_MAX_ATTEMPTS": "2",
        "API_TIMEOUT_SECONDS": "10",
        "RECORD_TTL_DAYS": "7",
        "POWERTOOLS_SERVICE_NAME": SERVICE,
        "POWERTOOLS_METRICS_NAMESPACE": NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "CLOUDFLARE_REQUESTS_PER_5_MINUTES": "1200",
        "MAX_CONTINUATIONS": "20",
        "DELETE_MISSING": "true",
        "SELF_INVOKE_CONTINUATION": "true",
    }
    concurrency = deployment.client("lambda").get_function_concurrency(FunctionName=FUNCTION)
    assert concurrency["ReservedConcurrentExecutions"] == 5


def test_function_url_requires_iam_and_admits_only_the_listed_principal(deployment: Deployment):
    awslambda = deployment.client("lambda")

    url = awslambda.get_function_url_config(FunctionName=FUNCTION)
    policy = json.loads(awslambda.get_policy(FunctionName=FUNCTION)["Policy"])

    assert url["AuthType"] == "AWS_IAM"
    assert url["FunctionUrl"].rstrip("/") == deployment.outputs["lambda_function_url"].rstrip("/")
    by_action: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        principal = statement["Principal"]
        if isinstance(principal, dict):
            principal = principal.get("AWS", principal.get("Service"))
        assert principal != "*", statement
        by_action.setdefault(statement["Action"], set()).add(principal)
    # Both actions, as AWS requires of Function URL callers since October 2025.
    assert by_action["lambda:InvokeFunctionUrl"] == {URL_PRINCIPAL}
    assert by_action["lambda:InvokeFunction"] == {URL_PRINCIPAL, "events.amazonaws.com"}
    # moto 5.2.5 drops FunctionUrlAuthType from add_permission (no Condition comes
    # back), so the lambda:FunctionUrlAuthType condition is checked in the state.
    url_permissions = [
        values
        for address, values in deployment.resources.items()
        if address.startswith("aws_lambda_permission.function_url[")
    ]
    assert [p["function_url_auth_type"] for p in url_permissions] == ["AWS_IAM"]


def test_failed_async_invocations_go_to_an_encrypted_queue(deployment: Deployment):
    config = deployment.client("lambda").get_function_event_invoke_config(FunctionName=FUNCTION)
    queue_url = deployment.outputs["failure_queue_url"]
    attributes = deployment.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["All"]
    )["Attributes"]

    assert config["MaximumRetryAttempts"] == 2
    assert config["MaximumEventAgeInSeconds"] == 3600
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == attributes["QueueArn"]
    assert attributes["SqsManagedSseEnabled"] == "true"


def test_log_group_is_created_with_the_retention(deployment: Deployment):
    groups = deployment.client("logs").describe_log_groups(
        logGroupNamePrefix=f"/aws/lambda/{FUNCTION}"
    )

    [group] = groups["logGroups"]
    assert group["logGroupName"] == deployment.outputs["lambda_log_group_name"]
    assert group["retentionInDays"] == 7


def test_role_policy_grants_only_scoped_actions(deployment: Deployment):
    iam = deployment.client("iam")
    role = iam.get_role(RoleName=f"{FUNCTION}-role")["Role"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    document = iam.get_role_policy(RoleName=f"{FUNCTION}-role", PolicyName=f"{FUNCTION}-policy")[
        "PolicyDocument"
    ]
    statements = policy_statements(document if isinstance(document, str) else json.dumps(document))
    res = deployment.resources

    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "lambda.amazonaws.com"}]
    by_sid = {s["Sid"]: s for s in statements}
    assert set(by_sid) == {
        "WriteOwnLogs",
        "ReadCloudflareSecret",
        "ReadWriteKvRecords",
        "SendFailedAsyncEvents",
        "WriteTraces",
        "ContinueLongSyncs",
    }
    assert by_sid["WriteOwnLogs"]["Resource"] == [
        f"{res['aws_cloudwatch_log_group.lambda']['arn']}:log-stream:*"
    ]
    assert by_sid["ReadCloudflareSecret"]["Action"] == ["secretsmanager:GetSecretValue"]
    assert by_sid["ReadCloudflareSecret"]["Resource"] == [
        res["aws_secretsmanager_secret.cloudflare"]["arn"]
    ]
    assert sorted(by_sid["ReadWriteKvRecords"]["Action"]) == sorted(
        f"dynamodb:{op}" for op in DYNAMODB_OPERATIONS
    )
    assert by_sid["ReadWriteKvRecords"]["Resource"] == [res["aws_dynamodb_table.kv_data"]["arn"]]
    assert by_sid["SendFailedAsyncEvents"]["Resource"] == [res["aws_sqs_queue.failures"]["arn"]]
    # the ARN built from the name, account and Region is the function's own
    function_arn = res["aws_lambda_function.sync"]["arn"]
    assert by_sid["ContinueLongSyncs"]["Action"] == ["lambda:InvokeFunction"]
    assert sorted(by_sid["ContinueLongSyncs"]["Resource"]) == [function_arn, f"{function_arn}:*"]
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert not any("*" in action for action in statement["Action"]), statement
        if statement["Sid"] != "WriteTraces":  # X-Ray has no resource-level permissions
            assert "*" not in statement["Resource"], statement
    assert sorted(by_sid["WriteTraces"]["Action"]) == [
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
    ]


def test_alarms_watch_the_declared_metrics_and_notify_the_topic(deployment: Deployment):
    alarms = deployment.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{FUNCTION}-")[
        "MetricAlarms"
    ]
    by_name = {a["AlarmName"].removeprefix(f"{FUNCTION}-"): a for a in alarms}
    topic = deployment.outputs["sns_topic_arn"]

    assert set(by_name) == ALARMS
    for alarm in alarms:
        assert alarm["AlarmActions"] == [topic], alarm["AlarmName"]
        assert alarm["OKActions"] == [topic], alarm["AlarmName"]
        assert alarm["TreatMissingData"] == "notBreaching"

    def simple(name: str) -> tuple[str, str, dict[str, str], str, float]:
        a = by_name[name]
        dims = {d["Name"]: d["Value"] for d in a["Dimensions"]}
        return a["Namespace"], a["MetricName"], dims, a["Statistic"], a["Threshold"]

    fn = {"FunctionName": FUNCTION}
    assert simple("errors") == ("AWS/Lambda", "Errors", fn, "Sum", 5.0)
    assert simple("duration") == ("AWS/Lambda", "Duration", fn, "Maximum", 30000.0)
    assert simple("throttles") == ("AWS/Lambda", "Throttles", fn, "Sum", 1.0)
    assert simple("auth-errors") == (
        NAMESPACE,
        "SyncFailed",
        {"service": SERVICE, "ErrorType": "AUTH_ERROR"},
        "Sum",
        1.0,
    )
    queue_name = deployment.resources["aws_sqs_queue.failures"]["name"]
    assert simple("failure-queue-depth") == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        {"QueueName": queue_name},
        "Maximum",
        1.0,
    )
    for name, metric in (
        ("dynamodb-throttles", "ThrottledRequests"),
        ("dynamodb-system-errors", "SystemErrors"),
    ):
        queries = by_name[name]["Metrics"]
        [expression] = [q for q in queries if "Expression" in q]
        stats = [q["MetricStat"] for q in queries if "MetricStat" in q]
        assert expression.get("ReturnData", True) is True
        assert {s["Metric"]["MetricName"] for s in stats} == {metric}
        dimensions = [{d["Name"]: d["Value"] for d in s["Metric"]["Dimensions"]} for s in stats]
        assert sorted(dimensions, key=lambda d: d["Operation"]) == [
            {"TableName": TABLE, "Operation": op} for op in sorted(DYNAMODB_OPERATIONS)
        ]
        # the alarm sums every operation's metric
        metric_ids = {q["Id"] for q in queries if "MetricStat" in q}
        assert set(expression["Expression"].replace(" ", "").split("+")) == {
            f"FILL({i},0)" for i in metric_ids
        }


def test_alert_topic_is_encrypted_with_a_key_cloudwatch_may_use(deployment: Deployment):
    topic = deployment.client("sns").get_topic_attributes(
        TopicArn=deployment.outputs["sns_topic_arn"]
    )["Attributes"]
    key_arn = deployment.resources["aws_kms_key.alerts[0]"]["arn"]
    kms = deployment.client("kms")
    policy = json.loads(kms.get_key_policy(KeyId=key_arn, PolicyName="default")["Policy"])
    subscriptions = deployment.client("sns").list_subscriptions_by_topic(
        TopicArn=deployment.outputs["sns_topic_arn"]
    )["Subscriptions"]

    assert topic["KmsMasterKeyId"] == key_arn
    assert kms.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"] is True
    cloudwatch = [
        s for s in policy["Statement"] if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert len(cloudwatch) == 1
    assert sorted(cloudwatch[0]["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subscriptions] == [
        ("email", "oncall@example.com")
    ]


def test_dashboard_shows_lambda_custom_dynamodb_metrics_and_recent_errors(deployment: Deployment):
    body = json.loads(
        deployment.client("cloudwatch").get_dashboard(DashboardName=FUNCTION)["DashboardBody"]
    )
    widgets = body["widgets"]
    metric_rows = [
        row for w in widgets if w["type"] == "metric" for row in w["properties"]["metrics"]
    ]
    named = {(row[0], row[1]) for row in metric_rows if isinstance(row[0], str)}
    expressions = " ".join(row[0]["expression"] for row in metric_rows if isinstance(row[0], dict))
    [logs] = [w for w in widgets if w["type"] == "log"]
    [alarms] = [w for w in widgets if w["type"] == "alarm"]

    assert deployment.outputs["cloudwatch_dashboard_url"].endswith(f"#dashboards:name={FUNCTION}")
    for metric in ("Invocations", "Errors", "Duration", "Throttles", "ConcurrentExecutions"):
        assert ("AWS/Lambda", metric) in named
    for metric in (
        "SyncSucceeded",
        "CloudflareApiCalls",
        "CloudflareRetries",
        "DynamoDBWrites",
        "ValueBytes",
        "ColdStart",
        "RecordsWritten",
        "RecordsUnchanged",
        "RecordsDeleted",
        "RecordsFailed",
    ):
        assert (NAMESPACE, metric) in named
    assert '"SyncFailed"' in expressions and NAMESPACE in expressions
    for metric in (
        "ConsumedWriteCapacityUnits",
        "ConsumedReadCapacityUnits",
        "ThrottledRequests",
        "SystemErrors",
    ):
        assert ("AWS/DynamoDB", metric) in named
    assert f"SOURCE '/aws/lambda/{FUNCTION}'" in logs["properties"]["query"]
    assert "level = 'ERROR'" in logs["properties"]["query"]
    assert len(alarms["properties"]["alarms"]) == len(ALARMS)


def test_schedule_invokes_the_function_with_its_input(deployment: Deployment):
    events = deployment.client("events")
    rule = events.describe_rule(Name=f"{FUNCTION}-schedule")
    [target] = events.list_targets_by_rule(Rule=f"{FUNCTION}-schedule")["Targets"]

    assert rule["ScheduleExpression"] == "rate(1 hour)"
    assert rule["State"] == "ENABLED"
    assert target["Arn"] == deployment.outputs["lambda_function_arn"]
    sent = json.loads(target["Input"])
    assert sent == {
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "detail": SCHEDULE_INPUT,
    }
    assert json.loads(deployment.outputs["schedule_input"]) == sent


def test_a_second_plan_shows_no_drift(deployment: Deployment):
    result = deployment.tf.run("plan", "-input=false", "-detailed-exitcode", check=False)

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


# --------------------------------------------------------------------------------------
# The real handler against the stack Terraform made
# --------------------------------------------------------------------------------------


@dataclass
class SyncRun:
    """Responses, AWS calls and stdout of the handler's invocations."""

    responses: dict[str, dict[str, Any]]
    aws_calls: set[tuple[str, str]]
    stdout: str
    namespace_id: str
    # parameters of the Lambda Invoke calls (self-continuations), which are not sent
    invocations: list[dict[str, Any]]

    def emf(self) -> list[dict[str, Any]]:
        documents = []
        for line in self.stdout.splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and "_aws" in data:
                    documents.append(data)
        return documents


def _is_function_module(name: str) -> bool:
    return name == "kv_sync" or name.startswith("kv_sync.")


@contextlib.contextmanager
def fresh_lambda_modules() -> Iterator[Any]:
    """Import the ``kv_sync`` package anew (module-level settings read from the env).

    Other tests import it under their own env; their module objects are put back
    afterwards, so neither run sees the other's clients or caches. Tracing must be
    off in the environment: the X-Ray SDK would patch botocore for every test.
    """
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if _is_function_module(name)}
    try:
        handler = importlib.import_module("kv_sync.handler")
        if importlib.import_module("kv_sync.tracing").tracer() is not None:
            pytest.fail("tracing is on in the test process; it must stay off here")
        yield handler
    finally:
        cloudflare = sys.modules.get("kv_sync.cloudflare")
        session = getattr(cloudflare, "SESSION", None)
        if session is not None:
            session.close()
        for name in [name for name in sys.modules if _is_function_module(name)]:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def sync_run(deployment: Deployment) -> Iterator[SyncRun]:
    """Invoke the real handler in-process with the function's Terraform environment."""
    from aws_lambda_powertools.metrics.provider import cold_start

    from local.kv_emulator import KVEmulator

    secrets = deployment.client("secretsmanager")
    calls: set[tuple[str, str]] = set()
    invocations: list[dict[str, Any]] = []
    recording = False
    original = BaseClient._make_api_call

    def spy(self: Any, operation_name: str, api_params: Any) -> Any:
        service = self.meta.service_model.endpoint_prefix
        if recording:
            calls.add((service, operation_name))
        if (service, operation_name) == ("lambda", "Invoke"):
            # moto would run the stub zip; the test plays Lambda and invokes the handler
            invocations.append(dict(api_params))
            return {"StatusCode": 202, "ResponseMetadata": {"HTTPStatusCode": 202}}
        return original(self, operation_name, api_params)

    def put_secret(token: str, namespace_id: str, account_id: str) -> None:
        secrets.put_secret_value(
            SecretId=SECRET,
            SecretString=json.dumps(
                {
                    "api_token": token,
                    "account_id": account_id,
                    "kv_namespace_id": namespace_id,
                    "kv_namespace": "kv-sync-tf",
                }
            ),
        )

    emulator = KVEmulator(tokens=[TOKEN])
    with emulator, pytest.MonkeyPatch.context() as mp:
        namespace_id = emulator.create_namespace("kv-sync-tf")
        emulator.put(namespace_id, "flag", '{"enabled": true}', metadata={"owner": "ops"})
        emulator.put(namespace_id, DEFAULT_KEY, "default value")
        emulator.put(namespace_id, OTHER_KEY, "classic.example.com")
        for key in BULK_KEYS:
            emulator.put(namespace_id, key, f"value of {key}", metadata={"bulk": True})
        for name, value in deployment.function_env.items():
            mp.setenv(name, value)
        mp.setenv("CLOUDFLARE_API_BASE_URL", emulator.base_url)  # the emulator stands in
        mp.setenv("AWS_ENDPOINT_URL", deployment.moto_url)
        # In-process: no tracing (Lambda's LAMBDA_TASK_ROOT would turn it on).
        mp.delenv("LAMBDA_TASK_ROOT", raising=False)
        mp.setenv("POWERTOOLS_TRACE_DISABLED", "true")
        mp.setattr(BaseClient, "_make_api_call", spy)
        mp.setattr(cold_start, "is_cold_start", True)
        stdout = io.StringIO()
        responses: dict[str, dict[str, Any]] = {}
        with contextlib.redirect_stdout(stdout), fresh_lambda_modules() as handler:
            function_arn = deployment.outputs["lambda_function_arn"]

            def invoke(label: str, event: dict[str, Any], timeout_ms: int = 55_000) -> None:
                nonlocal recording
                recording = True
                context = LambdaContext(
                    timeout_ms=timeout_ms,
                    function_name=FUNCTION,
                    memory_limit_in_mb=256,
                    invoked_function_arn=function_arn,
                )
                try:
                    responses[label] = handler.lambda_handler(event, context)
                finally:
                    recording = False

            invoke("no_secret_value", {"key_name": "flag"})
            put_secret("revoked-token", namespace_id, emulator.account_id)
            invoke("bad_token", {"key_name": "flag"})
            put_secret(TOKEN, namespace_id, emulator.account_id)
            invoke("named_key", {"key_name": "flag"})
            invoke("default_key", {})
            # the constant input the EventBridge target sends
            invoke("scheduled_event", load_event("scheduledEvent.json"))
            # an unchanged key whose ttl is due for extension (UpdateItem)
            deployment.client("dynamodb").update_item(
                TableName=TABLE,
                Key={"pk": {"S": f"NAMESPACE#{namespace_id}"}, "sk": {"S": "KEY#flag"}},
                UpdateExpression="SET #ttl = :soon",
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues={":soon": {"N": str(int(time.time()) + 3600)}},
            )
            invoke("ttl_due", {"key_name": "flag"})
            # single keys: BatchGetItem, then PutItem for a new value and no
            # write for an unchanged one (the scheduled event's default key)
            # multi-key runs: named keys (BatchGetItem, PutItem), the prefix the
            # EventBridge target sends and the namespace (Query), then the
            # namespace again once a key is gone from KV (DeleteItem)
            invoke("key_names", {"key_names": ["flag", *BULK_KEYS[:2]]})
            invoke("schedule_input", json.loads(_target_input(deployment)))
            invoke("all", {"all": True, "delete_missing": True})
            emulator.delete(namespace_id, GONE_KEY)
            invoke("all_after_delete", {"all": True, "delete_missing": True})
            # More keys than a listing page, and 2 s left: the first page runs,
            # then too little time is left for another, so the run continues
            # itself (Invoke) ...
            for key in LONG_KEYS:
                emulator.put(namespace_id, key, f"value of {key}")
            mp.setattr(sys.modules["kv_sync.engine"], "LIST_PAGE_SIZE", LONG_PAGE_SIZE)
            invoke("continuing", {"prefix": LONG_PREFIX}, timeout_ms=2_000)
            # ... and the test delivers the continuation as Lambda would
            for index, invocation in enumerate(list(invocations)):
                invoke(f"continuation_{index + 1}", json.loads(invocation["Payload"]))
        yield SyncRun(responses, calls, stdout.getvalue(), namespace_id, invocations)


def _target_input(deployment: Deployment) -> str:
    target: str = deployment.resources["aws_cloudwatch_event_target.schedule[0]"]["input"]
    return target


def _item(deployment: Deployment, namespace_id: str, key: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        deployment.client("dynamodb")
        .get_item(
            TableName=TABLE,
            Key={"pk": {"S": f"NAMESPACE#{namespace_id}"}, "sk": {"S": f"KEY#{key}"}},
            ConsistentRead=True,
        )
        .get("Item")
    )
    return item


def test_handler_reports_configuration_error_until_the_secret_has_a_value(sync_run: SyncRun):
    response = sync_run.responses["no_secret_value"]

    assert response["success"] is False
    assert response["error"]["type"] == "CONFIGURATION_ERROR"
    assert SECRET in response["error"]["message"]


def test_handler_syncs_keys_into_the_table_terraform_created(
    deployment: Deployment, sync_run: SyncRun
):
    for label, key in (
        ("named_key", "flag"),
        ("default_key", DEFAULT_KEY),
        ("scheduled_event", DEFAULT_KEY),
    ):
        response = sync_run.responses[label]
        assert response["success"] is True, (label, response)
        assert response["data"]["key_name"] == key
    # the scheduled event re-synced the default key, unchanged since: nothing written
    rerun = sync_run.responses["scheduled_event"]
    assert rerun["data"]["record"]["changed"] is False
    assert rerun["data"]["message"] == f"Synced '{DEFAULT_KEY}': unchanged"
    assert rerun["statistics"]["dynamodb_writes"] == 0
    assert sync_run.responses["default_key"]["statistics"]["dynamodb_writes"] == 1
    # the unchanged flag whose ttl was due: one write, the extension, and still "unchanged"
    extended = sync_run.responses["ttl_due"]
    assert extended["data"]["record"]["changed"] is False
    assert extended["statistics"]["dynamodb_writes"] == 1

    flag = _item(deployment, sync_run.namespace_id, "flag")
    assert flag is not None
    assert flag["value"] == {"S": '{"enabled": true}'}
    assert flag["value_type"] == {"S": "json"}
    assert flag["metadata"] == {"M": {"owner": {"S": "ops"}}}
    assert flag["namespace_name"] == {"S": "kv-sync-tf"}
    # RECORD_TTL_DAYS=7 from Terraform: ttl is synced_at + 7 days
    assert "N" in flag["ttl"]
    assert _item(deployment, sync_run.namespace_id, DEFAULT_KEY) is not None


def test_handler_syncs_many_keys_and_deletes_the_one_gone_from_kv(
    deployment: Deployment, sync_run: SyncRun
):
    named = sync_run.responses["key_names"]
    scheduled = sync_run.responses["schedule_input"]
    first = sync_run.responses["all"]
    second = sync_run.responses["all_after_delete"]

    for response in (named, scheduled, first, second):
        assert response["success"] is True, response
        assert response["data"]["complete"] is True, response
        assert response["data"]["next_cursor"] is None
    # "flag" was stored by the single-key runs; the two bulk keys are new
    assert named["statistics"]["keys_fetched"] == 3
    assert named["statistics"]["records_written"] == 2
    assert named["statistics"]["records_unchanged"] == 1
    # the schedule's prefix: the third bulk key is new
    assert scheduled["data"]["selector"] == SCHEDULE_INPUT
    assert scheduled["statistics"]["keys_listed"] == len(BULK_KEYS)
    assert scheduled["statistics"]["records_written"] == 1
    assert scheduled["statistics"]["records_unchanged"] == 2
    # the namespace: OTHER_KEY is new, the rest unchanged, nothing gone
    assert first["statistics"]["keys_listed"] == 6
    assert first["statistics"]["records_written"] == 1
    assert first["statistics"]["records_unchanged"] == 5
    assert first["statistics"]["records_deleted"] == 0
    assert _item(deployment, sync_run.namespace_id, OTHER_KEY) is not None
    assert second["statistics"]["keys_listed"] == 5
    assert second["statistics"]["records_written"] == 0
    assert second["statistics"]["records_deleted"] == 1
    assert _item(deployment, sync_run.namespace_id, GONE_KEY) is None
    for key in BULK_KEYS:
        if key != GONE_KEY:
            item = _item(deployment, sync_run.namespace_id, key)
            assert item is not None
            assert item["value"] == {"S": f"value of {key}"}


def test_handler_continues_a_long_run_by_invoking_its_own_function(
    deployment: Deployment, sync_run: SyncRun
):
    continuing = sync_run.responses["continuing"]
    [invocation] = sync_run.invocations
    continued = sync_run.responses["continuation_1"]

    assert continuing["success"] is True, continuing
    assert continuing["data"]["complete"] is False
    assert continuing["data"]["continued"] is True
    assert invocation["FunctionName"] == deployment.outputs["lambda_function_arn"]
    assert invocation["InvocationType"] == "Event"
    sent = json.loads(invocation["Payload"])
    # a scheduled event, so the continued run's retryable failures raise for Lambda
    assert sent["detail-type"] == "Scheduled Event"
    payload = sent["detail"]
    assert payload["prefix"] == LONG_PREFIX
    assert payload["cursor"] == continuing["data"]["next_cursor"]
    assert payload["continuation"] == 1
    assert continued["success"] is True, continued
    assert continued["data"]["complete"] is True
    # the first invocation synced one page, the continuation the rest
    assert continuing["statistics"]["keys_listed"] == LONG_PAGE_SIZE
    assert continued["statistics"]["keys_listed"] == len(LONG_KEYS) - LONG_PAGE_SIZE
    for key in LONG_KEYS:
        item = _item(deployment, sync_run.namespace_id, key)
        assert item is not None, key
        assert item["value"] == {"S": f"value of {key}"}


def test_handler_never_logs_the_token(sync_run: SyncRun):
    assert TOKEN not in sync_run.stdout
    assert "revoked-token" not in sync_run.stdout


# --------------------------------------------------------------------------------------
# Contracts between the code and the infrastructure
# --------------------------------------------------------------------------------------


def test_contract_env_vars_the_code_reads_are_the_ones_terraform_sets(deployment: Deployment):
    assert set(deployment.function_env) == set(ENV_VARS) | POWERTOOLS_ENV


def test_contract_dynamodb_actions_called_are_the_ones_granted(
    deployment: Deployment, sync_run: SyncRun
):
    granted = deployment.granted_actions()
    called = {IAM_ACTIONS.get(call, ":".join(call)) for call in sync_run.aws_calls}

    assert {a for a in called if a.startswith("dynamodb:")} == {
        a for a in granted if a.startswith("dynamodb:")
    }
    assert {a for a in called if a.startswith("dynamodb:")} == {
        f"dynamodb:{op}" for op in DYNAMODB_OPERATIONS
    }
    assert called <= granted, called - granted
    assert "secretsmanager:GetSecretValue" in called
    assert "lambda:InvokeFunction" in called


def test_contract_self_invocation_targets_a_granted_function_arn(
    deployment: Deployment, sync_run: SyncRun
):
    policy = deployment.resources["aws_iam_role_policy.lambda"]["policy"]
    [statement] = [s for s in policy_statements(policy) if s["Sid"] == "ContinueLongSyncs"]

    assert sync_run.invocations
    for invocation in sync_run.invocations:
        # IAM's wildcard matching: "*" is any run of characters
        assert any(
            fnmatch.fnmatchcase(invocation["FunctionName"], r) for r in statement["Resource"]
        )


def test_contract_metrics_emitted_are_the_ones_alarms_and_dashboard_watch(
    deployment: Deployment, sync_run: SyncRun
):
    emitted: set[tuple[str, str, frozenset[tuple[str, str]]]] = set()
    for doc in sync_run.emf():
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                dims = frozenset((d, str(doc[d])) for d in dimension_set)
                for metric in directive["Metrics"]:
                    emitted.add((directive["Namespace"], metric["Name"], dims))
    service = ("service", SERVICE)

    # the auth alarm's exact metric and dimensions
    assert (NAMESPACE, "SyncFailed", frozenset({service, ("ErrorType", "AUTH_ERROR")})) in emitted
    # the dashboard's custom metrics, with the dimensions its widgets use
    for metric in (
        "SyncSucceeded",
        "CloudflareApiCalls",
        "CloudflareRetries",
        "DynamoDBWrites",
        "ValueBytes",
        "RecordsWritten",
        "RecordsUnchanged",
        "RecordsDeleted",
        "RecordsFailed",
    ):
        assert (NAMESPACE, metric, frozenset({service})) in emitted, metric
    assert (NAMESPACE, "ColdStart", frozenset({service, ("function_name", FUNCTION)})) in emitted
    assert {namespace for namespace, _, _ in emitted} == {NAMESPACE}


# --------------------------------------------------------------------------------------
# Other configurations, on plan JSON
# --------------------------------------------------------------------------------------


def test_plan_with_customer_managed_key_and_no_schedule_or_url_principals(
    deployment: Deployment, tmp_path: Path
):
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    tf = deployment.tf.fork(tmp_path / "cmk")
    tf.write_vars(
        {
            "lambda_function_name": f"{FUNCTION}-cmk",
            "lambda_package_path": deployment.package_path,
            "kms_key_arn": key,
        }
    )

    changes = planned_changes(tf.plan())

    after = {address: change["after"] for address, change in changes.items()}
    assert not any(a.startswith(("aws_kms_key.", "aws_kms_alias.")) for a in changes)
    assert not any("schedule" in a or "function_url_invoke" in a for a in changes)
    assert not any(a.startswith("aws_lambda_permission.function_url") for a in changes)
    assert after["aws_sns_topic.alerts"]["kms_master_key_id"] == key
    assert after["aws_sqs_queue.failures"]["kms_master_key_id"] == key
    assert after["aws_cloudwatch_log_group.lambda"]["kms_key_id"] == key
    assert after["aws_secretsmanager_secret.cloudflare"]["kms_key_id"] == key
    assert after["aws_lambda_function.sync"]["kms_key_arn"] == key
    assert after["aws_lambda_function.sync"]["architectures"] == ["arm64"]
    assert after["aws_lambda_function.sync"]["reserved_concurrent_executions"] == -1
    assert after["aws_dynamodb_table.kv_data"]["server_side_encryption"] == [
        {"enabled": True, "kms_key_arn": key}
    ]
    environment = after["aws_lambda_function.sync"]["environment"][0]["variables"]
    assert environment["DELETE_MISSING"] == "false"
    assert environment["SELF_INVOKE_CONTINUATION"] == "false"
    statements = changes["data.aws_iam_policy_document.lambda"]["after"]["statement"]
    # self_invoke_continuation = false (the default): no lambda action at all
    assert not any(a.startswith("lambda:") for s in statements for a in s["actions"])
    [kms] = [s for s in statements if s["sid"] == "UseCustomerManagedKey"]
    assert sorted(kms["actions"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["resources"] == [key]


def test_bad_variable_values_fail_at_plan_with_clear_messages(
    deployment: Deployment, tmp_path: Path
):
    tf = deployment.tf.fork(tmp_path / "bad")
    tf.write_vars(
        {
            "lambda_package_path": deployment.package_path,
            "lambda_architecture": "arm",
            "lambda_timeout": 901,
            "log_retention_days": 15,
            "secret_recovery_window_days": 3,
            "function_url_allowed_principals": ["*"],
            "sync_schedule_input": {"keys": "a,b"},
            "alert_email": "not-an-address",
            "kms_key_arn": "alias/mine",
        }
    )

    result = tf.run("plan", "-input=false", check=False)

    assert result.returncode != 0
    messages = " ".join(result.stderr.split())
    for expected in (
        "lambda_architecture must be arm64 or x86_64",
        "lambda_timeout must be a whole number of seconds from 1 to 900",
        "log_retention_days must be one CloudWatch Logs accepts",
        "secret_recovery_window_days must be 0 or from 7 to 30",
        '"*" is not allowed',
        "sync_schedule_input accepts only the fields key_name, key_names, prefix, all and",
        'alert_email must be "" or an email address',
        "aliases are not accepted",
    ):
        assert expected in messages, (expected, messages[-3000:])


# Each selector shape: the input the schedule gets, and what the function makes of it.
# ({"prefix": ...} is the applied one.)
SCHEDULE_SHAPES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {"key_name": "redirect-all-users-to-essentials"}),  # empty detail: the default key
    ({"key_name": "classic-domain"}, {"key_name": "classic-domain"}),
    ({"key_names": ["a", "b/c"], "delete_missing": False}, {"key_names": ["a", "b/c"]}),
    ({"prefix": "flags/"}, {"prefix": "flags/"}),
    ({"all": True, "delete_missing": True}, {"all": True}),
    ({"delete_missing": True}, {"key_name": "redirect-all-users-to-essentials"}),
]


def scheduled_event(detail: dict[str, Any]) -> dict[str, Any]:
    """The event the schedule sends for a ``sync_schedule_input``."""
    return {"detail-type": "Scheduled Event", "source": "aws.events", "detail": detail}


# Answers of the mocked provider that the configuration needs to be well formed.
MOCK_PROVIDER = """\
mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\\"Version\\":\\"2012-10-17\\",\\"Statement\\":[]}"
    }
  }
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }
  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }
}
"""


def schedule_shapes_test_file(package_path: str) -> str:
    """A ``terraform test`` file: one plan of the whole stack per schedule shape.

    JSON is valid HCL expression syntax, so each input is written as its JSON.
    """
    blocks = [
        MOCK_PROVIDER,
        "variables {\n"
        f"  lambda_package_path      = {json.dumps(package_path)}\n"
        '  sync_schedule_expression = "rate(1 day)"\n'
        "}\n",
    ]
    for index, (schedule_input, _) in enumerate(SCHEDULE_SHAPES):
        sent = "aws_cloudwatch_event_target.schedule[0].input"
        expected = json.dumps(json.dumps(scheduled_event(schedule_input)))
        condition = f"jsondecode({sent}) == jsondecode({expected})"
        blocks.append(
            f'run "shape_{index}" {{\n'
            "  command = plan\n"
            f"  variables {{\n    sync_schedule_input = {json.dumps(schedule_input)}\n  }}\n"
            f"  assert {{\n    condition     = {condition}\n"
            f"    error_message = {json.dumps('wrong input for ' + json.dumps(schedule_input))}\n  }}\n"
            "}\n"
        )
    return "\n".join(blocks)


def test_plan_puts_each_schedule_selector_into_the_rule_target_input(
    cli_config: Path, tmp_path: Path
):
    """Plans of the whole stack with the AWS provider mocked (``terraform test``).

    A mocked plan takes about a second where one against moto takes 15, so every
    shape gets its own; the applied stack checks the prefix shape against moto.
    """
    if terraform_version() < (1, 7):
        pytest.skip("terraform test with mock_provider needs Terraform >= 1.7")
    tf = Terraform.prepare(tmp_path / "shapes", cli_config)
    tests_dir = tf.workdir / "tests"
    tests_dir.mkdir()
    (tests_dir / "schedule_input.tftest.hcl").write_text(
        schedule_shapes_test_file(str(stub_package(tmp_path / "lambda_function.zip")))
    )
    tf.init()

    result = tf.run("test", check=False)

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"{len(SCHEDULE_SHAPES)} passed, 0 failed" in result.stdout
    for schedule_input, selector in SCHEDULE_SHAPES:
        # what the target sends, as the function's own event parser reads it
        request = events.parse_event(
            scheduled_event(schedule_input), "redirect-all-users-to-essentials"
        )
        assert request.selector() == selector
        assert request.trigger is Trigger.SCHEDULE
        assert request.delete_missing == schedule_input.get("delete_missing")


# Too long for EventBridge, though the function would take it.
TOO_LONG_INPUT = {"key_names": [f"key-{i:04}" for i in range(900)]}
BAD_SCHEDULE_INPUTS: list[tuple[Any, str]] = [
    ("flags/", "sync_schedule_input must be an object"),
    (["a"], "sync_schedule_input must be an object"),
    ({"keys": "a,b"}, "accepts only the fields key_name, key_names, prefix, all and"),
    ({"cursor": "abc"}, "accepts only the fields"),
    ({"key_name": "a", "prefix": "b"}, "takes at most one selector of key_name, key_names"),
    ({"all": True, "key_names": ["a"]}, "takes at most one selector"),
    ({"key_name": ""}, "sync_schedule_input.key_name must be a key name"),
    ({"key_name": ".."}, "sync_schedule_input.key_name must be a key name"),
    ({"key_name": "é" * 257}, "sync_schedule_input.key_name must be a key name"),
    ({"key_name": "tab\there"}, "sync_schedule_input.key_name must be a key name"),
    ({"key_name": 7}, "sync_schedule_input.key_name must be a key name"),
    ({"key_names": []}, "key_names must be a list of 1 to 1000 key names"),
    ({"key_names": "a"}, "key_names must be a list of 1 to 1000 key names"),
    ({"key_names": ["a", 1]}, "key_names must be a list of 1 to 1000 key names"),
    ({"key_names": ["a", "."]}, "key_names must be a list of 1 to 1000 key names"),
    ({"key_names": [f"k{i}" for i in range(1001)]}, "key_names must be a list of 1 to 1000"),
    ({"prefix": ""}, "sync_schedule_input.prefix must be a non-empty string"),
    ({"prefix": ["flags/"]}, "sync_schedule_input.prefix must be a non-empty string"),
    ({"all": False}, "sync_schedule_input.all must be true"),
    ({"all": "true"}, "sync_schedule_input.all must be true"),
    ({"delete_missing": "yes"}, "sync_schedule_input.delete_missing must be true or false"),
]


def test_bad_schedule_inputs_fail_validation_and_the_function_rejects_them_too(
    cli_config: Path, tmp_path: Path
):
    """Each bad input on its own, planned with terraform/variables.tf alone.

    The validations need no provider, so each plan takes a fraction of a second;
    the full stack's plan reports the same messages (test_bad_variable_values...).
    """
    tf = Terraform.prepare(tmp_path / "variables", cli_config)
    for path in tf.workdir.glob("*.tf"):
        if path.name != "variables.tf":
            path.unlink()
    for index, (schedule_input, expected) in enumerate(BAD_SCHEDULE_INPUTS):
        name = f"bad{index}.tfvars.json"
        tf.write_vars({"sync_schedule_input": schedule_input}, name=name)

        result = tf.run("plan", "-input=false", f"-var-file={name}", check=False)

        messages = " ".join(result.stderr.split())
        assert result.returncode != 0, schedule_input
        assert expected in messages, (schedule_input, expected, messages[-2000:])
        with pytest.raises(ValidationError):
            events.parse_event(schedule_input, "redirect-all-users-to-essentials")

    tf.write_vars({"sync_schedule_input": TOO_LONG_INPUT}, name="long.tfvars.json")
    result = tf.run("plan", "-input=false", "-var-file=long.tfvars.json", check=False)
    assert result.returncode != 0
    assert "must be at most 8100 characters" in " ".join(result.stderr.split())


def test_inconsistent_timeouts_fail_at_plan(deployment: Deployment, tmp_path: Path):
    tf = deployment.tf.fork(tmp_path / "timeouts")
    tf.write_vars(
        {
            "lambda_package_path": deployment.package_path,
            "lambda_timeout": 30,
            "api_timeout_seconds": 30,
        }
    )

    result = tf.run("plan", "-input=false", check=False)

    assert result.returncode != 0
    messages = " ".join(result.stderr.split())
    assert "api_timeout_seconds must be shorter than lambda_timeout" in messages
    assert "duration_threshold_ms must be below lambda_timeout" in messages


# --------------------------------------------------------------------------------------
# Last: destroy
# --------------------------------------------------------------------------------------


def test_zz_destroy_leaves_nothing_behind(deployment: Deployment):
    alerts_key = deployment.resources["aws_kms_key.alerts[0]"]["key_id"]

    deployment.destroy()

    assert deployment.tf.show_json().get("values") is None
    missing: dict[str, Callable[[Any], Any]] = {
        "dynamodb": lambda c: c.describe_table(TableName=TABLE),
        "secretsmanager": lambda c: c.describe_secret(SecretId=SECRET),
        "lambda": lambda c: c.get_function(FunctionName=FUNCTION),
        "iam": lambda c: c.get_role(RoleName=f"{FUNCTION}-role"),
        "sqs": lambda c: c.get_queue_url(QueueName=f"{FUNCTION}-failures"),
        "events": lambda c: c.describe_rule(Name=f"{FUNCTION}-schedule"),
    }
    for service, call in missing.items():
        with pytest.raises(ClientError):
            call(deployment.client(service))
    assert (
        deployment.client("logs").describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{FUNCTION}")[
            "logGroups"
        ]
        == []
    )
    assert (
        deployment.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{FUNCTION}-")[
            "MetricAlarms"
        ]
        == []
    )
    dashboards = deployment.client("cloudwatch").list_dashboards(DashboardNamePrefix=FUNCTION)
    assert dashboards["DashboardEntries"] == []
    topics = deployment.client("sns").list_topics()["Topics"]
    assert not any(t["TopicArn"].endswith(f":{FUNCTION}-alerts") for t in topics)
    aliases = deployment.client("kms").list_aliases()["Aliases"]
    assert not any(a["AliasName"] == f"alias/{FUNCTION}-alerts" for a in aliases)
    # KMS never deletes a key at once: it waits out the deletion window.
    key = deployment.client("kms").describe_key(KeyId=alerts_key)["KeyMetadata"]
    assert key["KeyState"] == "PendingDeletion"
    print(
        "terraform timings (s): "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in deployment.timings.items())
    )
