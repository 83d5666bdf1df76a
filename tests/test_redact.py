"""cartfhir.redact: registered secrets and credential shapes leave every text they reach."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from cartfhir.redact import MASK, mask_url, redact, redact_cut, register, register_url


def test_a_registered_secret_goes_in_every_encoded_form() -> None:
    secret = "pa ss/w0rd+\"x\"-9f8e"
    register(secret)
    for form in (secret, quote(secret, safe=""), json.dumps(secret)[1:-1],
                 base64.b64encode(secret.encode()).decode()):
        assert redact(f"the server said {form} twice: {form}") == (
            f"the server said {MASK} twice: {MASK}")


def test_too_short_values_are_not_registered() -> None:
    register("ab")
    assert redact("about abba") == "about abba"


def test_credentials_are_masked_by_shape_even_when_never_registered() -> None:
    text = ("Authorization: Bearer zq9XW-unregistered.7 and Basic dXNlcjpwYXNz== and "
            "eyJhbGciOiJSUzM4NCJ9.eyJzdWIiOiJ4In0.c2ln and https://bob:hunter2@h.test/x "
            "and https://h.test/f?sig=abc123&_count=5")
    assert redact(text) == (
        f"Authorization: Bearer {MASK} and Basic {MASK} and {MASK} and https://{MASK}@h.test/x "
        f"and https://h.test/f?sig={MASK}&_count=5")
    assert redact("basic auth needs a username") == "basic auth needs a username"


def test_query_secrets_of_a_requested_url_are_registered_but_fhir_codes_are_not() -> None:
    register_url("https://h.test/status?job=1&access_token=qwerty-12345"
                 "&code=http://loinc.org|718-7")
    assert redact("echo: qwerty-12345") == f"echo: {MASK}"
    assert redact("Observation?code=http://loinc.org|718-7") == (
        "Observation?code=http://loinc.org|718-7")


def test_mask_url() -> None:
    assert mask_url("https://u:p@h.test/x?token=abc&_count=5&code=1") == (
        f"https://{MASK}@h.test/x?token={MASK}&_count=5&code={MASK}")
    assert mask_url(mask_url("https://h.test/x?token=abc")) == mask_url("https://h.test/x?token=abc")


def test_a_registered_secret_is_masked_in_any_case_but_a_short_one_only_as_is() -> None:
    register("Mixed-Case-S3cret-77")
    assert redact("echo MIXED-CASE-S3CRET-77 and mixed-case-s3cret-77") == (
        f"echo {MASK} and {MASK}")
    register("Ab1x")  # short: in another case it is more likely a word than the secret
    assert redact("Ab1x ab1x") == f"{MASK} ab1x"


def test_text_is_cut_only_after_it_is_redacted() -> None:
    """A secret straddling the cut must not keep its first characters (they narrow it down)."""
    secret = "Zq8vN3kLmP0rT6wYxB2cD5fH7jK9"
    register(secret)
    text = "x" * 290 + " " + secret + " and more"
    shown = redact_cut(text, 300)
    assert shown == "x" * 290 + f" {MASK} and m..."
    assert redact_cut("short", 300) == "short"


def _encodings(secret: str) -> dict[str, str]:
    data = secret.encode()
    once = quote(secret, safe="")
    return {
        "base64 of the Bearer header": base64.b64encode(b"Bearer " + data).decode(),
        "hex": data.hex(), "HEX": data.hex().upper(),
        "base64 unpadded": base64.b64encode(data).decode().rstrip("="),
        "urlsafe base64": base64.urlsafe_b64encode(data).decode(),
        "urlsafe base64 unpadded": base64.urlsafe_b64encode(data).decode().rstrip("="),
        "quoted keeping /": quote(secret),
        "percent-encoded twice": quote(once, safe=""),
        "percent-encoded twice, lower case": quote(once, safe="").lower(),
        "base64 inside a longer blob": base64.b64encode(
            json.dumps({"access_token": secret}).encode()).decode(),
    }


@pytest.mark.parametrize("name", list(_encodings("x")))
def test_encoded_forms_of_a_registered_secret_are_masked(name: str) -> None:
    secret = "s3cr3t+Tok/en=value_xy"  # '+', '/' and '=' make each encoding differ
    register(secret)
    form = _encodings(secret)[name]
    shown = redact(f"the server echoed {form} back")
    assert MASK in shown, (name, shown)
    # what is left of the form is at most the few characters that also encode its neighbours
    left = shown.replace("the server echoed ", "").replace(" back", "").replace(MASK, "")
    assert len(left) <= len(form) - len(secret), (name, shown)


def test_short_secrets_keep_their_encoded_forms_case_sensitive() -> None:
    register("q7Zk")  # shorter than MIN_CASELESS: masked as is, not in other letter cases
    assert redact("hex 71375a6b") == f"hex {MASK}"
    assert redact("word Q7ZK") == "word Q7ZK"
