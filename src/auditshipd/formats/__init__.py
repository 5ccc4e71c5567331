"""SIEM formats: what a sink ships, per sink (``format = "native" | "ocsf" | "ecs" | "cef"``).

An encoder runs after redaction and before batching: it reads the redacted event (the
line that leaves the machine), never the journal's, and returns the bytes to ship.
``native`` is no encoder at all: the redacted JSON goes out as it is.
``settings`` holds the configuration side (the ``format`` key, the ``[formats]`` table),
``registry`` picks a sink's encoder. Reference: docs/formats.md.
"""
