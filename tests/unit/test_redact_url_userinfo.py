"""A URL's userinfo leaves no token, with or without a password, in every tier.

``https://<token>@host`` is not an e-mail address: the e-mail keep pattern never starts
right after ``://``, and the userinfo rule takes a user part without a password too.
"""

from __future__ import annotations

import msgspec
import pytest

from auditshipd.redaction.redactor import Redactor, compile_policy

KEY = "url-userinfo-test-key-0123456789"
POLICIES = {"drop": {"action": "drop"}, "mask": {"action": "mask"}, "hash": {"action": "hash", "hash_key": KEY}}
GHP = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
UUID = "550e8400-e29b-41d4-a716-446655440000"
USER = "user_01HZX8Q3T5V7W9YB2C4D6F8G0J"
URLS = {
    f"https://{GHP}@github.com/acme/repo.git": ("https://", "@github.com/acme/repo.git", GHP),
    f"https://x-access-token:{GHP}@github.com/acme/repo.git": ("https://", "@github.com/acme/repo.git", GHP),
    f"https://{USER}@api.acme.com/v1": ("https://", "@api.acme.com/v1", USER),
    f"https://{UUID}@o123.ingest.sentry.io/42": ("https://", "@o123.ingest.sentry.io/42", UUID),
    f"see ssh://deploy@git.acme.com:acme/repo for {GHP[:4]}": ("see ssh://", "@git.acme.com:acme/repo for ghp_",
                                                               "deploy"),
}


def tiers(raw: dict) -> list[Redactor]:
    r = compile_policy(raw)
    assert r.fast_path is not None and r.fast_path.c_plan is not None
    return [r, Redactor(r.policy, c_tier=False)]


def line_with(value: str) -> bytes:
    return msgspec.json.encode({"id": "ev1", "action": "repo.cloned", "occurred_at": "2024-01-01T00:00:00Z",
                                "metadata": {"remote": value}, "actor": {"name": value}})


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("url", sorted(URLS))
def test_the_user_part_of_a_url_is_removed_masked_or_hashed(name, url):
    head, tail, user = URLS[url]
    line = line_with(url)
    outs = [r.redact_line(line) for r in tiers(POLICIES[name])]
    assert outs[0] == outs[1]
    c_plan = compile_policy(POLICIES[name]).fast_path.c_plan
    assert c_plan.redact(line) == outs[1]  # answered in C, with the Python bytes
    out = msgspec.json.decode(outs[0])
    assert user not in outs[0].decode()
    for value in (out["metadata"]["remote"], out["actor"]["name"]):
        assert value.startswith(head) and value.endswith(tail), value
        middle = value[len(head):len(value) - len(tail)]
        assert middle == {"drop": "", "mask": "[redacted]"}.get(name, middle)
        if name == "hash":
            assert middle.startswith("h:") and len(middle) == 18
    # Redacting the output again changes nothing.
    for r in tiers(POLICIES[name]):
        assert r.redact_line(outs[0]) == outs[0]


@pytest.mark.parametrize("value", [
    "ada@acme.com",
    "invite sent to ada@acme.com by bob@acme.com",
    "https://app.acme.com/invite?email=ada@acme.com",
    "mailto:ada@acme.com",
    "https://acme.com/u/ada@acme.com",
])
def test_addresses_outside_a_url_userinfo_are_kept(value):
    line = line_with(value)
    for r in tiers({}):
        out = msgspec.json.decode(r.redact_line(line))
        assert out["metadata"]["remote"] == value and out["actor"]["name"] == value
