"""`SecretMask`: the secret values a worker handed to a run, and their base64 forms, are masked in
every line the run's logs carry."""

from __future__ import annotations

import base64

import pytest

from conveyor.worker.masking import MIN_LENGTH, SecretMask, encoded_forms

TOKEN = "ghp_Sup3r-s3cret/token+value?"


def _masked(text: str, *values: str) -> str:
    mask = SecretMask()
    for value in values:
        mask.add(value)
    return mask.apply(text)


@pytest.mark.parametrize(
    "shown",
    [
        TOKEN,
        base64.b64encode(TOKEN.encode()).decode(),
        base64.b64encode(TOKEN.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(TOKEN.encode()).decode(),
        base64.urlsafe_b64encode(TOKEN.encode()).decode().rstrip("="),
    ],
    ids=["plain", "base64", "base64-unpadded", "urlsafe", "urlsafe-unpadded"],
)
def test_the_value_and_its_base64_forms_are_masked_anywhere_in_a_line(shown: str) -> None:
    line = f"before {shown} after"
    assert _masked(line, TOKEN) == "before **** after"


@pytest.mark.parametrize("prefix", ["", "u", "us", "user:", "x-access-token:"])
@pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
def test_the_value_is_masked_inside_a_longer_base64_text_at_every_alignment(
    prefix: str, encode: object
) -> None:
    # e.g. an HTTP basic-auth header: base64("user:" + token)
    encoded = encode(f"{prefix}{TOKEN}!".encode()).decode()  # type: ignore[operator]
    masked = _masked(f"Authorization: Basic {encoded}", TOKEN)
    assert "****" in masked
    # what is left around the mask cannot spell out more than 2 bytes of the token
    leftover = masked.removeprefix("Authorization: Basic ").replace("****", "")
    assert len(leftover) <= len(encode(prefix.encode() + b"!")) + 4  # type: ignore[operator]


def test_longest_value_first_and_several_values() -> None:
    assert _masked("a=secret-one b=secret-one-two", "secret-one", "secret-one-two") == (
        "a=**** b=****"
    )


def test_short_values_are_not_masked_and_nothing_registered_changes_nothing() -> None:
    assert _masked("on 1 abc", "on", "1", "abc") == "on 1 abc"
    assert min(len(form) for form in encoded_forms("abcd")) >= MIN_LENGTH
    assert SecretMask().apply("x ghp_123") == "x ghp_123"
