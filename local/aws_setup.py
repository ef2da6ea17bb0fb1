"""Create the AWS resources of the stack the way Terraform does, for local runs.

``make demo``, the local runner's tests and integration tests use these helpers
against moto server (or LocalStack), so the function meets the same table and
secret it meets once deployed. The settings mirror ``terraform/dynamodb.tf`` and
``terraform/secrets.tf`` with the defaults of ``terraform/variables.tf``; change
them together.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

# Defaults of terraform/variables.tf.
TABLE_NAME = "cloudflare-kv-data"
SECRET_NAME = "cloudflare-kv-credentials"
FUNCTION_NAME = "cloudflare-data-sync"
TIMEOUT_SECONDS = 300
MEMORY_MB = 512
TTL_ATTRIBUTE = "ttl"
SECRET_FIELDS = ("api_token", "account_id", "kv_namespace_id", "kv_namespace")


def create_table(
    dynamodb: Any,
    table_name: str = TABLE_NAME,
    *,
    point_in_time_recovery: bool = True,
) -> None:
    """Create the records table as ``aws_dynamodb_table.kv_data`` does and wait for it.

    On-demand billing, ``pk``/``sk`` string keys, TTL on ``ttl``, encryption at
    rest with the AWS managed key, point-in-time recovery (Terraform's default).

    Parameters
    ----------
    dynamodb
        A boto3 DynamoDB client.
    table_name
        The table's name (Terraform's ``dynamodb_table_name``).
    point_in_time_recovery
        Terraform's ``enable_point_in_time_recovery``.
    """
    dynamodb.create_table(
        TableName=table_name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        # Terraform's server_side_encryption { enabled = true } without a key ARN.
        SSESpecification={"Enabled": True, "SSEType": "KMS"},
        DeletionProtectionEnabled=False,
    )
    dynamodb.get_waiter("table_exists").wait(
        TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    dynamodb.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )
    if point_in_time_recovery:
        dynamodb.update_continuous_backups(
            TableName=table_name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
        )


def create_secret(secretsmanager: Any, secret_name: str = SECRET_NAME) -> str:
    """Create the credentials secret without a value, as Terraform does; return its ARN.

    Terraform never holds the token: operators put the value afterwards with
    ``put_secret_value`` (see :func:`put_credentials`).
    """
    response = secretsmanager.create_secret(
        Name=secret_name,
        Description=(
            "Cloudflare API credentials for kv-sync: JSON "
            '{"api_token", "account_id", "kv_namespace_id", "kv_namespace"}.'
        ),
    )
    arn: str = response["ARN"]
    return arn


def credentials_json(
    *, api_token: str, account_id: str, kv_namespace_id: str, kv_namespace: str
) -> str:
    """The secret's JSON value, with exactly the fields the function reads."""
    return json.dumps(
        {
            "api_token": api_token,
            "account_id": account_id,
            "kv_namespace_id": kv_namespace_id,
            "kv_namespace": kv_namespace,
        }
    )


def put_credentials(
    secretsmanager: Any, credentials: Mapping[str, str], secret_name: str = SECRET_NAME
) -> None:
    """Put the credentials JSON, as the operator does with ``put-secret-value``.

    Raises
    ------
    ValueError
        A field is missing; the message names fields, never values.
    """
    missing = [name for name in SECRET_FIELDS if not credentials.get(name)]
    if missing:
        raise ValueError(f"credentials lack fields: {', '.join(missing)}")
    secretsmanager.put_secret_value(
        SecretId=secret_name,
        SecretString=credentials_json(**{name: credentials[name] for name in SECRET_FIELDS}),
    )
