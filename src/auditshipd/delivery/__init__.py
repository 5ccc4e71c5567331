"""Delivery: journal lines -> redacted batches -> a sink, at least once (driver, batcher, retries, dead letters, quarantine)."""
