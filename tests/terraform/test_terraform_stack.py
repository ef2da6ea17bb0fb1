"""The whole stack applied by Terraform against moto server, then used and destroyed.

One module-scoped ``terraform apply`` serves every test here (about a minute on
moto); the last test destroys it and checks that nothing is left. Between the
two, the tests check the resources through the AWS APIs, run the real handler
in-process with the environment Terraform gave the function, and hold the code
and the infrastructure to the same contract: env var names, IAM actions,
metric names and dimensions. Tracing stays off in this process: the X-Ray SDK
patches botocore and requests globally, for good (the benchmarks and the zip
test run the function traced, in interpreters of their own).

moto 5.2.5 gaps met here: the two Step Functions APIs the provider calls for the
state machine (``tests.support.moto_sfn.add_missing_sfn_actions`` adds them). The stack
has no X-Ray group or sampling rule (moto has neither API): the default sampling
rule suits a function invoked a few times an hour, so one would not earn its
place; tracing itself is the function's ``tracing_config``, checked below. moto
runs no function code without Docker, and even with it never hands a failed
asynchronous invocation to the ``OnFailure`` destination (its ``invoke`` ignores the
event invoke config): the failure queue is checked as configuration only, and a
failed scheduled run is followed from the handler's raise to the alarm its metric
fires (test_a_failed_scheduled_run_raises_and_its_metric_fires_its_alarm).
Configurations other than the applied one (customer-managed key, no schedule, no
URL principals) are checked on ``terraform plan`` JSON; every
shape of the schedule's input on plans with the AWS provider mocked (``terraform
test``); bad schedule inputs on plans of ``variables.tf`` alone, which need no
provider.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import operator
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

from kv_sync import errors, events
from kv_sync.errors import ValidationError
from kv_sync.model import Trigger
from kv_sync.settings import ENV_VARS
from local.lambda_context import LambdaContext
from tests.support.function import load_event
from tests.support.iam import LEASE_CALLS, PENDING_CALLS, dynamodb_targets
from tests.support.moto_sfn import add_missing_sfn_actions
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
}

# The alarm of each error type of severity "critical" (kv_sync.errors): one failure
# needs a human, whatever the trigger.
CRITICAL_ALARMS = {
    "AUTH_ERROR": "auth-errors",
    "CONFIGURATION_ERROR": "configuration-errors",
    "INTERNAL_ERROR": "internal-errors",
    "DELETION_REFUSED": "deletion-refused",
}
# The state machine's: executions (multi-key runs) that failed or timed out.
STATE_MACHINE_ALARMS = {
    "executions-failed": "ExecutionsFailed",
    "executions-timed-out": "ExecutionsTimedOut",
}
ALARMS = {
    "errors",
    "duration",
    "throttles",
    *CRITICAL_ALARMS.values(),
    "records-failed",
    "dynamodb-throttles",
    "dynamodb-system-errors",
    "failure-queue-depth",
    *STATE_MACHINE_ALARMS,
}
POWERTOOLS_ENV = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}
# What kv_sync/store.py calls: conditional puts (new and changed records), conditional
# updates (ttl extensions), conditional deletes (delete_missing), batched reads of named
# keys (a single key_name included), queries of listed ranges; and kv_sync/ledger.py, on
# the lease and pending deletions beside the records (tests.support.iam.LEASE_CALLS).
DYNAMODB_OPERATIONS = ("PutItem", "UpdateItem", "DeleteItem", "BatchGetItem", "Query")
# Keys seeded for the multi-key runs; GONE_KEY is deleted from KV between two of them.
BULK_KEYS = ("flags/alpha", "flags/beta", "flags/gamma")
GONE_KEY = "flags/beta"
# Seeded last, for a run longer than one invocation: more keys than a listing page.
LONG_PREFIX = "long/"
LONG_KEYS = tuple(f"{LONG_PREFIX}{index:02}" for index in range(12))
LONG_PAGE_SIZE = 10  # the smallest listing page Cloudflare serves
# Deleted from KV before the run over LONG_PREFIX that takes two invocations: its record
# is found missing by the first and deleted by the last (1 of 12 records: the guard agrees).
LONG_GONE = LONG_KEYS[0]
# Changed in KV before that prefix's dry run, which takes two invocations too.
LONG_CHANGED = LONG_KEYS[-1]
# Synced, then deleted from KV: 1 of 1 record is over the deletion guard's 25 %.
RETIRED_KEY = "retired-flag"


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
    # moto lacks two Step Functions APIs the provider calls (plan, and after creates)
    add_missing_sfn_actions()
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
        "DELETE_MISSING": "true",
        "MAX_DELETE_PERCENT": "25",
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
    # (the prefix schedule starts state machine executions, which invoke the function
    # with the state machine's role: EventBridge gets no grant here)
    assert by_action["lambda:InvokeFunction"] == {URL_PRINCIPAL}
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
    # the function never invokes a function, itself included: its callers continue
    # long runs (the state machine, whose own role may invoke it)
    assert not any(a.startswith("lambda:") for s in statements for a in s["Action"])
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
    # error_rate_threshold's default: one failed scheduled run (it raises) is an alarm
    assert simple("errors") == ("AWS/Lambda", "Errors", fn, "Sum", 1.0)
    assert simple("duration") == ("AWS/Lambda", "Duration", fn, "Maximum", 30000.0)
    assert simple("throttles") == ("AWS/Lambda", "Throttles", fn, "Sum", 1.0)
    # one failure of a critical error type, any trigger, within 5 minutes
    for error_type, name in CRITICAL_ALARMS.items():
        assert simple(name) == (
            NAMESPACE,
            "SyncFailed",
            {"service": SERVICE, "ErrorType": error_type},
            "Sum",
            1.0,
        ), name
    # a multi-key run that completed with some keys failed
    assert simple("records-failed") == (
        NAMESPACE,
        "RecordsFailed",
        {"service": SERVICE},
        "Sum",
        1.0,
    )
    # an execution of the state machine (a scheduled multi-key run) that failed or timed out
    machine = {"StateMachineArn": deployment.outputs["state_machine_arn"]}
    for name, metric in STATE_MACHINE_ALARMS.items():
        assert simple(name) == ("AWS/States", metric, machine, "Sum", 1.0), name
    for name in ("errors", "records-failed", *CRITICAL_ALARMS.values()):
        alarm = by_name[name]
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold", name
        assert (alarm["Period"], alarm["EvaluationPeriods"]) == (300, 1), name
        assert alarm.get("DatapointsToAlarm", 1) == 1, name
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

    account = deployment.client("sts").get_caller_identity()["Account"]

    assert topic["KmsMasterKeyId"] == key_arn
    assert kms.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"] is True
    cloudwatch = [
        s for s in policy["Statement"] if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert len(cloudwatch) == 1
    assert sorted(cloudwatch[0]["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    # only CloudWatch acting for this account (the confused-deputy guard)
    assert cloudwatch[0]["Condition"] == {"StringEquals": {"aws:SourceAccount": account}}
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


def test_multi_key_schedule_starts_a_state_machine_execution_with_its_selector(
    deployment: Deployment,
):
    events = deployment.client("events")
    iam = deployment.client("iam")
    rule = events.describe_rule(Name=f"{FUNCTION}-schedule")
    [target] = events.list_targets_by_rule(Rule=f"{FUNCTION}-schedule")["Targets"]
    role = iam.get_role(RoleName=f"{FUNCTION}-evb-role")["Role"]
    document = iam.get_role_policy(
        RoleName=f"{FUNCTION}-evb-role", PolicyName=f"{FUNCTION}-evb-policy"
    )["PolicyDocument"]
    statements = policy_statements(document if isinstance(document, str) else json.dumps(document))

    assert rule["ScheduleExpression"] == "rate(1 hour)"
    assert rule["State"] == "ENABLED"
    # a prefix may take several invocations: the schedule starts an execution of the
    # state machine, whose input is the selector itself
    assert target["Arn"] == deployment.outputs["state_machine_arn"]
    assert target["RoleArn"] == role["Arn"]
    assert json.loads(target["Input"]) == SCHEDULE_INPUT
    assert json.loads(deployment.outputs["schedule_input"]) == SCHEDULE_INPUT
    # the schedule's role may start this state machine's executions, nothing else
    assert [(s["Action"], s["Resource"]) for s in statements] == [
        (["states:StartExecution"], [deployment.outputs["state_machine_arn"]])
    ]


def test_a_second_plan_shows_no_drift(deployment: Deployment):
    result = deployment.tf.run("plan", "-input=false", "-detailed-exitcode", check=False)

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


# --------------------------------------------------------------------------------------
# The real handler against the stack Terraform made
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Datapoint:
    """One metric value of an EMF document, as CloudWatch extracts it from the log."""

    namespace: str
    metric: str
    dimensions: frozenset[tuple[str, str]]
    value: float


@dataclass
class SyncRun:
    """Responses, raised errors, AWS calls and stdout of the handler's invocations."""

    responses: dict[str, dict[str, Any]]
    # what the invocations that raised (scheduled ones that failed) raised
    raised: dict[str, Exception]
    aws_calls: set[tuple[str, str]]
    # (operation, kind of item) of every DynamoDB call: tests.support.iam.dynamodb_targets
    dynamodb_targets: set[tuple[str, str]]
    stdout: str
    # what each invocation printed: its log lines and EMF documents
    outputs: dict[str, str]
    namespace_id: str

    def emf(self, label: str | None = None) -> list[dict[str, Any]]:
        """The EMF documents printed by every invocation, or by ``label``'s."""
        documents = []
        text = self.stdout if label is None else self.outputs[label]
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and "_aws" in data:
                    documents.append(data)
        return documents

    def datapoints(self, label: str | None = None) -> list[Datapoint]:
        """Every metric value of the EMF documents, once per dimension set."""
        points = []
        for doc in self.emf(label):
            for directive in doc["_aws"]["CloudWatchMetrics"]:
                for dimension_set in directive["Dimensions"]:
                    dims = frozenset((d, str(doc[d])) for d in dimension_set)
                    for metric in directive["Metrics"]:
                        values = doc[metric["Name"]]
                        total = sum(values) if isinstance(values, list) else values
                        points.append(
                            Datapoint(directive["Namespace"], metric["Name"], dims, float(total))
                        )
        return points

    def log_lines(self, label: str) -> list[dict[str, Any]]:
        """The JSON log lines ``label``'s invocation printed (EMF documents excluded)."""
        lines = []
        for line in self.outputs[label].splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and "_aws" not in data:
                    lines.append(data)
        return lines


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
    targets: set[tuple[str, str]] = set()
    current: str | None = None  # the label of the invocation running, while one runs
    original = BaseClient._make_api_call

    def spy(self: Any, operation_name: str, api_params: Any) -> Any:
        service = self.meta.service_model.endpoint_prefix
        if current is not None:
            calls.add((service, operation_name))
            if service == "dynamodb":
                targets.update(dynamodb_targets(operation_name, api_params))
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
        raised: dict[str, Exception] = {}
        outputs: dict[str, str] = {}
        with contextlib.redirect_stdout(stdout), fresh_lambda_modules() as handler:
            function_arn = deployment.outputs["lambda_function_arn"]

            def invoke(label: str, event: dict[str, Any], timeout_ms: int = 55_000) -> None:
                nonlocal current
                current, start = label, len(stdout.getvalue())
                context = LambdaContext(
                    timeout_ms=timeout_ms,
                    function_name=FUNCTION,
                    memory_limit_in_mb=256,
                    invoked_function_arn=function_arn,
                )
                try:
                    responses[label] = handler.lambda_handler(event, context)
                except Exception as exc:  # a failed scheduled run raises, as Lambda needs
                    raised[label] = exc
                finally:
                    current = None
                    outputs[label] = stdout.getvalue()[start:]

            def resume(label: str, paused: str, event: dict[str, Any]) -> None:
                """Continue ``paused``'s run with its cursor, as a caller (the state machine)."""
                invoke(label, {**event, "cursor": responses[paused]["data"]["next_cursor"]})

            invoke("no_secret_value", {"key_name": "flag"})
            # the schedule's event while the secret is still empty: it raises
            invoke("scheduled_no_secret", load_event("scheduledEvent.json"))
            put_secret("revoked-token", namespace_id, emulator.account_id)
            invoke("bad_token", {"key_name": "flag"})
            put_secret(TOKEN, namespace_id, emulator.account_id)
            # one Cloudflare 503 on the way: the function retries it (CloudflareRetries)
            emulator.add_fault(status=503, times=1, path_contains="/bulk/get")
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
            # More keys than a listing page, synced in one invocation ...
            for key in LONG_KEYS:
                emulator.put(namespace_id, key, f"value of {key}")
            mp.setattr(sys.modules["kv_sync.pages"], "LIST_PAGE_SIZE", LONG_PAGE_SIZE)
            invoke("long_first", {"prefix": LONG_PREFIX})
            # ... then one key gone, and no invocation with the time for a second page:
            # the run stops after the first (keeping the record to delete and the
            # lease) and returns its cursor ...
            emulator.delete(namespace_id, LONG_GONE)
            mp.setattr(sys.modules["kv_sync.engine"], "MIN_PAGE_SECONDS", 3_600.0)
            invoke("long_paused", {"prefix": LONG_PREFIX})
            # ... a second multi-key run meanwhile meets its lease ...
            invoke("conflict", {"all": True})
            # ... and the caller continues the run with its cursor
            resume("long_resumed", "long_paused", {"prefix": LONG_PREFIX})
            # A dry run over two invocations, continued with its cursor too
            emulator.put(namespace_id, LONG_CHANGED, "changed in KV")
            invoke("dry_paused", {"prefix": LONG_PREFIX, "dry_run": True})
            resume("dry_resumed", "dry_paused", {"prefix": LONG_PREFIX, "dry_run": True})
            # The deletion guard: a scheduled run that would delete 1 of 1 record
            # raises; forced, the same selector deletes it.
            emulator.put(namespace_id, RETIRED_KEY, "soon gone")
            invoke("retired_synced", {"key_name": RETIRED_KEY})
            emulator.delete(namespace_id, RETIRED_KEY)
            scheduled = {**load_event("scheduledEvent.json")}
            scheduled["detail"] = {"key_name": RETIRED_KEY, "delete_missing": True}
            invoke("scheduled_refused", scheduled)
            invoke(
                "forced", {"key_name": RETIRED_KEY, "delete_missing": True, "force_delete": True}
            )
        yield SyncRun(
            responses,
            raised,
            calls,
            targets,
            stdout.getvalue(),
            outputs,
            namespace_id,
        )


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


def test_handler_finishes_a_long_run_continued_with_its_cursor(
    deployment: Deployment, sync_run: SyncRun
):
    # GIVEN a prefix of 12 keys, one of them gone from KV, and invocations with the
    # time for one listing page of 10
    first = sync_run.responses["long_first"]
    paused = sync_run.responses["long_paused"]
    resumed = sync_run.responses["long_resumed"]

    # THEN the first run (time for both pages) synced all 12
    assert first["data"]["complete"] is True, first
    assert first["statistics"]["records_written"] == len(LONG_KEYS)
    # AND the second stopped after a page, telling its caller to continue, and
    # invoked no function itself
    assert paused["success"] is True, paused
    assert paused["data"]["complete"] is False
    assert paused["data"]["next_cursor"]
    assert paused["data"]["message"].endswith(
        "stopped before the deadline; pass next_cursor to continue"
    )
    assert "continued" not in paused["data"]
    assert not {call for call in sync_run.aws_calls if call[0] == "lambda"}
    # AND continued with that cursor, the same run finished
    assert resumed["success"] is True, resumed
    assert resumed["data"]["complete"] is True
    # the first invocation synced one page, the resumed one the rest
    assert paused["statistics"]["keys_listed"] == LONG_PAGE_SIZE
    assert resumed["statistics"]["keys_listed"] == len(LONG_KEYS) - 1 - LONG_PAGE_SIZE
    # AND the record of the gone key, found missing by the first invocation, was
    # deleted by the last one only, the guard judging the whole run (1 of 12 stored)
    assert paused["statistics"]["records_deleted"] == 0
    assert resumed["statistics"]["records_deleted"] == 1
    assert resumed["data"]["deletion"] == {
        "to_delete": 1,
        "stored": len(LONG_KEYS),
        "max_delete_percent": 25,
        "force_delete": False,
        "refused": None,
        "skipped": None,
    }
    assert _item(deployment, sync_run.namespace_id, LONG_GONE) is None
    for key in LONG_KEYS:
        if key != LONG_GONE:
            item = _item(deployment, sync_run.namespace_id, key)
            assert item is not None, key
            if key != LONG_CHANGED:  # changed in KV since, for a dry run that wrote nothing
                assert item["value"] == {"S": f"value of {key}"}, key


def test_a_second_multi_key_run_meets_the_lease_of_the_unfinished_one(
    deployment: Deployment, sync_run: SyncRun
):
    # GIVEN a multi-key run that stopped with a cursor, to be continued by its caller
    holder = sync_run.responses["long_paused"]

    # WHEN another multi-key run starts before the caller continues the first
    conflict = sync_run.responses["conflict"]

    # THEN that one fails fast, retryable, naming the running one, and synced nothing
    assert conflict["success"] is False
    assert conflict["error"]["type"] == "CONFLICT"
    assert conflict["error"]["is_retryable"] is True
    message = conflict["error"]["message"]
    assert message.startswith(
        f"Another multi-key run has been syncing namespace {sync_run.namespace_id} since "
    )
    assert holder["data"]["selector"] == {"prefix": LONG_PREFIX}
    assert LONG_PREFIX in message
    assert conflict["statistics"]["keys_listed"] == 0
    assert conflict["statistics"]["dynamodb_writes"] == 0
    # AND the first run, continued with its cursor, took its lease again and finished
    assert sync_run.responses["long_resumed"]["data"]["complete"] is True
    # AND once every run ended, no lease and no pending deletions are left in the table
    left = (
        deployment.client("dynamodb")
        .query(
            TableName=TABLE,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :own)",
            ExpressionAttributeValues={
                ":pk": {"S": f"NAMESPACE#{sync_run.namespace_id}"},
                ":own": {"S": "#"},
            },
            ConsistentRead=True,
        )
        .get("Items", [])
    )
    assert not [item["sk"]["S"] for item in left if item["sk"]["S"].startswith(("#LEASE", "#RUN#"))]


def test_a_dry_run_continued_with_its_cursor_stays_a_dry_run(
    deployment: Deployment, sync_run: SyncRun
):
    # GIVEN a key changed in KV, and a dry run over its prefix that needs two invocations
    first = sync_run.responses["dry_paused"]

    # WHEN the caller continues it with its cursor
    resumed = sync_run.responses.get("dry_resumed")

    # THEN the resumed run is a dry run too, and says what the real run would write
    assert "dry_resumed" not in sync_run.raised, sync_run.raised.get("dry_resumed")
    assert resumed is not None
    for document in (first, resumed):
        assert document["success"] is True, document
        assert document["data"]["dry_run"] is True
        assert document["data"]["message"].startswith("Dry run, nothing written: would sync")
    assert first["data"]["complete"] is False
    assert resumed["data"]["complete"] is True
    assert resumed["statistics"]["records_written"] == 1
    assert resumed["data"]["sample"]["written"] == [LONG_CHANGED]
    # AND nothing was written: the table still holds the value synced before
    item = _item(deployment, sync_run.namespace_id, LONG_CHANGED)
    assert item is not None
    assert item["value"] == {"S": f"value of {LONG_CHANGED}"}


def test_deletion_guard_refuses_a_scheduled_run_and_force_delete_overrides_it(
    deployment: Deployment, sync_run: SyncRun
):
    # GIVEN a synced key since deleted from KV: deleting its record is 1 of 1 (100 %)
    assert sync_run.responses["retired_synced"]["success"] is True

    # WHEN the schedule syncs it with delete_missing
    refused = sync_run.raised.get("scheduled_refused")

    # THEN the run raised DELETION_REFUSED, not retryable, and deleted nothing
    assert refused is not None
    assert getattr(refused, "type", None) == "DELETION_REFUSED"
    assert getattr(refused, "is_retryable", None) is False
    assert "more than MAX_DELETE_PERCENT (25 %)" in str(refused)
    # AND forced, the same selector still found the record and deleted it, with a
    # warning in the log
    forced = sync_run.responses["forced"]
    assert forced["error"]["type"] == "NOT_FOUND"
    assert "its DynamoDB record was deleted" in forced["error"]["message"]
    assert "Deletion guard overridden by force_delete" in {
        line.get("message") for line in sync_run.log_lines("forced")
    }
    assert _item(deployment, sync_run.namespace_id, RETIRED_KEY) is None


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
    called = {":".join(call) for call in sync_run.aws_calls}

    assert {a for a in called if a.startswith("dynamodb:")} == {
        a for a in granted if a.startswith("dynamodb:")
    }
    assert {a for a in called if a.startswith("dynamodb:")} == {
        f"dynamodb:{op}" for op in DYNAMODB_OPERATIONS
    }
    # the records, and the lease and pending deletions beside them: all of it with
    # the granted operations on the one table
    assert {(op, "record") for op in DYNAMODB_OPERATIONS} <= sync_run.dynamodb_targets
    assert not LEASE_CALLS - sync_run.dynamodb_targets, sorted(LEASE_CALLS)
    assert not PENDING_CALLS - sync_run.dynamodb_targets, sorted(PENDING_CALLS)
    assert {op for op, _ in sync_run.dynamodb_targets} == set(DYNAMODB_OPERATIONS)
    assert called <= granted, called - granted
    assert "secretsmanager:GetSecretValue" in called
    # the function invokes no function: its callers continue long runs
    assert not any(a.startswith("lambda:") for a in called | granted)


def test_contract_metrics_emitted_are_the_ones_alarms_and_dashboard_watch(
    deployment: Deployment, sync_run: SyncRun
):
    emitted = {(p.namespace, p.metric, p.dimensions) for p in sync_run.datapoints()}
    service = ("service", SERVICE)

    # the exact metric and dimensions of the critical alarms met by the runs
    for error_type in ("AUTH_ERROR", "CONFIGURATION_ERROR", "DELETION_REFUSED"):
        dims = frozenset({service, ("ErrorType", error_type)})
        assert (NAMESPACE, "SyncFailed", dims) in emitted, error_type
    # the Cloudflare 503 that was retried
    assert sync_run.responses["named_key"]["statistics"]["cloudflare_retries"] == 1
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


# How CloudWatch compares an alarm's statistic with its threshold.
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": operator.ge,
    "GreaterThanThreshold": operator.gt,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}


def alarms_watching(alarms: list[dict[str, Any]], point: Datapoint) -> list[dict[str, Any]]:
    """The alarms whose metric is the datapoint's.

    CloudWatch identifies a metric by its namespace, its name and its whole set of
    dimensions: a datapoint with one dimension more or less is another metric.
    """
    return [
        alarm
        for alarm in alarms
        if (alarm.get("Namespace"), alarm.get("MetricName")) == (point.namespace, point.metric)
        and frozenset((d["Name"], d["Value"]) for d in alarm["Dimensions"]) == point.dimensions
    ]


def fires_on_one_datapoint(alarm: dict[str, Any], value: float) -> bool:
    """Whether ``value``, the only datapoint of a period, puts the alarm in ALARM."""
    assert alarm["Statistic"] in {"Sum", "Maximum"}, alarm["AlarmName"]  # one value: itself
    assert alarm.get("DatapointsToAlarm", alarm["EvaluationPeriods"]) == 1, alarm["AlarmName"]
    return COMPARISONS[alarm["ComparisonOperator"]](value, alarm["Threshold"])


@pytest.mark.parametrize(
    ("label", "error_type"),
    [("scheduled_no_secret", "CONFIGURATION_ERROR"), ("scheduled_refused", "DELETION_REFUSED")],
)
def test_a_failed_scheduled_run_raises_and_its_metric_fires_its_alarm(
    deployment: Deployment, sync_run: SyncRun, label: str, error_type: str
):
    # GIVEN the applied stack's alarms, and the topic they notify
    alarms = deployment.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{FUNCTION}-")[
        "MetricAlarms"
    ]
    by_name = {a["AlarmName"]: a for a in alarms}
    topic = deployment.outputs["sns_topic_arn"]

    # WHEN a scheduled event fails in the handler (the empty secret as Terraform leaves
    # it; a deletion over the guard's limit)
    raised = sync_run.raised.get(label)
    failed = [p for p in sync_run.datapoints(label) if p.metric == "SyncFailed"]

    # THEN the handler raised, which Lambda counts as one Errors datapoint (and retries,
    # then sends to the failure queue): the errors alarm fires on that one
    assert raised is not None, sync_run.responses.get(label)
    assert getattr(raised, "type", None) == error_type
    assert fires_on_one_datapoint(by_name[f"{FUNCTION}-errors"], 1.0)
    # AND it printed one SyncFailed datapoint of its type, the metric of exactly one
    # alarm of the stack, which that datapoint fires, notifying the topic
    assert [p.dimensions for p in failed] == [
        frozenset({("service", SERVICE), ("ErrorType", error_type)})
    ]
    [alarm] = alarms_watching(alarms, failed[0])
    assert alarm["AlarmName"] == f"{FUNCTION}-{CRITICAL_ALARMS[error_type]}"
    assert fires_on_one_datapoint(alarm, failed[0].value)
    assert alarm["AlarmActions"] == [topic]
    assert alarm["ActionsEnabled"] is True
    # AND its log line says why
    [log] = [line for line in sync_run.log_lines(label) if line.get("message") == "Sync failed"]
    assert (log["level"], log["error_type"], log["trigger"]) == ("ERROR", error_type, "schedule")


def test_contract_every_critical_error_type_has_its_alarm(deployment: Deployment):
    # GIVEN the error types whose severity is "critical" in the function's code
    critical = {
        cls.type
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and issubclass(cls, errors.SyncError)
        and cls.severity == "critical"
    }
    alarms = deployment.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{FUNCTION}-")[
        "MetricAlarms"
    ]

    # WHEN the stack's alarms on SyncFailed are read
    watched = {
        d["Value"]: a["AlarmName"].removeprefix(f"{FUNCTION}-")
        for a in alarms
        if a.get("MetricName") == "SyncFailed"
        for d in a["Dimensions"]
        if d["Name"] == "ErrorType"
    }

    # THEN each critical type has its alarm, and no other type has one
    assert watched == CRITICAL_ALARMS
    assert set(CRITICAL_ALARMS) == critical


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
    assert after["aws_cloudwatch_log_group.state_machine"]["kms_key_id"] == key
    assert after["aws_secretsmanager_secret.cloudflare"]["kms_key_id"] == key
    assert after["aws_lambda_function.sync"]["kms_key_arn"] == key
    assert after["aws_lambda_function.sync"]["architectures"] == ["arm64"]
    assert after["aws_lambda_function.sync"]["reserved_concurrent_executions"] == -1
    assert after["aws_dynamodb_table.kv_data"]["server_side_encryption"] == [
        {"enabled": True, "kms_key_arn": key}
    ]
    environment = after["aws_lambda_function.sync"]["environment"][0]["variables"]
    assert environment["DELETE_MISSING"] == "false"
    statements = changes["data.aws_iam_policy_document.lambda"]["after"]["statement"]
    # the function's role has no lambda action at all
    assert not any(a.startswith("lambda:") for s in statements for a in s["actions"])
    # AND the readers' policy may decrypt with the key, through DynamoDB only
    reader = changes["data.aws_iam_policy_document.reader"]["after"]["statement"]
    [decrypt] = [s for s in reader if s["sid"] == "DecryptKvMirror"]
    assert (decrypt["actions"], decrypt["resources"]) == (["kms:Decrypt"], [key])
    [reader_via] = decrypt["condition"]
    assert (reader_via["variable"], reader_via["values"]) == (
        "kms:ViaService",
        ["dynamodb.us-east-1.amazonaws.com"],
    )
    [kms] = [s for s in statements if s["sid"] == "UseCustomerManagedKey"]
    assert sorted(kms["actions"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["resources"] == [key]
    # only through the two services that use the key for the function: the secret's
    # reads and the failure queue's sends
    [via] = kms["condition"]
    assert (via["test"], via["variable"]) == ("StringEquals", "kms:ViaService")
    assert sorted(via["values"]) == [
        "secretsmanager.us-east-1.amazonaws.com",
        "sqs.us-east-1.amazonaws.com",
    ]


def test_a_key_of_another_region_fails_at_plan(deployment: Deployment, tmp_path: Path):
    # GIVEN a customer-managed key of eu-west-1 for a stack in us-east-1
    tf = deployment.tf.fork(tmp_path / "region")
    tf.write_vars(
        {
            "lambda_package_path": deployment.package_path,
            "kms_key_arn": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        }
    )

    # WHEN the stack is planned
    result = tf.run("plan", "-input=false", check=False)

    # THEN the plan fails with the precondition's message, before anything is created
    assert result.returncode != 0
    messages = " ".join(result.stderr.split())
    assert "kms_key_arn names a key in another Region" in messages, messages[-3000:]
    assert "need a key of us-east-1" in messages


# The longest name each resource type of the stack may have (AWS's limits).
NAME_LIMITS: dict[str, tuple[str, int]] = {
    "aws_lambda_function": ("function_name", 64),
    "aws_iam_role": ("name", 64),
    "aws_iam_role_policy": ("name", 128),
    "aws_cloudwatch_event_rule": ("name", 64),
    "aws_sqs_queue": ("name", 80),
    "aws_sns_topic": ("name", 256),
    "aws_kms_alias": ("name", 256),
    "aws_cloudwatch_metric_alarm": ("alarm_name", 255),
    "aws_cloudwatch_dashboard": ("dashboard_name", 255),
    "aws_cloudwatch_log_group": ("name", 512),
    "aws_sfn_state_machine": ("name", 80),
}


def test_the_longest_names_allowed_plan_and_every_derived_name_fits(
    deployment: Deployment, tmp_path: Path
):
    # GIVEN the longest function name the validation allows (55), a table name of
    # DynamoDB's maximum (255), a schedule and a deletion guard of 40 %
    function = f"kvsync-{SUFFIX}-".ljust(55, "x")
    table = f"t{SUFFIX}.".ljust(255, "y")
    tf = deployment.tf.fork(tmp_path / "long")
    tf.write_vars(
        {
            "lambda_package_path": deployment.package_path,
            "lambda_function_name": function,
            "dynamodb_table_name": table,
            "sync_schedule_expression": "rate(1 day)",
            "max_delete_percent": 40,
        }
    )

    # WHEN the stack is planned
    plan = tf.plan()

    # THEN it plans, and every name made from the function's fits its service
    after = {c["address"]: c["change"]["after"] for c in plan["resource_changes"]}
    named: set[str] = set()
    for change in plan["resource_changes"]:
        if change["mode"] == "managed" and change["type"] in NAME_LIMITS:
            attribute, limit = NAME_LIMITS[change["type"]]
            name = change["change"]["after"][attribute]
            assert len(name) <= limit, (change["address"], len(name), limit)
            named.add(change["type"])
    assert named == set(NAME_LIMITS)
    assert after["aws_cloudwatch_event_rule.schedule[0]"]["name"] == f"{function}-schedule"
    assert len(f"{function}-schedule") == 64
    # AND the function's description is cut to Lambda's 256 characters
    function_after = after["aws_lambda_function.sync"]
    description = function_after["description"]
    assert len(description) == 256
    assert description.startswith(f"Copies Cloudflare Workers KV entries into the {table[:100]}")
    # AND the deletion guard reaches the function's environment
    assert function_after["environment"][0]["variables"]["MAX_DELETE_PERCENT"] == "40"


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
        "sync_schedule_input accepts only the fields key_name, key_names, prefix, all,",
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
    """The event the schedule sends the function for a one-key ``sync_schedule_input``."""
    return {"detail-type": "Scheduled Event", "source": "aws.events", "detail": detail}


def is_multi_key(schedule_input: dict[str, Any]) -> bool:
    """Whether the schedule starts a state machine execution (else it invokes the function)."""
    return any(field in schedule_input for field in ("key_names", "prefix", "all"))


def target_input(schedule_input: dict[str, Any]) -> dict[str, Any]:
    """What the schedule's target gets: an execution's input is the selector itself."""
    return schedule_input if is_multi_key(schedule_input) else scheduled_event(schedule_input)


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
        expected = json.dumps(json.dumps(target_input(schedule_input)))
        condition = f"jsondecode({sent}) == jsondecode({expected})"
        # a state machine execution, started with the schedule's role; or the function,
        # invoked under its resource policy
        machine = int(is_multi_key(schedule_input))
        target = (
            f"length(aws_iam_role.schedule) == {machine}"
            f" && length(aws_lambda_permission.schedule) == {1 - machine}"
        )
        blocks.append(
            f'run "shape_{index}" {{\n'
            "  command = plan\n"
            f"  variables {{\n    sync_schedule_input = {json.dumps(schedule_input)}\n  }}\n"
            f"  assert {{\n    condition     = {condition}\n"
            f"    error_message = {json.dumps('wrong input for ' + json.dumps(schedule_input))}\n  }}\n"
            f"  assert {{\n    condition     = {target}\n"
            f"    error_message = {json.dumps('wrong target for ' + json.dumps(schedule_input))}\n  }}\n"
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
        # what the target sends, as the function's own event parser reads it (the
        # state machine invokes the function with the selector, directly)
        request = events.parse_event(
            target_input(schedule_input), "redirect-all-users-to-essentials"
        )
        assert request.selector() == selector
        expected = Trigger.DIRECT if is_multi_key(schedule_input) else Trigger.SCHEDULE
        assert request.trigger is expected
        assert request.delete_missing == schedule_input.get("delete_missing")


# Too long for EventBridge, though the function would take it.
TOO_LONG_INPUT = {"key_names": [f"key-{i:04}" for i in range(900)]}
BAD_SCHEDULE_INPUTS: list[tuple[Any, str]] = [
    ("flags/", "sync_schedule_input must be an object"),
    (["a"], "sync_schedule_input must be an object"),
    ({"keys": "a,b"}, "accepts only the fields key_name, key_names, prefix, all,"),
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
    ({"delete_missing": "yes"}, "delete_missing, dry_run and force_delete must be true or false"),
    ({"dry_run": "yes"}, "delete_missing, dry_run and force_delete must be true or false"),
]


def test_bad_schedule_inputs_fail_validation_and_the_function_rejects_them_too(
    cli_config: Path, tmp_path: Path
):
    """Each bad input on its own, planned with terraform/variables.tf alone.

    The validations need no provider, so each plan takes a fraction of a second;
    the full stack's plan reports the same messages (test_bad_variable_values...).
    """
    tf = variables_only(cli_config, tmp_path / "variables")
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


def variables_only(cli_config: Path, workdir: Path) -> Terraform:
    """terraform/variables.tf alone: its validations plan in a fraction of a second."""
    tf = Terraform.prepare(workdir, cli_config)
    for path in tf.workdir.glob("*.tf"):
        if path.name != "variables.tf":
            path.unlink()
    return tf


# (variables, the message of the validation that refuses them; None: accepted)
VARIABLE_CASES: list[tuple[dict[str, Any], str | None]] = [
    ({"lambda_function_name": "f" * 56}, "lambda_function_name must be 1 to 55 letters"),
    ({"lambda_function_name": "f" * 55}, None),
    ({"lambda_function_name": "bad.name"}, "lambda_function_name must be 1 to 55 letters"),
    ({"max_delete_percent": -1}, "max_delete_percent must be a whole number from 0 to 100"),
    ({"max_delete_percent": 101}, "max_delete_percent must be a whole number from 0 to 100"),
    ({"max_delete_percent": 12.5}, "max_delete_percent must be a whole number from 0 to 100"),
    ({"max_delete_percent": 0}, None),
    ({"max_delete_percent": 100}, None),
    ({"error_rate_threshold": 0}, "error_rate_threshold"),
]


def test_name_length_and_deletion_guard_validations(cli_config: Path, tmp_path: Path):
    tf = variables_only(cli_config, tmp_path / "validations")
    for index, (variables, expected) in enumerate(VARIABLE_CASES):
        # GIVEN one set of values
        name = f"case{index}.tfvars.json"
        tf.write_vars(variables, name=name)

        # WHEN they are planned
        result = tf.run("plan", "-input=false", f"-var-file={name}", check=False)

        # THEN a refused value fails with its validation's message, an accepted one plans
        messages = " ".join(result.stderr.split())
        if expected is None:
            assert result.returncode == 0, (variables, messages[-2000:])
        else:
            assert result.returncode != 0, variables
            assert expected in messages, (variables, expected, messages[-2000:])
    # the 55 of the validation: "<name>-schedule", the longest name made from it,
    # must fit EventBridge's 64
    assert len("f" * 55 + "-schedule") == 64


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


def test_reader_policy_output_lets_consumers_only_read_the_table(deployment: Deployment):
    # GIVEN the applied stack (AWS managed keys)
    policy = json.loads(deployment.outputs["reader_policy_json"])

    # THEN the readers' policy is one statement: the three read calls, on the table only
    [statement] = policy["Statement"]
    assert statement["Effect"] == "Allow"
    actions = (
        statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    )
    assert sorted(actions) == ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:Query"]
    assert statement["Resource"] == deployment.outputs["dynamodb_table_arn"]
    # AND IAM accepts it on a consumer role as the document shows
    iam = deployment.client("iam")
    iam.create_role(
        RoleName="kv-mirror-consumer",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    iam.put_role_policy(
        RoleName="kv-mirror-consumer",
        PolicyName="kv-mirror-reader",
        PolicyDocument=deployment.outputs["reader_policy_json"],
    )
    stored = iam.get_role_policy(RoleName="kv-mirror-consumer", PolicyName="kv-mirror-reader")
    assert stored["PolicyDocument"] == policy
    iam.delete_role_policy(RoleName="kv-mirror-consumer", PolicyName="kv-mirror-reader")
    iam.delete_role(RoleName="kv-mirror-consumer")


def test_zz_destroy_leaves_nothing_behind(deployment: Deployment):
    alerts_key = deployment.resources["aws_kms_key.alerts[0]"]["key_id"]
    machine = deployment.outputs["state_machine_arn"]

    deployment.destroy()

    assert deployment.tf.show_json().get("values") is None
    missing: dict[str, Callable[[Any], Any]] = {
        "dynamodb": lambda c: c.describe_table(TableName=TABLE),
        "secretsmanager": lambda c: c.describe_secret(SecretId=SECRET),
        "lambda": lambda c: c.get_function(FunctionName=FUNCTION),
        "iam": lambda c: c.get_role(RoleName=f"{FUNCTION}-role"),
        "sqs": lambda c: c.get_queue_url(QueueName=f"{FUNCTION}-failures"),
        "events": lambda c: c.describe_rule(Name=f"{FUNCTION}-schedule"),
        "stepfunctions": lambda c: c.describe_state_machine(stateMachineArn=machine),
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
