"""Webhook signature schemes against vectors computed here with hashlib/hmac/base64 directly (and the
published examples of GitHub and Standard Webhooks), never with the module's own signing helpers."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from starlette.datastructures import Headers

from shared.webhooks.signatures import (
    SignatureError,
    sign_github,
    sign_hmac,
    sign_standard,
    sign_stripe,
    verify_github,
    verify_hmac,
    verify_standard,
    verify_stripe,
)

pytestmark = pytest.mark.unit

BODY = b'{"id":"evt_1","type":"invoice.paid","data":{"object":{"amount":4200}}}'
NOW = 1_700_000_000


def hex_mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def b64_mac(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def reason(excinfo: pytest.ExceptionInfo[SignatureError]) -> str:
    return excinfo.value.reason


# ------------------------------------------------------------------------------------------- GitHub
def test_github_published_example_verifies() -> None:
    # The example of GitHub's "Validating webhook deliveries" documentation.
    headers = Headers(
        {"X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"}
    )
    verify_github(b"Hello, World!", headers, ["It's a Secret to Everybody"])


def test_github_good_bad_rotated_and_malformed() -> None:
    good = Headers({"x-hub-signature-256": "sha256=" + hex_mac(b"s3cret", BODY)})
    verify_github(BODY, good, ["s3cret"])
    verify_github(BODY, good, ["new-secret", "s3cret"])  # rotation: the old secret still listed
    with pytest.raises(SignatureError) as wrong_secret:
        verify_github(BODY, good, ["other"])
    assert reason(wrong_secret) == "mismatch"
    with pytest.raises(SignatureError) as tampered:
        verify_github(BODY + b" ", good, ["s3cret"])
    assert reason(tampered) == "mismatch"
    for bad in (
        "sha1=" + hex_mac(b"s3cret", BODY),
        "sha256=zz",
        "sha256=" + "ab" * 16,
        hex_mac(b"s3cret", BODY),
    ):
        with pytest.raises(SignatureError) as malformed:
            verify_github(BODY, Headers({"X-Hub-Signature-256": bad}), ["s3cret"])
        assert reason(malformed) == "malformed", bad
    with pytest.raises(SignatureError) as missing:
        verify_github(BODY, Headers({}), ["s3cret"])
    assert reason(missing) == "missing"


def test_github_signing_helper_matches_independent_digest() -> None:
    assert sign_github(BODY, "k") == {"X-Hub-Signature-256": "sha256=" + hex_mac(b"k", BODY)}


# ------------------------------------------------------------------------------------------- Stripe
def stripe_header(secret: str, t: int, *extra: str) -> Headers:
    v1 = hex_mac(secret.encode(), f"{t}.".encode() + BODY)
    return Headers({"Stripe-Signature": ",".join([f"t={t}", *extra, f"v1={v1}"])})


def test_stripe_good_and_tolerance_edges() -> None:
    secret = "whsec_test_secret"
    verify_stripe(BODY, stripe_header(secret, NOW), [secret], now=NOW)
    verify_stripe(BODY, stripe_header(secret, NOW - 300), [secret], now=NOW)  # exactly at the edge
    with pytest.raises(SignatureError) as stale:
        verify_stripe(BODY, stripe_header(secret, NOW - 301), [secret], now=NOW)
    assert reason(stale) == "stale"
    with pytest.raises(SignatureError) as future:
        verify_stripe(BODY, stripe_header(secret, NOW + 301), [secret], now=NOW)
    assert reason(future) == "future"
    verify_stripe(BODY, stripe_header(secret, NOW - 1000), [secret], now=NOW, tolerance_s=1200)


def test_stripe_several_v1_during_secret_rotation() -> None:
    old, new = "whsec_old", "whsec_new"
    v1_old = hex_mac(old.encode(), f"{NOW}.".encode() + BODY)
    v1_new = hex_mac(new.encode(), f"{NOW}.".encode() + BODY)
    header = Headers({"Stripe-Signature": f"t={NOW},v1={v1_new},v1={v1_old},v0=ignored"})
    verify_stripe(BODY, header, [old], now=NOW)
    verify_stripe(BODY, header, [new], now=NOW)
    with pytest.raises(SignatureError) as mismatch:
        verify_stripe(BODY, header, ["whsec_third"], now=NOW)
    assert reason(mismatch) == "mismatch"


def test_stripe_signature_of_another_timestamp_is_rejected() -> None:
    secret = "whsec_x"
    v1 = hex_mac(secret.encode(), f"{NOW - 10}.".encode() + BODY)
    with pytest.raises(SignatureError) as mismatch:
        verify_stripe(BODY, Headers({"Stripe-Signature": f"t={NOW},v1={v1}"}), [secret], now=NOW)
    assert reason(mismatch) == "mismatch"


@pytest.mark.parametrize(
    "value",
    [
        "v1=" + "ab" * 32,
        f"t={NOW}",
        f"t=yesterday,v1={'ab' * 32}",
        f"t={NOW},v1=nothex",
        f"t={NOW};v1=ab",
        "",
    ],
)
def test_stripe_malformed_headers(value: str) -> None:
    with pytest.raises(SignatureError) as excinfo:
        verify_stripe(BODY, Headers({"Stripe-Signature": value}), ["whsec_x"], now=NOW)
    assert reason(excinfo) in {"malformed", "missing"}


def test_stripe_signing_helper_matches_independent_digest() -> None:
    expected = f"t={NOW},v1={hex_mac(b'whsec_k', f'{NOW}.'.encode() + BODY)}"
    assert sign_stripe(BODY, "whsec_k", timestamp=NOW) == {"Stripe-Signature": expected}


# -------------------------------------------------------------------------------- Standard Webhooks
STD_KEY = b"0123456789abcdef0123456789abcdef"
STD_SECRET = "whsec_" + base64.b64encode(STD_KEY).decode()


def standard_headers(msg_id: str, t: int, signature: str) -> Headers:
    return Headers({"webhook-id": msg_id, "webhook-timestamp": str(t), "webhook-signature": signature})


def test_standard_webhooks_published_example_verifies() -> None:
    # The example of the Standard Webhooks specification.
    headers = standard_headers(
        "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    verify_standard(
        b'{"test": 2432232314}', headers, ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], now=1614265330
    )


def test_standard_good_rotation_stale_future() -> None:
    signature = b64_mac(STD_KEY, f"msg_1.{NOW}.".encode() + BODY)
    other_secret = "whsec_" + base64.b64encode(b"another-key-of-thirty-two-bytes!").decode()
    verify_standard(BODY, standard_headers("msg_1", NOW, f"v1,{signature}"), [STD_SECRET], now=NOW)
    # several signatures in the header (sender rotating) and several secrets (receiver rotating)
    verify_standard(
        BODY,
        standard_headers("msg_1", NOW, f"v1,{base64.b64encode(b'x' * 32).decode()} v1a,xyz v1,{signature}"),
        [other_secret, STD_SECRET],
        now=NOW,
    )
    with pytest.raises(SignatureError) as wrong_id:  # the id is signed: it cannot be swapped
        verify_standard(BODY, standard_headers("msg_2", NOW, f"v1,{signature}"), [STD_SECRET], now=NOW)
    assert reason(wrong_id) == "mismatch"
    old = b64_mac(STD_KEY, f"msg_1.{NOW - 301}.".encode() + BODY)
    with pytest.raises(SignatureError) as stale:
        verify_standard(BODY, standard_headers("msg_1", NOW - 301, f"v1,{old}"), [STD_SECRET], now=NOW)
    assert reason(stale) == "stale"
    ahead = b64_mac(STD_KEY, f"msg_1.{NOW + 301}.".encode() + BODY)
    with pytest.raises(SignatureError) as future:
        verify_standard(BODY, standard_headers("msg_1", NOW + 301, f"v1,{ahead}"), [STD_SECRET], now=NOW)
    assert reason(future) == "future"


@pytest.mark.parametrize("signature", ["v1:abc", "v1,not base64!", "v2,abcd", "g0hM9SsE"])
def test_standard_malformed_signature_header(signature: str) -> None:
    with pytest.raises(SignatureError) as excinfo:
        verify_standard(BODY, standard_headers("msg_1", NOW, signature), [STD_SECRET], now=NOW)
    assert reason(excinfo) == "malformed"


def test_standard_missing_headers_and_bad_timestamp() -> None:
    with pytest.raises(SignatureError) as missing:
        verify_standard(
            BODY, Headers({"webhook-id": "m", "webhook-signature": "v1,AA=="}), [STD_SECRET], now=NOW
        )
    assert reason(missing) == "missing"
    headers = Headers({"webhook-id": "m", "webhook-timestamp": "soon", "webhook-signature": "v1,AA=="})
    with pytest.raises(SignatureError) as malformed:
        verify_standard(BODY, headers, [STD_SECRET], now=NOW)
    assert reason(malformed) == "malformed"


def test_standard_signing_helper_matches_independent_digest() -> None:
    headers = sign_standard(BODY, STD_SECRET, msg_id="msg_9", timestamp=NOW)
    assert headers["webhook-signature"] == "v1," + b64_mac(STD_KEY, f"msg_9.{NOW}.".encode() + BODY)


# ------------------------------------------------------------------------------------- generic HMAC
def test_generic_hmac_with_configurable_header() -> None:
    digest = hex_mac(b"k1", BODY)
    verify_hmac(BODY, Headers({"X-Signature-256": digest}), ["k1"])
    verify_hmac(BODY, Headers({"X-Acme-Sig": "sha256=" + digest}), ["k0", "k1"], header="X-Acme-Sig")
    with pytest.raises(SignatureError) as missing:
        verify_hmac(BODY, Headers({"X-Signature-256": digest}), ["k1"], header="X-Acme-Sig")
    assert reason(missing) == "missing"
    with pytest.raises(SignatureError) as mismatch:
        verify_hmac(BODY, Headers({"X-Signature-256": digest}), ["k2"])
    assert reason(mismatch) == "mismatch"
    with pytest.raises(SignatureError) as malformed:
        verify_hmac(BODY, Headers({"X-Signature-256": "sha256=xyz"}), ["k1"])
    assert reason(malformed) == "malformed"
    assert sign_hmac(BODY, "k1", header="X-Acme-Sig") == {"X-Acme-Sig": "sha256=" + digest}
