"""Built-in sinks. Each module is a pluggy plugin with a ``register_sink_types`` hook."""

BUILTIN_SINK_MODULES = (
    "auditshipd.sinks.file",
    "auditshipd.sinks.stdout",
    "auditshipd.sinks.http",
    "auditshipd.sinks.splunk_hec",
    "auditshipd.sinks.datadog",
    "auditshipd.sinks.s3",
    "auditshipd.sinks.mqtt",
    "auditshipd.sinks.nats",
    "auditshipd.sinks.otlp",
    "auditshipd.sinks.gcs",
    "auditshipd.sinks.azure_blob",
    "auditshipd.portal.sink",
)
