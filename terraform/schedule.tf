locals {
  # A multi-key selector (key_names, prefix, all) may need more than one invocation:
  # the schedule starts an execution of the state machine (stepfunctions.tf), whose
  # input is the selector itself, as `aws stepfunctions start-execution` takes it.
  schedule_multi_key = length(setintersection(try(keys(var.sync_schedule_input), []), ["key_names", "prefix", "all"])) > 0

  # One key ({} or key_name) finishes in one invocation: the schedule invokes the
  # function asynchronously with a Scheduled Event whose "detail" carries the selector
  # (variables.tf validates its shape; empty means the default key). Shaped so, the
  # function keeps schedule semantics: every failure raises, so Lambda's async
  # retries, its Errors metric and the failure queue see it.
  schedule_input = local.schedule_multi_key ? jsonencode(var.sync_schedule_input) : jsonencode({
    "detail-type" = "Scheduled Event"
    source        = "aws.events"
    detail        = var.sync_schedule_input
  })

  schedule_invokes_function = var.sync_schedule_expression != "" && !local.schedule_multi_key
  schedule_starts_execution = var.sync_schedule_expression != "" && local.schedule_multi_key
}

resource "aws_cloudwatch_event_rule" "schedule" {
  count = var.sync_schedule_expression == "" ? 0 : 1

  name                = "${var.lambda_function_name}-schedule"
  description         = "Runs ${var.lambda_function_name} on ${var.sync_schedule_expression}."
  schedule_expression = var.sync_schedule_expression
  state               = "ENABLED"
}

resource "aws_cloudwatch_event_target" "schedule" {
  count = var.sync_schedule_expression == "" ? 0 : 1

  rule      = aws_cloudwatch_event_rule.schedule[0].name
  target_id = "sync"
  arn       = local.schedule_multi_key ? aws_sfn_state_machine.sync.arn : aws_lambda_function.sync.arn
  role_arn  = local.schedule_multi_key ? aws_iam_role.schedule[0].arn : null

  input = local.schedule_input
}

resource "aws_lambda_permission" "schedule" {
  count = local.schedule_invokes_function ? 1 : 0

  statement_id  = "AllowEventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.sync.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.schedule[0].arn
}

# EventBridge starts executions with a role of its own, allowed to start this state
# machine only.
data "aws_iam_policy_document" "schedule_assume_role" {
  count = local.schedule_starts_execution ? 1 : 0

  statement {
    sid     = "EventBridgeAssumeRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "schedule" {
  count = local.schedule_starts_execution ? 1 : 0

  name               = "${var.lambda_function_name}-evb-role"
  description        = "Role of the ${var.lambda_function_name} schedule: starts executions of ${local.state_machine_name} only."
  assume_role_policy = data.aws_iam_policy_document.schedule_assume_role[0].json
}

data "aws_iam_policy_document" "schedule" {
  count = local.schedule_starts_execution ? 1 : 0

  statement {
    sid       = "StartSyncExecutions"
    effect    = "Allow"
    actions   = ["states:StartExecution"]
    resources = [aws_sfn_state_machine.sync.arn]
  }
}

resource "aws_iam_role_policy" "schedule" {
  count = local.schedule_starts_execution ? 1 : 0

  name   = "${var.lambda_function_name}-evb-policy"
  role   = aws_iam_role.schedule[0].id
  policy = data.aws_iam_policy_document.schedule[0].json
}
