"""API keys (``shared/auth/keys.py``): the format, what is stored, and the ring's freshness rule."""

from __future__ import annotations

import re

import pytest

from shared.auth import CredentialsUnavailable
from shared.auth.keys import KeyRing, digest, issue_key, key_id_of, matches, revoke
from shared.contracts import Role

pytestmark = pytest.mark.unit


def test_a_key_is_prefixed_carries_its_id_and_256_random_bits() -> None:
    issued = issue_key("acme", Role.OPERATOR, created_by="user:ana", description="ci")
    assert re.fullmatch(r"aoetl_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", issued.token)
    assert key_id_of(issued.token) == issued.key_id == issued.record.key_id
    assert issued.token not in issued.record.model_dump_json()  # only its hash is stored
    assert issued.record.secret_sha256 == digest(issued.token) and len(issued.record.secret_sha256) == 64
    others = {issue_key("acme", Role.VIEWER, created_by="t").token for _ in range(200)}
    assert len(others) == 200
    assert matches(issued.record, issued.token) and not matches(
        issued.record, issued.token[:-1] + ("y" if issued.token.endswith("x") else "x")
    )
    for not_a_key in ("", "aoetl_", "aoetl_XYZ_abc", issued.token + "x", "Bearer " + issued.token):
        assert key_id_of(not_a_key) is None


def test_revocation_is_a_new_record_and_the_first_one_stands() -> None:
    issued = issue_key("acme", Role.ADMIN, created_by="t")
    revoked = revoke(issued.record, by="key:abc")
    assert revoked.revoked and revoked.revoked_by == "key:abc" and not issued.record.revoked
    assert revoke(revoked, by="someone-else") is revoked


def test_the_ring_verifies_only_current_unrevoked_matching_keys() -> None:
    now = [100.0]
    ring = KeyRing(5.0, clock=lambda: now[0])
    issued = issue_key("acme", Role.VIEWER, created_by="t")
    forged = issued.token[:-4] + "AAAA"  # right key id, wrong secret
    ring.apply(issued.key_id, issued.record)
    with pytest.raises(CredentialsUnavailable):
        ring.verify(issued.token)  # never confirmed fresh: no answer at all
    ring.confirm_fresh(100.0)
    assert ring.verify(issued.token) == issued.record
    assert ring.verify(forged) is None and ring.verify("aoetl_" + "0" * 16 + "_" + "a" * 43) is None
    ring.apply(issued.key_id, revoke(issued.record, by="t"))
    assert ring.verify(issued.token) is None
    ring.apply(issued.key_id, None)  # a tombstone forgets it
    assert ring.get(issued.key_id) is None


def test_a_revocation_is_refused_by_max_staleness_even_if_the_ring_never_hears_of_it() -> None:
    """The bound: a ring confirmed fresh as of t refuses every key after t + max_staleness, so a revocation
    written after t cannot stay unseen for longer than that."""
    now = [0.0]
    ring = KeyRing(5.0, clock=lambda: now[0])
    issued = issue_key("acme", Role.ADMIN, created_by="t")
    ring.apply(issued.key_id, issued.record)
    ring.confirm_fresh(0.0)
    now[0] = 5.0
    assert ring.verify(issued.token) is not None
    now[0] = 5.001  # the revocation, written at 0.0001, never arrived: the ring no longer answers
    with pytest.raises(CredentialsUnavailable):
        ring.verify(issued.token)
    ring.confirm_fresh(4.0)  # read up to what was written before 4.0: fresh until 9.0
    assert ring.is_fresh()
    ring.confirm_fresh(1.0)  # a late, older confirmation does not move freshness back
    now[0] = 9.5
    assert not ring.is_fresh()
    ring.clear()  # about to re-read the topic: neither the keys nor the freshness survive
    assert not ring.is_fresh() and ring.all() == []
