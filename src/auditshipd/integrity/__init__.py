"""Tamper evidence: per-stream hash chains, signed digests, signed export manifests and
their verification. The format is specified in ``docs/integrity.md``.

``cryptography`` (the ``integrity`` extra) is needed to sign and to check signatures;
the chain itself (:mod:`.canonical`, :mod:`.chain`) uses only the standard library and
msgspec.
"""
