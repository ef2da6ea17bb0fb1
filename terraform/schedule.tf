locals {
  # What the schedule sends: a Scheduled Event whose "detail" carries the selector
  # (variables.tf validates its shape; empty means the default key). Shaped so, the
  # function keeps schedule semantics for every selector: retryable failures raise,
  # so Lambda's async retries and the failure queue see them.
  schedule_input = jsonencode({
    "detail-type" = "Scheduled Event"
    source        = "aws.events"
    detail        = var.sync_schedule_input
  })
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
  arn       = aws_lambda_function.sync.arn

  input = local.schedule_input
}

resource "aws_lambda_permission" "schedule" {
  count = var.sync_schedule_expression == "" ? 0 : 1

  statement_id  = "AllowEventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.sync.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.schedule[0].arn
}
