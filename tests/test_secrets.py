"""`Secret`, URL and text redaction, and ``${NAME}`` templates: a value never shows in clear."""

from __future__ import annotations

import copy
import logging
import pickle
import traceback

import pytest

from conveyor.errors import ConfigError
from conveyor.secrets import (
    REDACTED,
    Secret,
    SecretStore,
    redact_text,
    redact_url,
    resolve_templates,
    reveal,
)

VALUE = "s3cr3t-Value-9f8e7d"


class DictStore:
    """A secret store backed by a dict, counting lookups."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: list[str] = []

    def get_secret(self, name: str) -> str | None:
        self.asked.append(name)
        return self.values.get(name)


@pytest.mark.parametrize(
    "render",
    [
        str,
        repr,
        format,
        lambda s: f"{s}",
        lambda s: f"{s!r}",
        lambda s: f"{s:>30}",
        lambda s: "%s" % s,  # noqa: UP031 - the old spelling must redact too
        lambda s: "%r" % s,  # noqa: UP031
        lambda s: "{}".format(s),  # noqa: UP032
        lambda s: str([s, {"k": s}]),
        lambda s: str((s,)),
    ],
)
def test_secret_never_renders_its_value(render: object) -> None:
    for secret in (Secret(VALUE), Secret(VALUE, name="DB_PASSWORD")):
        text = render(secret)  # type: ignore[operator]
        assert VALUE not in text
        assert REDACTED in text or "DB_PASSWORD" in text


def test_secret_reveals_only_on_request() -> None:
    secret = Secret(VALUE, name="TOKEN")
    assert secret.reveal() == VALUE
    assert reveal(secret) == VALUE
    assert reveal("plain") == "plain"
    assert Secret(secret).reveal() == VALUE
    assert secret == Secret(VALUE)
    assert secret != VALUE
    assert bool(secret)
    assert not Secret("")
    assert len({secret, Secret(VALUE)}) == 1


def test_secret_survives_copies_but_refuses_pickling() -> None:
    secret = Secret(VALUE)
    config = {"token": secret, "nested": [secret]}
    assert copy.deepcopy(config)["token"].reveal() == VALUE
    assert copy.copy(secret) is secret
    with pytest.raises(TypeError, match="cannot be pickled") as caught:
        pickle.dumps(config)
    assert VALUE not in str(caught.value)


def test_secret_in_logs_and_exceptions_is_redacted(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a secret used the ways code is tempted to use it
    secret = Secret(VALUE, name="API_KEY")
    logger = logging.getLogger("conveyor.test")
    with caplog.at_level(logging.DEBUG):
        logger.info("calling api key=%s", secret)
        logger.debug("config=%r", {"key": secret})
        logger.warning(f"inline {secret}")
    print("printed", secret, [secret])
    try:
        raise ConfigError(f"bad key {secret}", hint=f"hint {secret!r}")
    except ConfigError as exc:
        rendered = "".join(traceback.format_exception(exc)) + str(exc.hint)

    # Then the value is in none of the captured text
    out = capsys.readouterr()
    for text in (caplog.text, out.out, out.err, rendered):
        assert VALUE not in text
    assert "calling api key=****" in caplog.text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:tok@host/x.git", "https://user:****@host/x.git"),
        ("https://ghp_abc123@github.com/o/r.git", "https://****@github.com/o/r.git"),
        (
            "https://x-access-token:ghs_1@github.com/o/r",
            "https://x-access-token:****@github.com/o/r",
        ),
        ("https://oauth2:glpat-1@gitlab.com/g/p.git", "https://oauth2:****@gitlab.com/g/p.git"),
        ("https://git@github.com/o/r.git", "https://git@github.com/o/r.git"),
        ("ssh://git@host:2222/r.git", "ssh://git@host:2222/r.git"),
        ("https://u:p%40ss@host:8443/x", "https://u:****@host:8443/x"),
        ("https://u:p@ss@host/x", "https://u:****@host/x"),
        ("https://u:p@[::1]:8080/x", "https://u:****@[::1]:8080/x"),
        ("https://u:p@host/x?q=1#frag", "https://u:****@host/x?q=1#frag"),
        ("https://host/plain.git", "https://host/plain.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("/local/path", "/local/path"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        (
            "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&sig=abc%2Bdef",
            "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sp=r&sig=****",
        ),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AK&X-Amz-Signature=f00&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AK&X-Amz-Signature=****&X-Amz-Expires=60",
        ),
        ("https://host/hook?token=t0k&name=x", "https://host/hook?token=****&name=x"),
        ("https://host/api?private_token=abc", "https://host/api?private_token=****"),
        ("http://[::1", REDACTED),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_replaces_every_secret_longest_first() -> None:
    text = f"clone https://{VALUE}@host failed; {VALUE}-suffix and abc"
    redacted = redact_text(text, [Secret(VALUE), "abc", Secret(VALUE + "-suffix"), ""])
    assert redacted == "clone https://****@host failed; **** and ****"


def test_templates_resolve_from_the_environment_first_then_the_store() -> None:
    store = DictStore({"DB_PASSWORD": "from-store", "USER": "store-user"})
    value = {
        "url": "postgresql://${USER}:${DB_PASSWORD}@db/app",
        "list": ["${USER}", "no template", 3],
        "tuple": ("${DB_PASSWORD}",),
        "number": 7,
    }
    resolved = resolve_templates(value, store=store, environ={"USER": "env-user"})
    url = resolved["url"]
    assert isinstance(url, Secret)
    assert url.reveal() == "postgresql://env-user:from-store@db/app"
    assert resolved["list"][0].reveal() == "env-user"
    assert resolved["list"][1:] == ["no template", 3]
    assert isinstance(resolved["tuple"], tuple)
    assert resolved["tuple"][0].reveal() == "from-store"
    assert resolved["number"] == 7
    assert "USER" not in store.asked
    assert VALUE not in repr(resolved)


def test_a_resolved_template_does_not_leak_into_its_repr() -> None:
    resolved = resolve_templates("Bearer ${TOKEN}", environ={"TOKEN": VALUE})
    assert resolved.reveal() == f"Bearer {VALUE}"
    assert VALUE not in repr(resolved)
    assert VALUE not in str(resolved)
    assert "TOKEN" in repr(resolved)


def test_template_without_a_value_is_a_config_error_with_a_hint() -> None:
    store = DictStore({})
    with pytest.raises(ConfigError, match=r"template \$\{MISSING_TOKEN\} has no value") as caught:
        resolve_templates({"h": "x ${MISSING_TOKEN}"}, store=store, environ={})
    assert caught.value.hint is not None
    assert "MISSING_TOKEN" in caught.value.hint
    assert store.asked == ["MISSING_TOKEN"]


@pytest.mark.parametrize(
    ("template", "hint"),
    [
        (
            "${API_TOKEN}",
            "export API_TOKEN=... on the worker, or run `conveyor secret set API_TOKEN`",
        ),
        (
            "{{ prefect.blocks.secret.api-token }}",
            "run `conveyor secret set api-token`",  # `export api-token=...` is no shell command
        ),
        ("{{ secrets.db.password }}", "run `conveyor secret set db.password`"),
    ],
)
def test_the_hint_for_a_missing_secret_offers_export_only_for_a_shell_name(
    template: str, hint: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_templates(template, store=DictStore({}), environ={})
    assert caught.value.hint == hint


def test_template_error_does_not_show_other_resolved_values() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_templates("${GOOD}:${MISSING}", environ={"GOOD": VALUE})
    assert VALUE not in str(caught.value)
    assert VALUE not in "".join(traceback.format_exception(caught.value))


def test_strings_without_templates_are_returned_unchanged() -> None:
    assert resolve_templates("$HOME and {{ x }} stay", environ={}) == "$HOME and {{ x }} stay"
    assert resolve_templates(None, environ={}) is None


def test_a_dict_store_is_a_secret_store() -> None:
    assert isinstance(DictStore({}), SecretStore)
