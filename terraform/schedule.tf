locals {
  # The JSON the schedule sends (variables.tf validates its shape), or null for the
  # Scheduled Event itself.
  schedule_input = length(var.sync_schedule_input) == 0 ? null : jsonencode(var.sync_schedule_input)
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

  # With no input the function receives the Scheduled Event itself, syncs the
  # default key and raises on retryable failures, so that Lambda's async retries
  # and the failure queue see them. A constant input, such as {"key_name": "x"},
  # {"key_names": [...]}, {"prefix": "flags/"} or {"all": true} (with an optional
  # "delete_missing"), is treated as a direct invocation with that selector.
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
