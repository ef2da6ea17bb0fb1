resource "aws_cloudwatch_log_group" "lambda" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (default 14): operational logs that never hold the token or KV values (only sizes and hashes). Raise it where an audit policy requires a year.
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_lambda_function" "sync" {
  #checkov:skip=CKV_AWS_116:Failed asynchronous invocations go to an on-failure destination (aws_lambda_function_event_invoke_config below, an encrypted SQS queue), the successor of a DLQ that also records the error and request context.
  #checkov:skip=CKV_AWS_117:The function reaches only the public Cloudflare API and public AWS endpoints; it has no private resource to reach, and a VPC would add NAT gateways and cost without isolating anything.
  #checkov:skip=CKV_AWS_272:Deployed from a local zip that build_lambda.sh builds reproducibly and source_code_hash pins; Lambda code signing needs an AWS Signer profile and signed S3 objects, which this deployment does not use.
  function_name = var.lambda_function_name
  # Lambda allows 256 characters; table names may have 255.
  description = substr("Copies Cloudflare Workers KV entries into the ${var.dynamodb_table_name} DynamoDB table.", 0, 256)
  role        = aws_iam_role.lambda.arn

  handler       = "kv_sync.handler.lambda_handler"
  runtime       = var.lambda_runtime
  architectures = [var.lambda_architecture]
  memory_size   = var.lambda_memory_size
  timeout       = var.lambda_timeout

  filename         = var.lambda_package_path
  source_code_hash = filebase64sha256(var.lambda_package_path)

  reserved_concurrent_executions = var.reserved_concurrency == null ? -1 : var.reserved_concurrency
  kms_key_arn                    = var.kms_key_arn

  environment {
    variables = local.lambda_environment
  }

  tracing_config {
    mode = "Active"
  }

  # The log group and the permissions exist before the first invocation can log.
  depends_on = [
    aws_cloudwatch_log_group.lambda,
    aws_iam_role_policy.lambda,
  ]

  lifecycle {
    precondition {
      condition     = var.api_timeout_seconds < var.lambda_timeout
      error_message = "api_timeout_seconds must be shorter than lambda_timeout, or no Cloudflare request can finish within an invocation."
    }

    precondition {
      # A key ARN's fourth field is its Region; services use only keys of their own Region.
      condition     = var.kms_key_arn == null || try(split(":", var.kms_key_arn)[3], "") == var.aws_region
      error_message = "kms_key_arn names a key in another Region; the table, secret, queue, topic and logs of ${var.aws_region} need a key of ${var.aws_region}."
    }

    precondition {
      condition     = var.duration_threshold_ms < var.lambda_timeout * 1000
      error_message = "duration_threshold_ms must be below lambda_timeout (in milliseconds), or the duration alarm can never fire before the timeout does."
    }
  }
}

################################################################################
# Asynchronous invocations: retries and the failure queue
################################################################################

resource "aws_sqs_queue" "failures" {
  name                      = "${var.lambda_function_name}-failures"
  message_retention_seconds = 1209600 # 14 days, the SQS maximum

  # SSE-KMS with the customer-managed key when given, otherwise SSE-SQS.
  kms_master_key_id       = var.kms_key_arn
  sqs_managed_sse_enabled = var.kms_key_arn == null ? true : null
}

resource "aws_lambda_function_event_invoke_config" "sync" {
  function_name                = aws_lambda_function.sync.function_name
  maximum_retry_attempts       = var.async_max_retry_attempts
  maximum_event_age_in_seconds = var.async_max_event_age_seconds

  destination_config {
    on_failure {
      destination = aws_sqs_queue.failures.arn
    }
  }
}

################################################################################
# Function URL (IAM-authenticated only)
################################################################################

resource "aws_lambda_function_url" "sync" {
  function_name      = aws_lambda_function.sync.function_name
  authorization_type = "AWS_IAM"
}

# Since October 2025 a Function URL caller needs both lambda:InvokeFunctionUrl and
# lambda:InvokeFunction. Same-account callers get both from their own identity
# policy (DEPLOYMENT.md); the principals listed here get both from the function's
# resource policy.
resource "aws_lambda_permission" "function_url" {
  for_each = toset(var.function_url_allowed_principals)

  statement_id           = "FunctionUrl-${substr(sha256(each.value), 0, 16)}"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.sync.function_name
  principal              = each.value
  function_url_auth_type = "AWS_IAM"
}

resource "aws_lambda_permission" "function_url_invoke" {
  for_each = toset(var.function_url_allowed_principals)

  statement_id  = "FunctionUrlInvoke-${substr(sha256(each.value), 0, 16)}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.sync.function_name
  principal     = each.value
}
