# What services reading the mirror need (the kv_sync_reader library, or plain
# GetItem/Query/BatchGetItem calls): read-only on the table, and, with a
# customer-managed key, Decrypt through DynamoDB only. Not attached to anything:
# attach output reader_policy_json to the consumers' roles (DEPLOYMENT.md).
data "aws_iam_policy_document" "reader" {
  statement {
    sid       = "ReadKvMirror"
    effect    = "Allow"
    actions   = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"]
    resources = [aws_dynamodb_table.kv_data.arn]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]

    content {
      sid       = "DecryptKvMirror"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["dynamodb.${var.aws_region}.amazonaws.com"]
      }
    }
  }
}
