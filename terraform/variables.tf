################################################################################
# Naming and placement
################################################################################

variable "aws_region" {
  description = "AWS Region to deploy into."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$", var.aws_region))
    error_message = "aws_region must be a Region code such as us-east-1 or eu-west-2."
  }
}

variable "project" {
  description = "Project name, applied as the `project` default tag on every resource."
  type        = string
  default     = "kv-sync"

  validation {
    condition     = length(var.project) > 0 && length(var.project) <= 128
    error_message = "project must be 1 to 128 characters long."
  }
}

variable "environment" {
  description = "Deployment environment (for example dev, staging, prod), applied as the `environment` default tag."
  type        = string
  default     = "dev"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,31}$", var.environment))
    error_message = "environment must be 1 to 32 lowercase letters, digits or hyphens, starting with a letter or digit."
  }
}

variable "tags" {
  description = "Extra tags for every resource (merged under the provider's default_tags; `project` and `environment` win)."
  type        = map(string)
  default     = {}
}

variable "lambda_function_name" {
  description = "Name of the Lambda function. Also prefixes its role, queue, topic, alarms and dashboard."
  type        = string
  default     = "cloudflare-data-sync"

  validation {
    # 55, not Lambda's 64: the schedule rule is "<function>-schedule" and EventBridge rule
    # names stop at 64 (the role, "<function>-role", needs 59).
    condition     = can(regex("^[A-Za-z0-9_-]{1,55}$", var.lambda_function_name))
    error_message = "lambda_function_name must be 1 to 55 letters, digits, hyphens or underscores (the rule name \"<name>-schedule\" must fit EventBridge's 64)."
  }
}

variable "dynamodb_table_name" {
  description = "Name of the DynamoDB table that receives the KV records."
  type        = string
  default     = "cloudflare-kv-data"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{3,255}$", var.dynamodb_table_name))
    error_message = "dynamodb_table_name must be 3 to 255 letters, digits, underscores, hyphens or dots."
  }
}

variable "cloudflare_secret_name" {
  description = "Name of the Secrets Manager secret holding the Cloudflare credentials. Terraform creates the secret without a value; operators put the value with the CLI (see DEPLOYMENT.md)."
  type        = string
  default     = "cloudflare-kv-credentials"

  validation {
    condition     = can(regex("^[A-Za-z0-9/_+=.@-]{1,512}$", var.cloudflare_secret_name))
    error_message = "cloudflare_secret_name must be 1 to 512 characters from: letters, digits and / _ + = . @ -."
  }
}

################################################################################
# Lambda
################################################################################

variable "lambda_timeout" {
  description = "Lambda timeout in seconds."
  type        = number
  default     = 300

  validation {
    condition     = var.lambda_timeout >= 1 && var.lambda_timeout <= 900 && floor(var.lambda_timeout) == var.lambda_timeout
    error_message = "lambda_timeout must be a whole number of seconds from 1 to 900."
  }
}

variable "lambda_memory_size" {
  description = "Memory of the Lambda function in MB (CPU scales with it)."
  type        = number
  default     = 512

  validation {
    condition     = var.lambda_memory_size >= 128 && var.lambda_memory_size <= 10240 && floor(var.lambda_memory_size) == var.lambda_memory_size
    error_message = "lambda_memory_size must be a whole number of MB from 128 to 10240."
  }
}

variable "lambda_architecture" {
  description = "Instruction set of the function. Build the zip for the same one: ./build_lambda.sh --arch <arm64|x86_64>."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.lambda_architecture)
    error_message = "lambda_architecture must be arm64 or x86_64."
  }
}

variable "lambda_runtime" {
  description = "Lambda runtime. The zip's compiled dependencies are built for one Python version (build_lambda.sh --python-version), which must match."
  type        = string
  default     = "python3.12"

  validation {
    condition     = contains(["python3.12", "python3.13"], var.lambda_runtime)
    error_message = "lambda_runtime must be python3.12 or python3.13."
  }
}

variable "lambda_package_path" {
  description = "Path of the deployment zip built by ./build_lambda.sh, absolute or relative to the directory Terraform runs in."
  type        = string
  default     = "../lambda_function.zip"

  validation {
    condition     = can(regex("\\.zip$", var.lambda_package_path))
    error_message = "lambda_package_path must name a .zip file built by ./build_lambda.sh."
  }
}

variable "reserved_concurrency" {
  description = "Concurrent executions reserved for the function. null leaves it unreserved; 0 stops every invocation (an emergency brake). Reserving N > 0 needs an account concurrency quota of at least N + 100 (Lambda keeps 100 unreserved; new accounts have 10): check with aws lambda get-account-settings first."
  type        = number
  default     = null

  validation {
    condition     = var.reserved_concurrency == null ? true : (var.reserved_concurrency >= 0 && floor(var.reserved_concurrency) == var.reserved_concurrency)
    error_message = "reserved_concurrency must be null or a whole number >= 0."
  }
}

variable "service_name" {
  description = "Powertools service name (POWERTOOLS_SERVICE_NAME): the `service` key on every log line and the `service` dimension of every custom metric."
  type        = string
  default     = "kv-sync"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,64}$", var.service_name))
    error_message = "service_name must be 1 to 64 letters, digits, underscores, dots or hyphens."
  }
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the custom metrics (POWERTOOLS_METRICS_NAMESPACE)."
  type        = string
  default     = "KvSync"

  validation {
    condition     = can(regex("^[A-Za-z0-9_./#:-]{1,255}$", var.metrics_namespace)) && !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must be 1 to 255 characters from letters, digits and _ . / # : -, and must not start with AWS/."
  }
}

variable "log_level" {
  description = "Log level of the function (POWERTOOLS_LOG_LEVEL)."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], var.log_level)
    error_message = "log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL."
  }
}

variable "async_max_retry_attempts" {
  description = "Retries Lambda makes for a failed asynchronous invocation (schedule, `aws lambda invoke --invocation-type Event`) before sending it to the failure queue."
  type        = number
  default     = 2

  validation {
    condition     = contains([0, 1, 2], var.async_max_retry_attempts)
    error_message = "async_max_retry_attempts must be 0, 1 or 2."
  }
}

variable "async_max_event_age_seconds" {
  description = "Maximum age of an asynchronous event before Lambda gives up on it and sends it to the failure queue."
  type        = number
  default     = 3600

  validation {
    condition     = var.async_max_event_age_seconds >= 60 && var.async_max_event_age_seconds <= 21600
    error_message = "async_max_event_age_seconds must be from 60 to 21600."
  }
}

################################################################################
# Sync behaviour
################################################################################

variable "default_key_name" {
  description = "KV key synced when an invocation names none (DEFAULT_KEY_NAME)."
  type        = string
  default     = "redirect-all-users-to-essentials"

  validation {
    condition     = length(var.default_key_name) >= 1 && length(var.default_key_name) <= 512 && !contains([".", ".."], var.default_key_name)
    error_message = "default_key_name must be 1 to 512 characters and not \".\" or \"..\"."
  }
}

variable "cloudflare_api_base_url" {
  description = "Base URL of the Cloudflare API (CLOUDFLARE_API_BASE_URL)."
  type        = string
  default     = "https://api.cloudflare.com/client/v4"

  validation {
    condition     = can(regex("^https://[^\\s]+$", var.cloudflare_api_base_url))
    error_message = "cloudflare_api_base_url must be an https:// URL."
  }
}

variable "secret_cache_seconds" {
  description = "How long a warm function reuses the credentials it read from Secrets Manager (SECRET_CACHE_SECONDS)."
  type        = number
  default     = 300

  validation {
    condition     = var.secret_cache_seconds >= 0 && var.secret_cache_seconds <= 86400 && floor(var.secret_cache_seconds) == var.secret_cache_seconds
    error_message = "secret_cache_seconds must be a whole number from 0 to 86400."
  }
}

variable "retry_max_attempts" {
  description = "Attempts per Cloudflare request, the first included (RETRY_MAX_ATTEMPTS)."
  type        = number
  default     = 3

  validation {
    condition     = var.retry_max_attempts >= 1 && var.retry_max_attempts <= 10 && floor(var.retry_max_attempts) == var.retry_max_attempts
    error_message = "retry_max_attempts must be a whole number from 1 to 10."
  }
}

variable "api_timeout_seconds" {
  description = "Timeout of one Cloudflare request in seconds (API_TIMEOUT_SECONDS). Must be shorter than lambda_timeout."
  type        = number
  default     = 30

  validation {
    condition     = var.api_timeout_seconds >= 1 && var.api_timeout_seconds <= 900
    error_message = "api_timeout_seconds must be from 1 to 900."
  }
}

variable "record_ttl_days" {
  description = "Days after a sync that DynamoDB expires a record whose KV key has no expiration (RECORD_TTL_DAYS). 0 writes no ttl attribute."
  type        = number
  default     = 30

  validation {
    condition     = var.record_ttl_days >= 0 && var.record_ttl_days <= 36500 && floor(var.record_ttl_days) == var.record_ttl_days
    error_message = "record_ttl_days must be a whole number from 0 to 36500."
  }
}

variable "cloudflare_requests_per_5_minutes" {
  description = "Client-side cap on Cloudflare API requests per 5 minutes (CLOUDFLARE_REQUESTS_PER_5_MINUTES); Cloudflare allows 1200 per user."
  type        = number
  default     = 1200

  validation {
    condition     = var.cloudflare_requests_per_5_minutes >= 1 && var.cloudflare_requests_per_5_minutes <= 100000 && floor(var.cloudflare_requests_per_5_minutes) == var.cloudflare_requests_per_5_minutes
    error_message = "cloudflare_requests_per_5_minutes must be a whole number from 1 to 100000."
  }
}

variable "delete_missing" {
  description = "Default of delete_missing for events that do not set it (DELETE_MISSING). true: a sync deletes the DynamoDB record of a key gone from KV (a 404 on a named key, or absence from a complete listing of a prefix or the namespace; never on an incomplete listing)."
  type        = bool
  default     = false
  nullable    = false
}

variable "max_delete_percent" {
  description = "The deletion guard (MAX_DELETE_PERCENT): a run with delete_missing deletes nothing and fails with DELETION_REFUSED when it would delete more than this percentage of its selection's stored records, or when the selection's complete listing found no keys while records exist. An event's \"force_delete\": true overrides it."
  type        = number
  default     = 25
  nullable    = false

  validation {
    condition     = var.max_delete_percent >= 0 && var.max_delete_percent <= 100 && floor(var.max_delete_percent) == var.max_delete_percent
    error_message = "max_delete_percent must be a whole number from 0 to 100."
  }
}

################################################################################
# Logs and alarms
################################################################################

variable "log_retention_days" {
  description = "Retention of the function's log group, in days."
  type        = number
  default     = 14

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "alert_email" {
  description = "Email address subscribed to the alarm topic. \"\" means no subscription. AWS emails a confirmation link that must be clicked."
  type        = string
  default     = ""

  validation {
    condition     = var.alert_email == "" || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alert_email))
    error_message = "alert_email must be \"\" or an email address."
  }
}

variable "error_rate_threshold" {
  description = "Lambda errors within 5 minutes that raise the errors alarm. Only failed scheduled (and asynchronous) runs and crashes count as Lambda errors (direct and Function URL calls get their error document back), so the default, 1, fires on a single failed scheduled run."
  type        = number
  default     = 1

  validation {
    condition     = var.error_rate_threshold >= 1 && floor(var.error_rate_threshold) == var.error_rate_threshold
    error_message = "error_rate_threshold must be a whole number >= 1."
  }
}

variable "duration_threshold_ms" {
  description = "Maximum duration in milliseconds within 5 minutes that raises the duration alarm. Must be below lambda_timeout."
  type        = number
  default     = 60000

  validation {
    condition     = var.duration_threshold_ms >= 1 && var.duration_threshold_ms <= 900000
    error_message = "duration_threshold_ms must be from 1 to 900000."
  }
}

################################################################################
# Table
################################################################################

variable "enable_point_in_time_recovery" {
  description = "Enable DynamoDB point-in-time recovery (continuous backups) on the table."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Enable DynamoDB deletion protection on the table. false by default so that `terraform destroy` works; set true in production (DEPLOYMENT.md)."
  type        = bool
  default     = false
}

################################################################################
# Encryption and secret
################################################################################

variable "kms_key_arn" {
  description = "ARN of an optional customer-managed KMS key for the table, the secret, the log group, the function's environment, the SNS topic and the SQS queue. null uses AWS managed keys (and a dedicated key for the SNS topic). Its key policy must allow the services (DEPLOYMENT.md)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be null or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>); aliases are not accepted."
  }
}

variable "secret_recovery_window_days" {
  description = "Days Secrets Manager keeps the secret after `terraform destroy` before deleting it. 0 deletes at once (handy in dev, where the same name is re-created)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or from 7 to 30."
  }
}

################################################################################
# Triggers and access
################################################################################

variable "sync_schedule_expression" {
  description = "EventBridge schedule, for example \"rate(15 minutes)\" or \"cron(0 * * * ? *)\". \"\" creates no schedule."
  type        = string
  default     = ""

  validation {
    condition     = var.sync_schedule_expression == "" || can(regex("^(rate|cron)\\(.+\\)$", var.sync_schedule_expression))
    error_message = "sync_schedule_expression must be \"\" or a rate(...) or cron(...) expression."
  }
}

variable "sync_schedule_input" {
  description = "Constant input of the schedule: which keys each run syncs. {} syncs default_key_name. Otherwise one selector, { key_name = \"k\" }, { key_names = [\"a\", \"b\"] } (1 to 1000), { prefix = \"flags/\" } or { all = true }, optionally with delete_missing = true|false (default: the delete_missing variable), dry_run = true (preview: nothing is written) and force_delete = true (overrides the deletion guard on every run). A multi-key selector (key_names, prefix, all) starts an execution of the state machine with it as input, which continues the run until complete (alarms on failed and timed-out executions); {} and key_name invoke the function with it as the detail of a Scheduled Event, so every failure raises for Lambda's Errors, retries and the failure queue."
  type        = any
  default     = {}
  nullable    = false

  validation {
    condition     = can(keys(var.sync_schedule_input))
    error_message = "sync_schedule_input must be an object: {}, { key_name = \"k\" }, { key_names = [\"a\", \"b\"] }, { prefix = \"flags/\" } or { all = true }, optionally with delete_missing, dry_run and force_delete (true|false)."
  }

  validation {
    condition     = alltrue([for field in try(keys(var.sync_schedule_input), []) : contains(["key_name", "key_names", "prefix", "all", "delete_missing", "dry_run", "force_delete"], field)])
    error_message = "sync_schedule_input accepts only the fields key_name, key_names, prefix, all, delete_missing, dry_run and force_delete."
  }

  validation {
    condition     = length(setintersection(try(keys(var.sync_schedule_input), []), ["key_name", "key_names", "prefix", "all"])) <= 1
    error_message = "sync_schedule_input takes at most one selector of key_name, key_names, prefix and all."
  }

  # Key names as the function checks them: 1 to 512 UTF-8 bytes (counted from the
  # length of their base64 encoding), not "." or "..", no control characters.
  validation {
    condition = !contains(try(keys(var.sync_schedule_input), []), "key_name") || try(alltrue([
      tostring(var.sync_schedule_input.key_name) == var.sync_schedule_input.key_name,
      length(var.sync_schedule_input.key_name) > 0,
      length(base64encode(var.sync_schedule_input.key_name)) * 3 / 4 - length(regexall("=", base64encode(var.sync_schedule_input.key_name))) <= 512,
      !contains([".", ".."], var.sync_schedule_input.key_name),
      length(regexall("[\\x00-\\x1f\\x7f-\\x9f]", var.sync_schedule_input.key_name)) == 0,
    ]), false)
    error_message = "sync_schedule_input.key_name must be a key name: a string of 1 to 512 bytes, not \".\" or \"..\", without control characters."
  }

  validation {
    condition = !contains(try(keys(var.sync_schedule_input), []), "key_names") || try(alltrue(concat(
      [length(tolist(var.sync_schedule_input.key_names)) >= 1, length(var.sync_schedule_input.key_names) <= 1000],
      [for name in var.sync_schedule_input.key_names : alltrue([
        tostring(name) == name,
        length(name) > 0,
        length(base64encode(name)) * 3 / 4 - length(regexall("=", base64encode(name))) <= 512,
        !contains([".", ".."], name),
        length(regexall("[\\x00-\\x1f\\x7f-\\x9f]", name)) == 0,
      ])],
    )), false)
    error_message = "sync_schedule_input.key_names must be a list of 1 to 1000 key names, each a string of 1 to 512 bytes, not \".\" or \"..\", without control characters."
  }

  validation {
    condition = !contains(try(keys(var.sync_schedule_input), []), "prefix") || try(alltrue([
      tostring(var.sync_schedule_input.prefix) == var.sync_schedule_input.prefix,
      length(var.sync_schedule_input.prefix) > 0,
      length(base64encode(var.sync_schedule_input.prefix)) * 3 / 4 - length(regexall("=", base64encode(var.sync_schedule_input.prefix))) <= 512,
      length(regexall("[\\x00-\\x1f\\x7f-\\x9f]", var.sync_schedule_input.prefix)) == 0,
    ]), false)
    error_message = "sync_schedule_input.prefix must be a non-empty string of at most 512 bytes without control characters; use { all = true } for the whole namespace."
  }

  validation {
    condition     = !contains(try(keys(var.sync_schedule_input), []), "all") || try(var.sync_schedule_input.all == true, false)
    error_message = "sync_schedule_input.all must be true (it syncs the whole namespace); leave it out otherwise."
  }

  validation {
    condition = alltrue([for flag in ["delete_missing", "dry_run", "force_delete"] :
    !contains(try(keys(var.sync_schedule_input), []), flag) || try(var.sync_schedule_input[flag] == true || var.sync_schedule_input[flag] == false, false)])
    error_message = "sync_schedule_input.delete_missing, dry_run and force_delete must be true or false."
  }

  validation {
    condition     = try(length(jsonencode(var.sync_schedule_input)) <= 8100, false)
    error_message = "sync_schedule_input, as JSON, must be at most 8100 characters (EventBridge allows 8192 for a target's input, which wraps it in a Scheduled Event); sync a long list of keys by prefix instead."
  }
}

variable "function_url_allowed_principals" {
  description = "IAM principal ARNs (roles, users or account roots) given invoke rights on the Function URL by the function's resource policy. Empty means only identities of this account whose own IAM policies allow it."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.function_url_allowed_principals : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(root|role/.+|user/.+)$", p))])
    error_message = "function_url_allowed_principals must hold IAM ARNs of roles, users or account roots (arn:aws:iam::<account>:role/<name>); \"*\" is not allowed."
  }
}

################################################################################
# Multi-key runs on Step Functions
################################################################################

variable "state_machine_timeout_seconds" {
  description = "Longest one multi-key run on the state machine may last, in seconds (the execution's TimeoutSeconds). Past it the execution stops as timed out (alarm <function>-executions-timed-out) and the namespace's lease expires one invocation later. The default, 6 hours, covers several million keys: at Cloudflare's 1,200 requests per 5 minutes a whole-namespace sync of 1M keys takes at least 46 minutes."
  type        = number
  default     = 21600
  nullable    = false

  validation {
    condition     = var.state_machine_timeout_seconds >= 60 && var.state_machine_timeout_seconds <= 31536000 && floor(var.state_machine_timeout_seconds) == var.state_machine_timeout_seconds
    error_message = "state_machine_timeout_seconds must be a whole number of seconds from 60 to 31536000 (one year, the limit of a Standard execution)."
  }
}

variable "state_machine_retry_delays_seconds" {
  description = "Seconds the state machine waits before each retry of a step that failed with a retryable error (RATE_LIMITED, TIMEOUT, NETWORK_ERROR, retryable API_ERROR or STORAGE_ERROR; never CONFLICT). Its length is the most retries in a row; a step that makes progress starts the count again. The retry resumes from the failed step's next_cursor."
  type        = list(number)
  default     = [30, 60, 120, 240, 480]
  nullable    = false

  validation {
    condition     = length(var.state_machine_retry_delays_seconds) >= 1 && length(var.state_machine_retry_delays_seconds) <= 10 && alltrue([for delay in var.state_machine_retry_delays_seconds : delay >= 1 && delay <= 3600 && floor(delay) == delay])
    error_message = "state_machine_retry_delays_seconds must hold 1 to 10 whole numbers of seconds, each from 1 to 3600."
  }
}
