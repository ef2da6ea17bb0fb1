output "lambda_function_name" {
  description = "Name of the Lambda function."
  value       = aws_lambda_function.sync.function_name
}

output "lambda_function_arn" {
  description = "ARN of the Lambda function."
  value       = aws_lambda_function.sync.arn
}

output "lambda_function_url" {
  description = "HTTPS URL of the function (AWS_IAM auth: requests must be SigV4-signed by a caller allowed lambda:InvokeFunctionUrl and lambda:InvokeFunction)."
  value       = aws_lambda_function_url.sync.function_url
}

output "lambda_role_arn" {
  description = "ARN of the function's execution role."
  value       = aws_iam_role.lambda.arn
}

output "dynamodb_table_name" {
  description = "Name of the DynamoDB table holding the KV records."
  value       = aws_dynamodb_table.kv_data.name
}

output "dynamodb_table_arn" {
  description = "ARN of the DynamoDB table."
  value       = aws_dynamodb_table.kv_data.arn
}

output "secrets_manager_secret_name" {
  description = "Name of the secret the operator fills with the Cloudflare credentials (DEPLOYMENT.md)."
  value       = aws_secretsmanager_secret.cloudflare.name
}

output "secrets_manager_secret_arn" {
  description = "ARN of the Cloudflare credentials secret."
  value       = aws_secretsmanager_secret.cloudflare.arn
}

output "lambda_log_group_name" {
  description = "CloudWatch Logs group of the function."
  value       = aws_cloudwatch_log_group.lambda.name
}

output "cloudwatch_dashboard_name" {
  description = "Name of the CloudWatch dashboard."
  value       = aws_cloudwatch_dashboard.sync.dashboard_name
}

output "cloudwatch_dashboard_url" {
  description = "Console URL of the CloudWatch dashboard."
  value       = "https://${var.aws_region}.console.aws.amazon.com/cloudwatch/home?region=${var.aws_region}#dashboards:name=${aws_cloudwatch_dashboard.sync.dashboard_name}"
}

output "sns_topic_arn" {
  description = "ARN of the SNS topic the alarms publish to."
  value       = aws_sns_topic.alerts.arn
}

output "failure_queue_url" {
  description = "URL of the SQS queue receiving asynchronous invocations that failed after all retries."
  value       = aws_sqs_queue.failures.url
}

output "failure_queue_arn" {
  description = "ARN of the failure queue."
  value       = aws_sqs_queue.failures.arn
}

output "schedule_rule_name" {
  description = "Name of the EventBridge schedule rule, or null when sync_schedule_expression is \"\"."
  value       = one(aws_cloudwatch_event_rule.schedule[*].name)
}

output "schedule_input" {
  description = "JSON the schedule sends: for a multi-key selector (key_names, prefix, all), the input of each state machine execution, the selector itself; for one key, the Scheduled Event invoking the function, its detail carrying the selector; null when there is no schedule."
  value       = var.sync_schedule_expression == "" ? null : local.schedule_input
}

output "reader_policy_json" {
  description = "Least-privilege IAM policy (JSON) for services that read the mirror: dynamodb:GetItem, Query and BatchGetItem on the table only, plus kms:Decrypt through DynamoDB when kms_key_arn is set. Attach it to consumer roles (DEPLOYMENT.md)."
  value       = data.aws_iam_policy_document.reader.json
}

output "state_machine_arn" {
  description = "ARN of the Step Functions state machine that runs one multi-key sync to completion (aws stepfunctions start-execution --state-machine-arn ... --input '{\"all\": true}')."
  value       = aws_sfn_state_machine.sync.arn
}

output "state_machine_name" {
  description = "Name of the state machine that runs multi-key syncs."
  value       = aws_sfn_state_machine.sync.name
}
