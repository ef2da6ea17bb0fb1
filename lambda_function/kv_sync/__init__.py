"""kv-sync: mirror Cloudflare Workers KV into a DynamoDB table.

Lambda runs ``kv_sync.handler.lambda_handler``. Modules import downward only:

- entry: ``handler``, ``events``, ``replies``;
- the engine: ``engine``, ``pages``, ``plan``, ``cursor``;
- source ``source`` (``cloudflare``, ``cloudflare_replies``, ``credentials``,
  ``ratelimit``), transform ``records`` and sink ``store``, ``ledger``, which never
  import each other;
- leaves: ``model``, ``errors``, ``settings``, ``runtime``, ``observability``,
  ``tracing``, ``redaction``.

``tests/unit/test_package_layers.py`` holds the package to this.
"""
