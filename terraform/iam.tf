data "aws_iam_policy_document" "lambda_assume_role" {
  statement {
    sid     = "LambdaAssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "lambda" {
  name               = "${var.lambda_function_name}-role"
  description        = "Execution role of the ${var.lambda_function_name} Lambda function."
  assume_role_policy = data.aws_iam_policy_document.lambda_assume_role.json
}

# Exactly what the code calls, each on its own resource. tests/terraform checks the
# DynamoDB actions against the calls a real sync makes.
data "aws_iam_policy_document" "lambda" {
  statement {
    sid       = "WriteOwnLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.lambda.arn}:log-stream:*"]
  }

  statement {
    sid       = "ReadCloudflareSecret"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.cloudflare.arn]
  }

  statement {
    sid       = "ReadWriteKvRecords"
    effect    = "Allow"
    actions   = [for op in local.dynamodb_operations : "dynamodb:${op}"]
    resources = [aws_dynamodb_table.kv_data.arn]
  }

  statement {
    sid       = "SendFailedAsyncEvents"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.failures.arn]
  }

  # X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level
  # permissions: AWS requires "*" for them.
  statement {
    sid       = "WriteTraces"
    effect    = "Allow"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }

  # With a customer-managed key: Decrypt to read the secret; GenerateDataKey and
  # Decrypt to send to the SSE-KMS failure queue; only through those two services.
  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "UseCustomerManagedKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${var.aws_region}.amazonaws.com", "sqs.${var.aws_region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "lambda" {
  name   = "${var.lambda_function_name}-policy"
  role   = aws_iam_role.lambda.id
  policy = data.aws_iam_policy_document.lambda.json
}
