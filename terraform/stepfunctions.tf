################################################################################
# Multi-key runs on Step Functions
################################################################################

# One execution runs one multi-key sync (key_names, prefix or all) to completion. Its
# input is the selector exactly as `aws lambda invoke` takes it, e.g.
# {"all": true, "delete_missing": true}. Each step invokes the function directly, so the
# function answers with its response document and never raises; the Choice states Check
# and, for an error document, Failed read it:
#
#   error CONFLICT                 another run holds the namespace's lease: fail at once
#   error, is_retryable            wait state_machine_retry_delays_seconds[attempt], then
#                                  invoke again from the document's statistics.next_cursor
#                                  (a run resumed after a failed page deletes nothing)
#   any other error                fail with the error's type and message
#   statistics.complete            succeed; the output is the last document
#   statistics.next_cursor         invoke again with the selector plus that cursor
#
# Lambda's own service errors and throttles are retried by the Task's Retry; any other
# failure of an invocation (a crash, the function's timeout) ends the execution with
# Lambda's error name and cause.
locals {
  state_machine_name = "${var.lambda_function_name}-multi-key"

  # The document of the last invocation, as the Task stores it (ResultPath).
  step = "$.step.document"

  # Errors of the Lambda service itself, retried by the Task (AWS's recommended set).
  lambda_service_errors = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
  ]

  state_machine_definition = jsonencode({
    Comment        = "Runs one multi-key sync of ${var.lambda_function_name} to completion: invokes the function with the selector, then with each next_cursor until the run is complete."
    StartAt        = "ReadSelector"
    TimeoutSeconds = var.state_machine_timeout_seconds
    States = {
      ReadSelector = {
        Type = "Pass"
        Parameters = {
          "selector.$" = "$"
          next         = {}
          attempt      = 0
        }
        Next = "IsMultiKey"
      }

      IsMultiKey = {
        Type = "Choice"
        Choices = [{
          Or = [for field in ["key_names", "prefix", "all"] : {
            Variable  = "$.selector.${field}"
            IsPresent = true
          }]
          Next = "Sync"
        }]
        Default = "NotMultiKey"
      }

      NotMultiKey = {
        Type  = "Fail"
        Error = "VALIDATION_ERROR"
        Cause = "The state machine runs multi-key syncs: start it with a key_names, prefix or all selector. Sync one key with aws lambda invoke."
      }

      Sync = {
        Type     = "Task"
        Resource = "arn:${local.partition}:states:::lambda:invoke"
        Parameters = {
          FunctionName = local.function_arn
          # The selector, plus {"cursor": ...} from the second invocation on.
          "Payload.$" = "States.JsonMerge($.selector, $.next, false)"
        }
        ResultSelector = { "document.$" = "$.Payload" }
        ResultPath     = "$.step"
        # Longer than any invocation can last: only a hung integration reaches it.
        TimeoutSeconds = var.lambda_timeout + 60
        Retry = [{
          ErrorEquals     = local.lambda_service_errors
          IntervalSeconds = 2
          BackoffRate     = 2
          MaxAttempts     = 6
          JitterStrategy  = "FULL"
        }]
        Catch = [{
          ErrorEquals = ["States.ALL"]
          ResultPath  = "$.failure"
          Next        = "InvocationFailed"
        }]
        Next = "Check"
      }

      # Every rule reads a field the document has whenever the rules before it did not
      # match, so no rule depends on how And is evaluated.
      Check = {
        Type = "Choice"
        Choices = [
          {
            Variable  = "${local.step}.error"
            IsPresent = true
            Next      = "Failed"
          },
          {
            And = [
              { Variable = "${local.step}.statistics.complete", IsPresent = true },
              { Variable = "${local.step}.statistics.complete", BooleanEquals = true },
            ]
            Next = "Synced"
          },
          {
            And = [
              { Variable = "${local.step}.statistics.next_cursor", IsPresent = true },
              { Variable = "${local.step}.statistics.next_cursor", IsString = true },
            ]
            Next = "NextStep"
          },
        ]
        Default = "UnexpectedReply"
      }

      # An error document always has error.type and error.is_retryable.
      Failed = {
        Type = "Choice"
        Choices = [
          {
            Variable     = "${local.step}.error.type"
            StringEquals = "CONFLICT"
            Next         = "SyncFailed"
          },
          {
            Variable      = "${local.step}.error.is_retryable"
            BooleanEquals = false
            Next          = "SyncFailed"
          },
          {
            And = [
              { Variable = "${local.step}.statistics.next_cursor", IsPresent = true },
              { Variable = "$.attempt", NumericLessThan = length(var.state_machine_retry_delays_seconds) },
            ]
            Next = "PrepareRetry"
          },
        ]
        Default = "SyncFailed"
      }

      NextStep = {
        Type = "Pass"
        Parameters = {
          "selector.$" = "$.selector"
          next         = { "cursor.$" = "${local.step}.statistics.next_cursor" }
          attempt      = 0
        }
        Next = "Sync"
      }

      PrepareRetry = {
        Type = "Pass"
        Parameters = {
          "selector.$"     = "$.selector"
          next             = { "cursor.$" = "${local.step}.statistics.next_cursor" }
          "attempt.$"      = "States.MathAdd($.attempt, 1)"
          "wait_seconds.$" = "States.ArrayGetItem(States.Array(${join(", ", var.state_machine_retry_delays_seconds)}), $.attempt)"
          "retrying.$"     = "${local.step}.error"
        }
        Next = "Backoff"
      }

      Backoff = {
        Type        = "Wait"
        SecondsPath = "$.wait_seconds"
        Next        = "Sync"
      }

      Synced = {
        Type       = "Succeed"
        OutputPath = local.step
      }

      SyncFailed = {
        Type      = "Fail"
        ErrorPath = "${local.step}.error.type"
        CausePath = "${local.step}.error.message"
      }

      InvocationFailed = {
        Type      = "Fail"
        ErrorPath = "$.failure.Error"
        CausePath = "$.failure.Cause"
      }

      UnexpectedReply = {
        Type  = "Fail"
        Error = "INTERNAL_ERROR"
        Cause = "The function's reply carried neither an error, complete nor a next_cursor; the Sync step's output in the execution history holds it."
      }
    }
  })
}

resource "aws_cloudwatch_log_group" "state_machine" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (default 14), as for the function's logs: execution events carry selectors, cursors and statistics, never the token or KV values. Raise it where an audit policy requires a year.
  # Under /aws/vendedlogs/: Step Functions delivers through CloudWatch Logs' vended
  # log delivery, whose resource policy covers this prefix without growing per group.
  name              = "/aws/vendedlogs/states/${local.state_machine_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_sfn_state_machine" "sync" {
  name       = local.state_machine_name
  type       = "STANDARD"
  role_arn   = aws_iam_role.state_machine.arn
  definition = local.state_machine_definition

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.state_machine.arn}:*"
    include_execution_data = true
    level                  = "ALL"
  }

  tracing_configuration {
    enabled = true
  }

  # The role's policy exists before the first execution can need it.
  depends_on = [aws_iam_role_policy.state_machine]

  lifecycle {
    precondition {
      condition     = var.state_machine_timeout_seconds > var.lambda_timeout
      error_message = "state_machine_timeout_seconds must be longer than lambda_timeout, or no execution could finish even one invocation."
    }
  }
}

################################################################################
# The state machine's role: invoke this function, deliver logs, send traces
################################################################################

data "aws_iam_policy_document" "state_machine_assume_role" {
  statement {
    sid     = "StepFunctionsAssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["states.amazonaws.com"]
    }

    # Only state machines of this account and Region (the confused-deputy guard).
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:states:${var.aws_region}:${local.account_id}:stateMachine:*"]
    }
  }
}

resource "aws_iam_role" "state_machine" {
  name               = "${var.lambda_function_name}-sfn-role"
  description        = "Role of the ${local.state_machine_name} state machine: invokes ${var.lambda_function_name} only."
  assume_role_policy = data.aws_iam_policy_document.state_machine_assume_role.json
}

data "aws_iam_policy_document" "state_machine" {
  # The definition invokes the unqualified function ARN, so neither versions nor
  # aliases (":*") are granted.
  statement {
    sid       = "InvokeSyncFunction"
    effect    = "Allow"
    actions   = ["lambda:InvokeFunction"]
    resources = [local.function_arn]
  }

  # Log delivery (CloudWatch Logs vended logs) and X-Ray's trace APIs support no
  # resource-level permissions: AWS requires "*" for them.
  statement {
    sid    = "DeliverExecutionLogs"
    effect = "Allow"
    actions = [
      "logs:CreateLogDelivery",
      "logs:GetLogDelivery",
      "logs:UpdateLogDelivery",
      "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries",
      "logs:PutResourcePolicy",
      "logs:DescribeResourcePolicies",
      "logs:DescribeLogGroups",
    ]
    resources = ["*"]
  }

  statement {
    sid    = "WriteTraces"
    effect = "Allow"
    actions = [
      "xray:PutTraceSegments",
      "xray:PutTelemetryRecords",
      "xray:GetSamplingRules",
      "xray:GetSamplingTargets",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "state_machine" {
  name   = "${var.lambda_function_name}-sfn-policy"
  role   = aws_iam_role.state_machine.id
  policy = data.aws_iam_policy_document.state_machine.json
}

################################################################################
# Alarms: executions that failed or timed out
################################################################################

locals {
  state_machine_alarms = {
    executions-failed = {
      metric      = "ExecutionsFailed"
      description = "A multi-key run on ${local.state_machine_name} failed: its error is our error type (CONFLICT: another run held the namespace; DELETION_REFUSED, AUTH_ERROR...), or Lambda's. aws stepfunctions describe-execution shows it."
    }
    executions-timed-out = {
      metric      = "ExecutionsTimedOut"
      description = "A multi-key run on ${local.state_machine_name} ran longer than state_machine_timeout_seconds (${var.state_machine_timeout_seconds} s) and was stopped; its lease expires one invocation later."
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "state_machine" {
  for_each = local.state_machine_alarms

  alarm_name          = "${var.lambda_function_name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = "AWS/States"
  metric_name         = each.value.metric
  dimensions          = { StateMachineArn = aws_sfn_state_machine.sync.arn }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
