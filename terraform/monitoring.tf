################################################################################
# Alarm topic
################################################################################

# CloudWatch alarms cannot publish to a topic encrypted with the AWS managed key
# alias/aws/sns (its key policy does not admit CloudWatch), so without a
# kms_key_arn the topic gets a small key of its own.
data "aws_iam_policy_document" "alerts_key" {
  count = var.kms_key_arn == null ? 1 : 0

  # The account keeps full control of its key (AWS's default key policy); IAM
  # policies decide who in the account may use it. In a key policy "*" means
  # this key.
  statement {
    sid       = "AccountAdministersKey"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchAlarmsPublishToEncryptedTopic"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    # Only CloudWatch acting for this account (the confused-deputy guard).
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_kms_key" "alerts" {
  count = var.kms_key_arn == null ? 1 : 0

  description             = "Encrypts the ${var.lambda_function_name} alarm topic."
  deletion_window_in_days = 7
  enable_key_rotation     = true
  policy                  = data.aws_iam_policy_document.alerts_key[0].json
}

resource "aws_kms_alias" "alerts" {
  count = var.kms_key_arn == null ? 1 : 0

  name          = "alias/${var.lambda_function_name}-alerts"
  target_key_id = aws_kms_key.alerts[0].key_id
}

resource "aws_sns_topic" "alerts" {
  name              = "${var.lambda_function_name}-alerts"
  kms_master_key_id = local.alerts_kms_key_arn
}

resource "aws_sns_topic_subscription" "alert_email" {
  count = var.alert_email == "" ? 0 : 1

  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = var.alert_email
}

################################################################################
# Alarms
################################################################################

locals {
  alarm_actions = [aws_sns_topic.alerts.arn]
}

resource "aws_cloudwatch_metric_alarm" "lambda_errors" {
  alarm_name          = "${var.lambda_function_name}-errors"
  alarm_description   = "${var.lambda_function_name} failed ${var.error_rate_threshold} or more invocations within 5 minutes: failed scheduled runs (every error type raises there), timeouts, crashes."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.sync.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.error_rate_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "lambda_duration" {
  alarm_name          = "${var.lambda_function_name}-duration"
  alarm_description   = "An invocation of ${var.lambda_function_name} ran longer than ${var.duration_threshold_ms} ms (timeout ${var.lambda_timeout} s)."
  namespace           = "AWS/Lambda"
  metric_name         = "Duration"
  dimensions          = { FunctionName = aws_lambda_function.sync.function_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.duration_threshold_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "lambda_throttles" {
  alarm_name          = "${var.lambda_function_name}-throttles"
  alarm_description   = "Lambda throttled invocations of ${var.lambda_function_name} (concurrency limit or reserved_concurrency reached)."
  namespace           = "AWS/Lambda"
  metric_name         = "Throttles"
  dimensions          = { FunctionName = aws_lambda_function.sync.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# Every critical error type (severity "critical" in the function's errors) needs a
# human, whatever the trigger: one failure raises its alarm.
locals {
  critical_errors = {
    auth-errors = {
      type        = "AUTH_ERROR"
      description = "Cloudflare rejected the API token of ${var.lambda_function_name}, even after a re-read of the secret. Put a valid token in secret ${var.cloudflare_secret_name}."
    }
    configuration-errors = {
      type        = "CONFIGURATION_ERROR"
      description = "${var.lambda_function_name} is misconfigured: the secret ${var.cloudflare_secret_name} is empty or incomplete, a variable is out of range, or the table or namespace is wrong. The log line \"Sync failed\" names it."
    }
    internal-errors = {
      type        = "INTERNAL_ERROR"
      description = "${var.lambda_function_name} failed unexpectedly (a bug); the log line \"Unexpected failure\" holds the stack trace."
    }
    deletion-refused = {
      type        = "DELETION_REFUSED"
      description = "The deletion guard stopped a run of ${var.lambda_function_name} that would delete more than ${var.max_delete_percent} % of its selection's records, or all of them. Nothing was deleted; see DEPLOYMENT.md, Recovering from a refused deletion."
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "critical_errors" {
  for_each = local.critical_errors

  alarm_name          = "${var.lambda_function_name}-${each.key}"
  alarm_description   = "${each.value.description} (SyncFailed, ErrorType ${each.value.type})"
  namespace           = var.metrics_namespace
  metric_name         = "SyncFailed"
  dimensions          = { service = var.service_name, ErrorType = each.value.type }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

moved {
  from = aws_cloudwatch_metric_alarm.auth_errors
  to   = aws_cloudwatch_metric_alarm.critical_errors["auth-errors"]
}

# A multi-key run that completes with some keys failed does not raise (its retries
# would repeat the whole run): those keys are counted in RecordsFailed instead.
resource "aws_cloudwatch_metric_alarm" "records_failed" {
  alarm_name          = "${var.lambda_function_name}-records-failed"
  alarm_description   = "Keys of a multi-key run of ${var.lambda_function_name} failed (RecordsFailed); the run's reply and its log line list them with their error types."
  namespace           = var.metrics_namespace
  metric_name         = "RecordsFailed"
  dimensions          = { service = var.service_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# DynamoDB publishes ThrottledRequests and SystemErrors per operation: the alarms
# add up the operations the function calls.
locals {
  # One alarm per DynamoDB metric, each summing the operations the function calls.
  dynamodb_alarms = {
    throttles = {
      metric      = "ThrottledRequests"
      description = "DynamoDB throttled requests of ${var.lambda_function_name} to table ${var.dynamodb_table_name}."
    }
    system-errors = {
      metric      = "SystemErrors"
      description = "DynamoDB answered requests of ${var.lambda_function_name} to table ${var.dynamodb_table_name} with HTTP 500."
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "dynamodb" {
  for_each = local.dynamodb_alarms

  alarm_name          = "${var.lambda_function_name}-dynamodb-${each.key}"
  alarm_description   = each.value.description
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions

  metric_query {
    id          = "total"
    expression  = join(" + ", [for i, op in local.dynamodb_operations : "FILL(m${i}, 0)"])
    label       = each.value.metric
    return_data = true
  }

  dynamic "metric_query" {
    for_each = local.dynamodb_operations

    content {
      id = "m${metric_query.key}"

      metric {
        namespace   = "AWS/DynamoDB"
        metric_name = each.value.metric
        dimensions  = { TableName = aws_dynamodb_table.kv_data.name, Operation = metric_query.value }
        stat        = "Sum"
        period      = 300
      }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "failure_queue_depth" {
  alarm_name          = "${var.lambda_function_name}-failure-queue-depth"
  alarm_description   = "Asynchronous invocations of ${var.lambda_function_name} failed after all retries and wait in queue ${aws_sqs_queue.failures.name}."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.failures.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

################################################################################
# Dashboard
################################################################################

locals {
  dashboard_name = var.lambda_function_name
  fn             = aws_lambda_function.sync.function_name
  table          = aws_dynamodb_table.kv_data.name
  custom_dims    = ["service", var.service_name]

  dashboard_widgets = [
    {
      type   = "alarm"
      x      = 0
      y      = 0
      width  = 24
      height = 3
      properties = {
        title = "Alarms"
        alarms = concat(
          [
            aws_cloudwatch_metric_alarm.lambda_errors.arn,
            aws_cloudwatch_metric_alarm.lambda_duration.arn,
            aws_cloudwatch_metric_alarm.lambda_throttles.arn,
            aws_cloudwatch_metric_alarm.records_failed.arn,
            aws_cloudwatch_metric_alarm.failure_queue_depth.arn,
          ],
          [for alarm in aws_cloudwatch_metric_alarm.critical_errors : alarm.arn],
          [for alarm in aws_cloudwatch_metric_alarm.dynamodb : alarm.arn],
          [for alarm in aws_cloudwatch_metric_alarm.state_machine : alarm.arn],
        )
      }
    },
    {
      type   = "metric"
      x      = 0
      y      = 3
      width  = 8
      height = 6
      properties = {
        title  = "Lambda invocations, errors, throttles"
        region = var.aws_region
        view   = "timeSeries"
        stat   = "Sum"
        period = 300
        metrics = [
          ["AWS/Lambda", "Invocations", "FunctionName", local.fn],
          ["AWS/Lambda", "Errors", "FunctionName", local.fn],
          ["AWS/Lambda", "Throttles", "FunctionName", local.fn],
        ]
      }
    },
    {
      type   = "metric"
      x      = 8
      y      = 3
      width  = 8
      height = 6
      properties = {
        title  = "Lambda duration (ms)"
        region = var.aws_region
        view   = "timeSeries"
        period = 300
        metrics = [
          ["AWS/Lambda", "Duration", "FunctionName", local.fn, { stat = "Average" }],
          ["AWS/Lambda", "Duration", "FunctionName", local.fn, { stat = "p99" }],
          ["AWS/Lambda", "Duration", "FunctionName", local.fn, { stat = "Maximum" }],
        ]
        annotations = {
          horizontal = [{ label = "alarm", value = var.duration_threshold_ms }]
        }
      }
    },
    {
      type   = "metric"
      x      = 16
      y      = 3
      width  = 8
      height = 6
      properties = {
        title  = "Lambda concurrency"
        region = var.aws_region
        view   = "timeSeries"
        stat   = "Maximum"
        period = 60
        metrics = [
          ["AWS/Lambda", "ConcurrentExecutions", "FunctionName", local.fn],
        ]
      }
    },
    {
      type   = "metric"
      x      = 0
      y      = 9
      width  = 8
      height = 6
      properties = {
        title  = "Syncs: succeeded and failed by error type"
        region = var.aws_region
        view   = "timeSeries"
        stat   = "Sum"
        period = 300
        metrics = [
          concat([var.metrics_namespace, "SyncSucceeded"], local.custom_dims),
          [{ expression = "SEARCH('{${var.metrics_namespace},ErrorType,service} MetricName=\"SyncFailed\" service=\"${var.service_name}\"', 'Sum', 300)", id = "failed", label = "SyncFailed" }],
        ]
      }
    },
    {
      type   = "metric"
      x      = 8
      y      = 9
      width  = 8
      height = 6
      properties = {
        title  = "Cloudflare API calls and retries, DynamoDB writes, cold starts"
        region = var.aws_region
        view   = "timeSeries"
        stat   = "Sum"
        period = 300
        metrics = [
          concat([var.metrics_namespace, "CloudflareApiCalls"], local.custom_dims),
          concat([var.metrics_namespace, "CloudflareRetries"], local.custom_dims),
          concat([var.metrics_namespace, "DynamoDBWrites"], local.custom_dims),
          [var.metrics_namespace, "ColdStart", "function_name", local.fn, "service", var.service_name],
        ]
      }
    },
    {
      type   = "metric"
      x      = 16
      y      = 9
      width  = 8
      height = 6
      properties = {
        title  = "Value size (bytes)"
        region = var.aws_region
        view   = "timeSeries"
        period = 300
        metrics = [
          concat([var.metrics_namespace, "ValueBytes"], local.custom_dims, [{ stat = "Average" }]),
          concat([var.metrics_namespace, "ValueBytes"], local.custom_dims, [{ stat = "Maximum" }]),
        ]
      }
    },
    {
      type   = "metric"
      x      = 0
      y      = 15
      width  = 8
      height = 6
      properties = {
        title  = "DynamoDB consumed capacity"
        region = var.aws_region
        view   = "timeSeries"
        stat   = "Sum"
        period = 300
        metrics = [
          ["AWS/DynamoDB", "ConsumedWriteCapacityUnits", "TableName", local.table],
          ["AWS/DynamoDB", "ConsumedReadCapacityUnits", "TableName", local.table],
        ]
      }
    },
    {
      type   = "metric"
      x      = 8
      y      = 15
      width  = 8
      height = 6
      properties = {
        title  = "DynamoDB throttles and system errors"
        region = var.aws_region
        view   = "timeSeries"
        stat   = "Sum"
        period = 300
        metrics = concat(
          [for op in local.dynamodb_operations : ["AWS/DynamoDB", "ThrottledRequests", "TableName", local.table, "Operation", op]],
          [for op in local.dynamodb_operations : ["AWS/DynamoDB", "SystemErrors", "TableName", local.table, "Operation", op]],
          [
            ["AWS/DynamoDB", "WriteThrottleEvents", "TableName", local.table],
            ["AWS/DynamoDB", "ReadThrottleEvents", "TableName", local.table],
          ],
        )
      }
    },
    {
      type   = "metric"
      x      = 16
      y      = 15
      width  = 8
      height = 6
      properties = {
        title  = "Failure queue depth"
        region = var.aws_region
        view   = "timeSeries"
        stat   = "Maximum"
        period = 300
        metrics = [
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.failures.name],
        ]
      }
    },
    {
      type   = "metric"
      x      = 0
      y      = 21
      width  = 24
      height = 6
      properties = {
        title  = "Multi-key runs: records written, unchanged, deleted and failed"
        region = var.aws_region
        view   = "timeSeries"
        stat   = "Sum"
        period = 300
        metrics = [
          concat([var.metrics_namespace, "RecordsWritten"], local.custom_dims),
          concat([var.metrics_namespace, "RecordsUnchanged"], local.custom_dims),
          concat([var.metrics_namespace, "RecordsDeleted"], local.custom_dims),
          concat([var.metrics_namespace, "RecordsFailed"], local.custom_dims),
        ]
      }
    },
    {
      type   = "log"
      x      = 0
      y      = 27
      width  = 24
      height = 8
      properties = {
        title  = "Recent errors"
        region = var.aws_region
        view   = "table"
        query  = "SOURCE '${aws_cloudwatch_log_group.lambda.name}' | fields @timestamp, level, message, key_name, error_type, reason, exception_name, function_request_id | filter level = 'ERROR' or level = 'CRITICAL' or @message like /Task timed out/ | sort @timestamp desc | limit 50"
      }
    },
    {
      type   = "metric"
      x      = 0
      y      = 35
      width  = 24
      height = 6
      properties = {
        title  = "Multi-key runs (state machine executions): started, succeeded, failed, timed out, stopped"
        region = var.aws_region
        view   = "timeSeries"
        stat   = "Sum"
        period = 300
        metrics = [
          for metric in ["ExecutionsStarted", "ExecutionsSucceeded", "ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"] :
          ["AWS/States", metric, "StateMachineArn", aws_sfn_state_machine.sync.arn]
        ]
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "sync" {
  dashboard_name = local.dashboard_name
  dashboard_body = jsonencode({ widgets = local.dashboard_widgets })
}
