# The secret only: Terraform never holds the Cloudflare token, so no value (and no
# aws_secretsmanager_secret_version) ever reaches the state. Operators put the JSON
# value with the CLI (DEPLOYMENT.md); until then the function answers
# CONFIGURATION_ERROR.
resource "aws_secretsmanager_secret" "cloudflare" {
  #checkov:skip=CKV2_AWS_57:The value is a Cloudflare API token, issued and rotated in Cloudflare and put here with the CLI (DEPLOYMENT.md); Secrets Manager cannot mint one, and the function re-reads the secret after a 401/403, so rotation needs no Lambda.
  name                    = var.cloudflare_secret_name
  description             = "Cloudflare API credentials for ${var.lambda_function_name}: JSON {\"api_token\", \"account_id\", \"kv_namespace_id\", \"kv_namespace\"}. The value is put with the CLI, never by Terraform."
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
}
