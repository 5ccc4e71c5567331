"""Property tests: real credential and id formats never survive redaction, even in part.

Each token is generated the way its issuer makes it (random bodies from a seeded
``random.Random``: a credential is random, so a test of "detect by structure and
entropy" must not feed it hypothesis' low-entropy text), then planted in keys, values,
lists and free text, alone, separated or glued to another token. No run of 8 of its
characters may reach the output bytes, under drop, mask and hash, on the dict path and
on ``redact_line`` (the C tier first). Shapes the patterns do not name (GitLab, npm,
Hugging Face, DigitalOcean, SendGrid, Shopify, PyPI, plain random tokens) check that the
detection is by structure, not by a list of vendors. Emails, names and org slugs, around
the tokens, arrive unchanged.
"""

from __future__ import annotations

import fnmatch
import random
import string
import uuid

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditshipd.redaction.defaults import DEFAULT_ID_KEY_PATTERNS
from auditshipd.redaction.policy import normalize_key
from auditshipd.redaction.redactor import compile_policy

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
POLICIES = {
    "drop": compile_policy({}),
    "mask": compile_policy({"action": "mask"}),
    "hash": compile_policy({"action": "hash", "hash_key": "secrets-test-key-0123456789"}),
}
B62 = string.ascii_letters + string.digits
B64URL = B62 + "_-"
B64 = B62 + "+/"
HEX = "0123456789abcdef"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _r(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _aws_secret(rng: random.Random) -> str:
    # 40 base64 characters. Known limit (docs/redaction.md): a path-like run without a
    # digit is not told from a path; about one AWS secret in a thousand has no digit.
    while True:
        s = _r(rng, B64, 40)
        if any(c.isdigit() for c in s):
            return s


NAMED = {
    "ghp": lambda g: "ghp_" + _r(g, B62, 36),
    "gho": lambda g: "gho_" + _r(g, B62, 36),
    "github_pat": lambda g: "github_pat_" + _r(g, B62, 22) + "_" + _r(g, B62, 59),
    "slack_bot": lambda g: f"xoxb-{_r(g, string.digits, 12)}-{_r(g, string.digits, 13)}-{_r(g, B62, 24)}",
    "slack_user": lambda g: (f"xoxp-{_r(g, string.digits, 12)}-{_r(g, string.digits, 12)}-"
                             f"{_r(g, string.digits, 13)}-{_r(g, HEX, 32)}"),
    "stripe_sk": lambda g: "sk_live_" + _r(g, B62, 24),
    "stripe_rk": lambda g: "rk_live_" + _r(g, B62, 99),
    "aws_akia": lambda g: "AKIA" + _r(g, string.ascii_uppercase + "234567", 16),
    "aws_asia": lambda g: "ASIA" + _r(g, string.ascii_uppercase + "234567", 16),
    "aws_secret": _aws_secret,
    "google": lambda g: "AIza" + _r(g, B64URL, 35),
    "jwt": lambda g: ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + _r(g, B64URL, 60) + "." + _r(g, B64URL, 43)),
    "uuid": lambda g: str(uuid.UUID(int=g.getrandbits(128), version=4)),
    "ulid": lambda g: g.choice("01") + _r(g, CROCKFORD, 25),
    "objectid": lambda g: _r(g, HEX, 24),
    "sha1": lambda g: _r(g, HEX, 40),
    "sha256": lambda g: _r(g, HEX + "ABCDEF", 64),
}
# Shapes no pattern names: found by structure and entropy only.
UNNAMED = {
    "gitlab": lambda g: "glpat-" + _r(g, B62, 20),
    "npm": lambda g: "npm_" + _r(g, B62, 36),
    "huggingface": lambda g: "hf_" + _r(g, string.ascii_letters, 34),
    "digitalocean": lambda g: "dop_v1_" + _r(g, HEX, 64),
    "sendgrid": lambda g: "SG." + _r(g, B64URL, 22) + "." + _r(g, B64URL, 43),
    "shopify": lambda g: "shpat_" + _r(g, HEX, 32),
    "pypi": lambda g: "pypi-AgEIcHlwaS5vcmc" + _r(g, B64URL, 60),
    "random_b62": lambda g: _r(g, B62, g.randint(32, 64)),
    "random_b64url": lambda g: _r(g, B64URL, 43),
    "random_b32": lambda g: _r(g, string.ascii_uppercase + "234567", 32),
    "url_password": lambda g: f"postgres://svc:{_r(g, B62, 16)}@db.acme.test:5432/app",
}
SHAPES = {**NAMED, **UNNAMED}

word = st.text(string.ascii_lowercase, min_size=2, max_size=10)
names = st.builds(lambda a, b: f"{a.title()} {b.title()}", word, word)
slugs = st.lists(word, min_size=1, max_size=4).map("-".join)
emails = st.builds(lambda a, b: f"{a}.{b}@acme.test", word, word)


def _secret_of(token: str) -> str:
    """The part of a planted token that must not survive (a URL's host is not secret)."""
    if token.startswith("postgres://"):
        return token.split(":", 2)[2].split("@")[0]
    return token


@st.composite
def tokens(draw) -> tuple[str, str]:
    """(shape name, token): one shape, or two glued together without a separator."""
    rng = random.Random(draw(st.integers(0, 2**64)))
    name = draw(st.sampled_from(sorted(SHAPES)))
    token = SHAPES[name](rng)
    if draw(st.booleans()) and name != "url_password":
        other = draw(st.sampled_from(sorted(k for k in SHAPES if k != "url_password")))
        token = token + SHAPES[other](rng) if draw(st.booleans()) else SHAPES[other](rng) + token
        name = f"{name}+{other}"
    return name, token


@st.composite
def events(draw):
    planted: list[tuple[str, str]] = []
    people = {"name": draw(names), "email": draw(emails), "slug": draw(slugs)}

    def one() -> str:
        name, token = draw(tokens())
        planted.append((name, _secret_of(token)))
        return token

    sep = draw(st.sampled_from([" ", ", ", "; ", "\t", " (", "=", ":", "/", "'", '"']))
    metadata: dict[str, object] = {
        "token": one(),
        # (a slug glued to a token by '/' or '=' would be one base64 token with it)
        "note": f"{people['name']} <{people['email']}> of {people['slug']} {one()}{sep}rotated",
        "list": [one(), f"ref{sep}{one()}", 7],
        "nested": {"deeper": {"value": one()}},
        one(): "a key that is a credential",
        "owner": people["name"],
        "contact": people["email"],
        "org": people["slug"],
    }
    ev = {
        "id": "evt-1", "action": "api_key.created", "occurred_at": "2024-05-01T09:00:00.000Z",
        "actor": {"type": "user", "email": people["email"], "name": people["name"]},
        "organization": {"slug": people["slug"], "name": "Acme Corp"},
        "context": {"user_agent": f"curl/8.5.0 {one()}"},
        "metadata": metadata,
    }
    return ev, planted, people


def _assert_gone(out: bytes, planted: list[tuple[str, str]], where: str) -> None:
    for name, secret in planted:
        for i in range(len(secret) - 7):
            piece = secret[i:i + 8].encode()
            assert piece not in out, (where, name, secret, piece, out)


@SETTINGS
@given(data=events())
def test_no_run_of_8_characters_of_any_credential_survives(data):
    """Every credential/id shape, named or not, alone, separated or glued, in keys, values,
    lists and free text: no 8 of its characters in a row reach the output bytes."""
    ev, planted, people = data
    line = msgspec.json.encode(ev)
    for mode, redactor in POLICIES.items():
        fused = redactor.redact_line(line)
        _assert_gone(fused, planted, f"{mode}/redact_line")
        _assert_gone(msgspec.json.encode(redactor(ev)), planted, f"{mode}/dict")
        out = msgspec.json.decode(fused)
        # Emails, names and slugs are customer-facing: unchanged, in fields and in free text.
        assert out["actor"] == {"type": "user", "email": people["email"], "name": people["name"]}
        assert out["organization"]["slug"] == people["slug"]
        assert out["metadata"]["owner"] == people["name"]
        assert out["metadata"]["contact"] == people["email"]
        assert out["metadata"]["org"] == people["slug"]
        assert out["metadata"]["note"].startswith(f"{people['name']} <{people['email']}> of {people['slug']}")


def _id_named(key: str) -> bool:
    return any(fnmatch.fnmatchcase(normalize_key(key), p) for p in DEFAULT_ID_KEY_PATTERNS)


@settings(max_examples=300, deadline=None)
@given(name=names, email=emails, slug=slugs)
def test_emails_names_and_slugs_pass_unchanged(name, email, slug):
    """Customer-facing values, alone and in free text, leave byte for byte as they came
    (and as keys, unless named like an id key: a slug "session-eu" as a key goes by
    design, as every ``session*`` key does)."""
    for text in (name, email, slug, f"{name} <{email}> from {slug}", "ada@acme.test",
                 "Ada Lovelace", "acme-corp", "acme-corp-eu-west-1", "Grace Brewster Murray Hopper"):
        meta = {"v": text} if _id_named(text) else {"v": text, text: 1}
        ev = {"id": "e", "action": "a", "occurred_at": "t", "metadata": meta}
        for redactor in POLICIES.values():
            assert redactor.redact_line(msgspec.json.encode(ev)) == msgspec.json.encode(ev)


def test_github_fine_grained_pat_and_glued_uuid_go_whole():
    """The two shapes that leaked: a fine-grained PAT keeps none of its 59 last characters,
    a UUID glued after 16 hex digits keeps none of its groups."""
    rng = random.Random(7)
    pat = "github_pat_" + _r(rng, B62, 22) + "_" + _r(rng, B62, 59)
    glued = _r(rng, HEX, 16) + "6f1c2a9e-3b4d-4c5e-8f60-718293a4b5c6"
    for mode, redactor in POLICIES.items():
        for token in (pat, glued):
            out = redactor.redact_line(msgspec.json.encode(
                {"id": "e", "action": "a", "occurred_at": "t", "metadata": {"note": f"key {token} here"}}))
            _assert_gone(out, [("token", token)], mode)


# Tokens glued before a dotted credential (the first match takes "SG"), then its segments.
JWT_THEN_SENDGRID = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.hmH81LA8JizCcxOxLZ-PMGne5jgRQYCxONYqFvLG-gUzJAX-j_p9C"
    "npl8XG_.TFsY7LSqT_0Zpwc2vWi0Senpb1PjuojFAsorv3OV4AmSG.DjgbCP_VJEuarMC5Oqg_T2.E15a3hKObhoy"
    "9hxM5xLp06bxnQy5fkrkvmiV7cnzrZp"
)
LEAKED_SHAPES = {
    "base32 without a digit": "NFCMDJBINBQWTKUPZKCQNMRZZJQBZPYJ",
    "base32 without a digit, 20 letters": "MSXMRPHPQOLUHPXAIOIJ",
    "jwt+sendgrid": JWT_THEN_SENDGRID,
    "sendgrid+sendgrid": "SG.PacsnXbxDpCGRQrxghXDOG.aq6kp_EMFzyccXyn-MiDEGNQkAoKTQrt0coNCEpN29SSG."
                         "U9jffmp0mpPB98D41_nZG_.NpT78CCBEzsCpHmgYw2tjCWVznX0fTjeIkwG5JWo47G",
    "uuid+sendgrid": "c9ad4776-3051-40a1-917c-da2751e7b669SG.KlgSp3ucdL6iDDoY-7loK2."
                     "o0rBtPaBxf1kpKsn9ASiQmtF893rY9XbDDJ-2HOIrvH",
    "jwe with an empty part": "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..Ws7Jq5cN3xQ9pLm2RtVb1w."
                              "kD8fHs2LqPz0XwY7nMbV4cRt.Ja9Bq3LmZx2WkP7sTn5Qvw",
}
TIERS = {
    mode: (redactor, type(redactor)(redactor.policy, c_tier=False)) for mode, redactor in POLICIES.items()
}


def test_the_shapes_that_leaked_go_whole_in_every_tier():
    """A base32 secret with no digit (seed 2) and dotted credential segments left after
    a JWT or another token swallowed the "SG" before them (seed 1): in a user agent, in
    free text and alone, nothing of them is left, and the C tier, the Python tiers and
    the dict path give the same bytes."""
    assert TIERS["drop"][0].fast_path.c_plan is not None  # the C tier takes part
    for name, token in LEAKED_SHAPES.items():
        for text in (f"curl/8.5.0 {token}", f"key {token} rotated", token):
            ev = {"id": "e", "action": "a", "occurred_at": "t",
                  "context": {"user_agent": text}, "metadata": {"note": text}}
            line = msgspec.json.encode(ev)
            for mode, (c_tier, python_tiers) in TIERS.items():
                out = c_tier.redact_line(line)
                assert out == python_tiers.redact_line(line) == msgspec.json.encode(c_tier(ev)), (name, mode)
                _assert_gone(out, [(name, token)], f"{mode}/{name}")


ORDINARY = (
    "MAX_RETRIES", "HTTP_X_FORWARDED_FOR", "MAX_RETRIES_BEFORE_GIVING_UP_ON_DELIVERY",
    "INTERNATIONALIZATION", "ELECTROENCEPHALOGRAPHY", "AUTHENTICATIONREQUIRED",
    "PLEASEDONOTREPLYTOTHISEMAIL", "ACCESS DENIED FOR USER ACCOUNT",
    "1.2.3", "v10.15.7-rc.1+build.20240501", "Python/3.11.9 aiohttp/3.9.5",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Mobile/15E148 Safari/604.1",
    "curl/8.5.0", "report-2024-05.tar.gz", "exports.example.com", "api.eu-west-1.acme.test",
    "Export finished. Download it from the dashboard.",
)


def test_ordinary_text_passes_unchanged():
    """Upper-case constants, shouted words, version strings, user agents, file and host
    names are not credentials: they leave byte for byte, alone and in free text."""
    for text in ORDINARY:
        ev = {"id": "e", "action": "a", "occurred_at": "t",
              "context": {"user_agent": text}, "metadata": {"note": f"{text} (ok)", "v": text}}
        line = msgspec.json.encode(ev)
        for mode, (c_tier, python_tiers) in TIERS.items():
            assert c_tier.redact_line(line) == python_tiers.redact_line(line) == line, (mode, text)


def test_an_id_keeps_a_short_file_extension_but_not_the_parts_after_it():
    """Glued dotted parts go with the token; a last short lower-case part (an extension)
    stays, so a file name stays readable and no 8 characters of the token are left."""
    token = "audit_log_export_01HZX8K2M3N4P5Q6R7S8T9V0X1"
    drop = POLICIES["drop"]
    assert drop.redact_line(msgspec.json.encode(
        {"id": "e", "action": "a", "occurred_at": "t", "metadata": {"f": f"{token}.csv"}})
    ).endswith(b'"metadata":{"f":".csv"}}')
    out = drop.redact_line(msgspec.json.encode(
        {"id": "e", "action": "a", "occurred_at": "t", "metadata": {"f": f"x {token}.tar.V2abcdef.gz."}}))
    assert out.endswith(b'"metadata":{"f":"x .gz."}}'), out
