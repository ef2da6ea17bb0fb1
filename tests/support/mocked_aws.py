"""The AWS side of in-process tests: moto with the table and the secret Terraform creates."""

from __future__ import annotations

import json
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from moto import mock_aws

from local import aws_setup
from tests.support.cloudflare import SECRET, SECRET_VALUE, TABLE

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pytest


@contextmanager
def function_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto with the table and the secret (filled in); yields the tests' DynamoDB client,
    to look at what the function stored."""
    # moto makes a fresh RSA key for the table's KMS encryption (most of the
    # set-up's time); one key serves every test as well.
    monkeypatch.setattr("moto.kms.models.generate_private_key", _kms_private_key, raising=False)
    with mock_aws():
        dynamodb = _test_client("dynamodb")
        aws_setup.create_table(dynamodb, TABLE, point_in_time_recovery=False)
        _test_client("secretsmanager").create_secret(
            Name=SECRET, SecretString=json.dumps(SECRET_VALUE)
        )
        yield dynamodb


@cache
def _test_client(service: str) -> Any:
    """The tests' own client of a service (moto intercepts clients made before it starts)."""
    return boto3.client(service)


@cache
def _kms_private_key(key_spec: str) -> Any:
    from moto.kms.utils import generate_private_key

    return generate_private_key(key_spec)
