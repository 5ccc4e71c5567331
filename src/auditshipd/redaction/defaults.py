"""The vocabulary of a redaction policy and its defaults: actions, always-kept fields,
the default allowlist, id key globs, id value patterns and their prefilter."""

from __future__ import annotations

from typing import Any

__all__ = ["ABSENT", "ACTIONS", "ALWAYS_KEPT", "DEFAULT_KEEP_VALUE_PATTERNS", "DEFAULT_RAW", "REQUIRED"]


ACTIONS = ("drop", "mask", "hash")


# How much an action hides; a sink override may only move up this scale.
_STRENGTH = {"hash": 0, "mask": 1, "drop": 2}


ALWAYS_KEPT = ("id", "action", "occurred_at", "version")


REQUIRED = ("id", "action", "occurred_at")


MIN_HASH_KEY_CHARS = 16


# Marks "no such branch" in the plan tree (``None`` already means "free-form leaf").
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()


DEFAULT_ALLOW = (
    "actor.type",
    "actor.email",
    "actor.name",
    "targets[].type",
    "targets[].email",
    "targets[].name",
    "organization.slug",
    "organization.name",
    "context.*",
    "metadata.*",
)


DEFAULT_ID_KEY_PATTERNS = (
    "id",
    "*_id",
    "*_ids",
    "*uuid*",
    "*guid",
    "*internal*",
    "session*",
    "*_session",
    "*token*",
    "*secret*",
    "*password*",
    "*passwd*",
    "api_key",
    "*_api_key",
    "*private_key*",
    "*credential*",
    "authorization",
    "*cookie*",
)


# Every pattern that finds a token also takes what is glued after it ([A-Za-z0-9_+/=-]*),
# and the dot-separated parts that follow (a JWT's or a SendGrid-like key's segments
# after a token glued before them): credentials are built of parts (github_pat_<22>_<59>,
# xoxp-<num>-<num>-<hex>, <b64url>.<b64url>.<b64url>) and ids get glued together, and a
# part left behind is still a secret. A last part of at most 6 lower-case letters and
# digits is left (a file extension or a domain's end: usr_01H....csv keeps ".csv"; it
# is too short to be a secret). Vendors are not listed
# one by one where a shape covers them: the last patterns detect by structure (long
# runs mixing digits with letters, or both cases; base64; dotted triples; URL userinfo).
DEFAULT_ID_VALUE_PATTERNS = (
    # UUID, any version, anywhere in a string.
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # Credentials in an Authorization-style string: "Bearer <token>", "Basic <b64>".
    r"(?i:bearer|basic)\s+(?=[A-Za-z0-9._~+/=-]*[0-9])[A-Za-z0-9_~+/=-]{16,}[A-Za-z0-9._~+/=-]*",
    # JSON Web Tokens, and any dotted triple of base64url parts (JWS, SendGrid-like keys).
    r"eyJ[A-Za-z0-9_-]{13,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    r"(?<![A-Za-z0-9_.-])(?=[A-Za-z0-9_.-]*[0-9])[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # Prefixed ids and keys: usr_01H..., org_..., sk_live_..., ghp_..., github_pat_...
    # (a tail of 16+ letters and digits with a digit or a capital in it) ...
    r"(?<![A-Za-z0-9])[a-z][a-z0-9]{1,15}(?:_[a-z][a-z0-9]{1,15}){0,2}_(?=[A-Za-z0-9]*[0-9A-Z])[A-Za-z0-9]{16,}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # ... or with '-' and a tail that mixes digits and capitals (glpat-..., npm-like keys;
    # lower-case slugs such as acme-corp-eu-west-1 stay) ...
    r"(?<![A-Za-z0-9_-])[a-z][a-z0-9]{1,15}(?:[_-][a-z][a-z0-9]{1,15}){0,2}[_-](?=[A-Za-z0-9_-]{16})(?:(?=(?:[a-z0-9_-]*[A-Z]){2})(?=[A-Za-z_-]*[0-9])|(?=(?:[a-z0-9_-]*[A-Z]){4}))[A-Za-z0-9_-]{16,}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # ... or numbered parts (xoxb-<12 digits>-<13 digits>-...).
    r"(?<![A-Za-z0-9_-])[A-Za-z0-9]{1,15}(?:[_-][0-9]{8,}){2,}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # Long standard base64 (with '+' or '/'): 40+ characters mixing digits and both cases.
    r"(?<![A-Za-z0-9+/])(?=[A-Za-z0-9+/]*[+/])(?=[A-Za-z0-9+/]*[0-9])(?=[A-Za-z0-9+/]*[a-z])(?=[A-Za-z0-9+/]*[A-Z])[A-Za-z0-9+/]{40,}={0,2}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # Long hex: database keys, ObjectIds, digests, undashed UUIDs.
    r"[0-9A-Fa-f]{24,}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # A bare ULID (Crockford base32, 26 characters).
    r"(?<![A-Za-z0-9])[0-7][0-9A-HJKMNP-TV-Z]{25}(?![A-Za-z0-9])[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # Cloud keys with a fixed head: AWS access key ids, Google API keys.
    r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA)[A-Z0-9]{16}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    r"AIza[0-9A-Za-z_-]{35}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # Long base64url tokens: 32+ characters mixing digits, lower and upper case.
    r"(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*[A-Z])[A-Za-z0-9_-]{32,}={0,2}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # Entropy, by structure: 20+ letters and digits in one run, mixing digits and letters
    # twice (a random token; words and slugs have runs of one kind) ...
    r"(?<![A-Za-z0-9])(?=[A-Za-z0-9]{20})(?=[A-Za-z]*[0-9]+[A-Za-z]+[0-9])[A-Za-z0-9]{20,}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    r"(?<![A-Za-z0-9])(?=[A-Za-z0-9]{20})(?=[0-9]*[A-Za-z]+[0-9]+[A-Za-z])[A-Za-z0-9]{20,}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # ... or capitals and digits only (base32, access key ids), anywhere in a run ...
    r"(?=[A-Z0-9]{20})(?=[A-Z]*[0-9])(?=[0-9]*[A-Z])[A-Z0-9]{20,}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # ... or capitals only (base32 without a digit) with four consonants in a row (Y
    # counts as a vowel) or a Q without a U: random capitals have one (99.8% of 32-letter
    # runs, 98% of 20-letter ones), shouted words of 20+ letters rarely do ...
    r"(?<![A-Z])(?=[A-Z]{20})(?=[A-Z]*?(?:[B-DF-HJ-NP-TV-XZ]{4}|Q(?!U)))[A-Z]{20,}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # ... or both cases switching often (base62/base64/base64url without digits): 6+
    # capitals, two capitals in a row twice and a lone lower-case letter between capitals
    # (camelCase words and acronyms do not have both).
    r"(?<![A-Za-z0-9+/])(?=[A-Za-z0-9+/]{40})(?=[A-Za-z0-9+/]*[+/])(?=(?:[a-z0-9+/]*[A-Z]){6})(?=(?:[A-Za-z0-9+/]*?[A-Z][0-9+/]*[A-Z]){2})(?=[A-Za-z0-9+/]*?[A-Z][a-z][A-Z0-9])[A-Za-z0-9+/]{40,}={0,2}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    r"(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]{20})(?=(?:[a-z0-9_-]*[A-Z]){6})(?=(?:[A-Za-z0-9_-]*?[A-Z][0-9_-]*[A-Z]){2})(?=[A-Za-z0-9_-]*?[A-Z][a-z][A-Z0-9])[A-Za-z0-9_-]{20,}[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # Long numeric ids (snowflakes, card numbers).
    r"(?<![0-9])[0-9]{16,}(?![0-9])[A-Za-z0-9_+/=-]*(?:\.+(?![a-z0-9]{1,6}(?![A-Za-z0-9_+/=-]|\.+[A-Za-z0-9_+/=-]))[A-Za-z0-9_+/=-]+)*",
    # The userinfo of a URL (https://user:secret@host, https://<token>@host): from "://"
    # to "@", a user part without a password too.
    r"(?<=://)(?:[^\s/?#@:]*:[^\s/?#@]+|[^\s/?#@:]+)(?=@)",
)


DEFAULT_KEEP_VALUE_PATTERNS = (
    # An email address is customer-facing, even when its local part looks like an id.
    # Its local part leaves out "/ ? = & #", which RFC 5322 allows but URLs use: a keep
    # match never starts inside a URL's path or query ("/orgs/org_.../x?email=a@b.com"
    # keeps the address only, the id is still seen), nor right after "://": there
    # "<token>@host" is a URL's userinfo, removed as such.
    r"(?<!://)(?<![A-Za-z0-9!$%'*+^_`{|}~.-])[A-Za-z0-9!$%'*+^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",
)


DEFAULT_RAW: dict[str, Any] = {
    "allow": list(DEFAULT_ALLOW),
    "action": "drop",
    "id_key_patterns": list(DEFAULT_ID_KEY_PATTERNS),
    "id_value_patterns": list(DEFAULT_ID_VALUE_PATTERNS),
    "keep_value_patterns": list(DEFAULT_KEEP_VALUE_PATTERNS),
}


# Every match of every default id pattern holds a run of 16 of these characters, or is
# the userinfo of a URL ("://" then "@" before any space, "/", "?" or "#"). When a policy
# uses only default patterns, a string with neither is skipped without running the (much
# slower) alternation: most customer-facing strings never reach it. The C tier
# (redaction/_redact_c.c: needs_check) and the fast path's check of the encoded event (redaction/fastpath.py) apply the same rule.
_PREFILTER = r"[A-Za-z0-9_~+/=-]{16}|://[^\s/?#@]*@"


_PREFILTER_LEN = 4  # "://@"


# Where a default id pattern matches, the match STARTS with such a run, with
# a short part and a dot before one (a dotted triple), "bearer"/"basic" and a space, or
# right after "://". Put first in the alternation, this lookahead lets the
# regex engine leave a position after one cheap test instead of trying every pattern
# there: 3x to 7x faster on ordinary text, and the same matches (a position it rejects
# is one where no default pattern could start).
_GUARD = r"(?=[A-Za-z0-9_~+/=-]{16}|(?i:bearer|basic)\s|[A-Za-z0-9_-]{2,15}\.[A-Za-z0-9_-]{16}|(?<=://))"
