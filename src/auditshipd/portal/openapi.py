"""The OpenAPI 3 description of the portal's JSON API (served at ``/api/openapi.json``)."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]


def _param(name: str, description: str, *, schema: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}, **extra}


_FILTERS = [
    _param("q", "Keywords. Each word is a phrase of its letters/digits (the last may be a "
                "prefix); all words must match. Plain text: no query syntax."),
    _param("action", "Event type; repeat to allow several.", explode=True,
           schema={"type": "array", "items": {"type": "string"}}),
    _param("actor", "Actor e-mail (or name when it has none), case-insensitive."),
    _param("target", "Target e-mail (or name), case-insensitive."),
    _param("since", "Inclusive lower bound (RFC 3339; no offset means UTC).",
           schema={"type": "string", "format": "date-time"}),
    _param("until", "Exclusive upper bound (RFC 3339).", schema={"type": "string", "format": "date-time"}),
    _param("include_access", "Also the portal's own access records (audit_log.viewed, "
                             "audit_log.exported, audit_log.purged), left out by default; an "
                             "action filter naming one of them shows them too. They are never "
                             "keyword-indexed: q does not find them.",
           schema={"type": "boolean", "default": False}),
    _param("organization", "Only this organization's events (its slug). A token scoped to an "
                           "organization may name only its own (403 otherwise)."),
]
_EXPORT = [
    _param("format", "csv or jsonl", schema={"type": "string", "enum": ["csv", "jsonl"], "default": "jsonl"}),
    *_FILTERS,
]
_AS_OF = ("Only events that occurred before this time (RFC 3339, not in the future). It fixes the "
          "export's bytes, so its manifest can be signed again later by any portal replica.")
_ERRORS = {
    "400": {"description": "Invalid parameter", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
    "401": {"description": "Missing, unknown or revoked token"},
    "403": {"description": "The token's role does not allow this (viewer: no export, no streams), or it names another organization than its own"},
}


_STREAM_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_STREAM_WRITE = ("A browser session sends its CSRF token in X-CSRF-Token. The stream is scoped to "
                 "the token's organization; an organization(s) key is refused. Secret options "
                 "(tokens, API keys, HMAC secrets, an http stream's headers) are stored encrypted "
                 "and never returned. A destination resolving to a loopback, private, link-local "
                 "or metadata address is refused.")
_CHANGE_ERRORS = {**_ERRORS,
                  "404": {"description": "No such stream (or another organization's)"},
                  "409": {"description": "The name is taken, or the organization has the most streams allowed"},
                  "503": {"description": "The portal has no secrets key"}}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _one_stream(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"data": {"$ref": "#/components/schemas/StreamDefinition"}}}}}}


def openapi_document() -> dict[str, Any]:
    event = {"type": "object", "description": "A redacted audit event, as indexed.",
             "additionalProperties": True,
             "properties": {"id": {"type": "string"}, "action": {"type": "string"},
                            "occurred_at": {"type": "string", "format": "date-time"},
                            "actor": {"type": "object"}, "targets": {"type": "array", "items": {"type": "object"}},
                            "organization": {"type": "object"}, "context": {"type": "object"},
                            "metadata": {"type": "object"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "auditshipd audit log portal", "version": "1",
                 "description": "Access to the redacted audit log: admin tokens read, export and "
                                "see streams; viewer tokens read events only. Every search, "
                                "event view and export is itself recorded in the audit journal."},
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/events": {"get": {
                "summary": "Search events, newest first",
                "parameters": [*_FILTERS,
                               _param("cursor", "Opaque cursor from next_cursor of the previous page."),
                               _param("limit", "Page size.", schema={"type": "integer", "minimum": 1, "maximum": 1000, "default": 50})],
                "responses": {"200": {"description": "A page of events", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventPage"}}}}, **_ERRORS},
            }},
            "/api/events/{id}": {"get": {
                "summary": "One event",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The event", "content": {"application/json": {"schema": {"type": "object", "properties": {"data": {"$ref": "#/components/schemas/Event"}}}}}},
                              "404": {"description": "No such event (or not visible to this token)"}, **_ERRORS},
            }},
            "/api/export": {"get": {
                "summary": "Export every matching event, streamed",
                "parameters": [*_EXPORT, _param("as_of", _AS_OF + " Default: the time of the request.",
                                                schema={"type": "string", "format": "date-time"})],
                "responses": {"200": {"description": "The events, newest first",
                                      "headers": {"X-Export-As-Of": {"description": "The as_of of this export (RFC 3339)", "schema": {"type": "string"}},
                                                  "Link": {"description": "When manifests are available: the URL of this export's signed manifest (rel=\"describedby\")", "schema": {"type": "string"}},
                                                  "X-Export-Manifest": {"description": "\"unavailable\" when the portal has no [integrity] signing_key", "schema": {"type": "string"}}},
                                      "content": {"text/csv": {}, "application/x-ndjson": {}}}, **_ERRORS},
            }},
            "/api/export.manifest": {"get": {
                "summary": "The signed manifest of an export",
                "description": "Reads the export given by the same parameters (with its as_of) again, "
                               "hashes its bytes and signs them with the [integrity] key. Save it as "
                               "<export file>.manifest.json and check both with `auditshipd verify`.",
                "parameters": [*_EXPORT, {**_param("as_of", _AS_OF + " Required: the export's X-Export-As-Of.",
                                                   schema={"type": "string", "format": "date-time"}), "required": True}],
                "responses": {"200": {"description": "The manifest", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportManifest"}}}},
                              "501": {"description": "Manifests are unavailable: the portal has no [integrity] signing_key",
                                      "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                              **_ERRORS},
            }},
            "/api/streams": {"get": {
                "summary": "Each stream's delivery state: self-service streams (source portal) and the operator's sinks (source config)",
                "responses": {"200": {"description": "Streams", "content": {"application/json": {"schema": {"type": "object", "properties": {"data": {"type": "array", "items": {"$ref": "#/components/schemas/Stream"}}}}}}}, **_ERRORS},
            }, "post": {
                "summary": "Create a self-service stream in the token's organization",
                "description": _STREAM_WRITE, "requestBody": _body("StreamCreate"),
                "responses": {"201": _one_stream("The stream"), **_CHANGE_ERRORS},
            }},
            "/api/streams/{id}": {
                "parameters": [_STREAM_ID],
                "get": {"summary": "One self-service stream (secrets never shown)",
                        "responses": {"200": _one_stream("The stream"), **_CHANGE_ERRORS}},
                "patch": {"summary": "Edit options, pause or resume",
                          "description": "Options given replace the stored ones (null removes one); "
                                         "secrets left out stay. " + _STREAM_WRITE,
                          "requestBody": _body("StreamChange"),
                          "responses": {"200": _one_stream("The stream"), **_CHANGE_ERRORS}},
                "delete": {"summary": "Delete a self-service stream",
                           "responses": {"204": {"description": "Deleted"}, **_CHANGE_ERRORS}},
            },
            "/api/streams/{id}/test": {"post": {
                "summary": "Send one synthetic log_stream.test_event to this stream only",
                "parameters": [_STREAM_ID],
                "responses": {"200": {"description": "What the destination answered", "content": {"application/json": {"schema": {"type": "object", "properties": {"data": {"$ref": "#/components/schemas/TestAnswer"}}}}}},
                              "429": {"description": "Too many test events for this stream (see Retry-After)"},
                              **_CHANGE_ERRORS},
            }},
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "A token from `auditshipd token create --name NAME --role admin` (or `--role viewer`)."},
                "session": {"type": "apiKey", "in": "cookie", "name": "asd_session"},
            },
            "schemas": {
                "Event": event,
                "EventPage": {"type": "object", "required": ["data", "next_cursor", "total"], "properties": {
                    "data": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                    "next_cursor": {"type": "string", "nullable": True},
                    "total": {"type": "object", "description": "Matching events: exactly value (relation eq), "
                              "or more than value (relation gt) when counting stopped at 10,000.",
                              "properties": {"value": {"type": "integer"},
                                             "relation": {"type": "string", "enum": ["eq", "gt"]}}}}},
                "Stream": {"type": "object", "properties": {
                    "name": {"type": "string"}, "type": {"type": "string"},
                    "state": {"type": "string", "enum": ["active", "error", "paused", "inactive", "blocked"]},
                    "source": {"type": "string", "enum": ["portal", "config"]},
                    "hosts": {"type": "array", "items": {"type": "object"}, "description": "self-service streams: each daemon's report"},
                    "last_synced_at": {"type": "string", "nullable": True,
                                       "description": "last acknowledged delivery (RFC 3339)"},
                    "last_error_at": {"type": "string", "nullable": True},
                    "last_error_resolved_at": {"type": "string", "nullable": True,
                                               "description": "when the sink delivered again after last_error (null while the error lasts)"},
                    "lag_events_exact": {"type": "boolean", "nullable": True},
                    "stream_organization": {"type": "string", "nullable": True,
                                            "description": "organization whose stream file defines the sink"},
                    "lag_bytes": {"type": "integer", "nullable": True}, "lag_events": {"type": "integer", "nullable": True},
                    "last_success_at": {"type": "string", "nullable": True}, "last_error": {"type": "string", "nullable": True},
                    "dead_letter_count": {"type": "integer", "nullable": True}, "quarantine_count": {"type": "integer", "nullable": True},
                    "organizations": {"type": "array", "items": {"type": "string"}, "nullable": True}}},
                "ExportManifest": {"type": "object", "description": "Ed25519 signature over the canonical JSON of every other member (docs/integrity.md).",
                                   "properties": {
                    "version": {"type": "integer"}, "kind": {"type": "string", "enum": ["auditshipd.export-manifest"]},
                    "format": {"type": "string", "enum": ["csv", "jsonl"]},
                    "filters": {"type": "object", "description": "The filters asked, the organization (null: all) and as_of"},
                    "since": {"type": "string", "nullable": True}, "until": {"type": "string", "nullable": True,
                                                                            "description": "The earlier of until and as_of"},
                    "rows": {"type": "integer"}, "bytes": {"type": "integer"},
                    "sha256": {"type": "string", "description": "hex SHA-256 of the export's bytes"},
                    "signed_at": {"type": "string"}, "key_id": {"type": "string"}, "signature": {"type": "string"}}},
                "StreamCreate": {"type": "object", "required": ["name", "type", "options"], "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,39}$"},
                    "type": {"type": "string", "enum": ["http", "splunk_hec", "datadog", "s3"]},
                    "options": {"type": "object", "description": "The sink type's options, as in a [[sinks]] table (docs/sinks.md)"},
                    "paused": {"type": "boolean"}}},
                "StreamChange": {"type": "object", "properties": {
                    "options": {"type": "object"}, "paused": {"type": "boolean"}}},
                "StreamDefinition": {"type": "object", "properties": {
                    "id": {"type": "string"}, "organization": {"type": "string"}, "name": {"type": "string"},
                    "sink": {"type": "string"}, "type": {"type": "string"},
                    "options": {"type": "object", "description": "Options without secrets; URL credentials masked"},
                    "secrets": {"type": "object", "additionalProperties": {"type": "string", "enum": ["set"]}},
                    "paused": {"type": "boolean"}, "created_at": {"type": "string"}, "updated_at": {"type": "string"},
                    "created_by": {"type": "string"}, "updated_by": {"type": "string"}}},
                "TestAnswer": {"type": "object", "properties": {
                    "delivered": {"type": "boolean"}, "status": {"type": "integer", "nullable": True,
                                                                "description": "the destination's HTTP status (null where its protocol has none to show, or no answer came)"},
                    "error": {"type": "string", "nullable": True, "description": "Scrubbed of the stream's secrets"},
                    "event_id": {"type": "string"}}},
                "Error": {"type": "object", "properties": {"error": {"type": "string"}, "param": {"type": "string"}}},
            },
        },
    }
