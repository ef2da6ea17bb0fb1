provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge(var.tags, {
      project     = var.project
      environment = var.environment
    })
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # The function's ARN, built from its name: the unqualified ARN the state machine
  # invokes and its role may invoke (stepfunctions.tf), known at plan time.
  function_arn = "arn:${local.partition}:lambda:${var.aws_region}:${local.account_id}:function:${var.lambda_function_name}"

  # The Lambda runtime writes to /aws/lambda/<function name>; Terraform creates the
  # group first so that it owns the retention and the encryption.
  log_group_name = "/aws/lambda/${var.lambda_function_name}"

  # The DynamoDB operations the function's code calls (lambda_function/kv_sync/store.py):
  #   PutItem       new and changed records, conditional on the stored version being older
  #   UpdateItem    ttl extensions of unchanged records
  #   DeleteItem    conditional deletes of records whose key is gone (delete_missing)
  #   BatchGetItem  stored versions of up to 100 named keys (key_name, key_names)
  #   Query         stored versions of a listed key range (prefix, all)
  # and, beside the records (lambda_function/kv_sync/ledger.py), a multi-key run's lease
  # (#LEASE: PutItem to take, UpdateItem to extend, DeleteItem to release, Query to read
  # the holder's) and its pending deletions (#RUN#...: PutItem, Query, DeleteItem).
  # The IAM policy grants exactly these (tests/terraform keeps them in step with the
  # calls a real sync makes) and the DynamoDB alarms watch the same operations.
  dynamodb_operations = ["PutItem", "UpdateItem", "DeleteItem", "BatchGetItem", "Query"]

  # Customer-managed key for the SNS topic: the caller's, or a dedicated one. The
  # AWS managed key alias/aws/sns cannot be used here, because its key policy does
  # not let CloudWatch alarms publish to the topic.
  alerts_kms_key_arn = var.kms_key_arn != null ? var.kms_key_arn : one(aws_kms_key.alerts[*].arn)

  # Environment of the function: every variable the code reads (ENV_VARS in
  # lambda_function/kv_sync/settings.py) plus the Powertools settings.
  lambda_environment = {
    DYNAMODB_TABLE_NAME          = aws_dynamodb_table.kv_data.name
    SECRETS_MANAGER_SECRET_NAME  = aws_secretsmanager_secret.cloudflare.name
    SECRET_CACHE_SECONDS         = tostring(var.secret_cache_seconds)
    CLOUDFLARE_API_BASE_URL      = var.cloudflare_api_base_url
    DEFAULT_KEY_NAME             = var.default_key_name
    RETRY_MAX_ATTEMPTS           = tostring(var.retry_max_attempts)
    API_TIMEOUT_SECONDS          = tostring(var.api_timeout_seconds)
    RECORD_TTL_DAYS              = tostring(var.record_ttl_days)
    POWERTOOLS_SERVICE_NAME      = var.service_name
    POWERTOOLS_METRICS_NAMESPACE = var.metrics_namespace
    POWERTOOLS_LOG_LEVEL         = var.log_level

    # Multi-key sync. The role may always delete records (an event can ask for it
    # with "delete_missing": true); it never invokes the function: a run longer than
    # one invocation is continued by its caller with next_cursor, or by the state
    # machine (stepfunctions.tf).
    CLOUDFLARE_REQUESTS_PER_5_MINUTES = tostring(var.cloudflare_requests_per_5_minutes)
    DELETE_MISSING                    = tostring(var.delete_missing)
    MAX_DELETE_PERCENT                = tostring(var.max_delete_percent)
  }
}
