"""Credentials come from flags, the environment or cbapi's INI file, in that order."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.liveresponse.credentials import (
    CredentialsError,
    credentials_files,
    resolve_credentials,
)
from emulator.server import self_signed_context

TOKEN = "ABCDEFGHIJKLMNOP/CONN42"


def write_ini(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_default_profile_of_an_existing_cbapi_setup(tmp_path: Path) -> None:
    ini = write_ini(
        tmp_path / ".carbonblack" / "credentials.defense",
        f"[default]\nurl = https://defense-prod05.conferdeploy.net\ntoken = {TOKEN}\n"
        "ssl_verify = True\n",
    )
    creds = resolve_credentials(environ={}, files=[ini])
    assert creds.url == "https://defense-prod05.conferdeploy.net"
    assert creds.token.reveal() == TOKEN
    assert creds.verify_tls is True
    assert creds.source == "credentials profile [default]"
    assert TOKEN not in repr(creds)


def test_named_profile_and_ssl_verify_false(tmp_path: Path) -> None:
    _, lab_ca = self_signed_context("127.0.0.1", tmp_path)
    ini = write_ini(
        tmp_path / "c.defense",
        f"[default]\nurl = https://a.example\ntoken = {TOKEN}\n"
        "[lab]\nurl = https://lab.example\ntoken = LAB/1\nssl_verify = false\n"
        f"ssl_cert_file = {lab_ca}\n",
    )
    creds = resolve_credentials(profile="lab", environ={}, files=[ini])
    assert (creds.url, creds.token.reveal(), creds.verify_tls, creds.ca_bundle) == (
        "https://lab.example",
        "LAB/1",
        False,
        str(lab_ca),
    )


def test_later_files_override_earlier(tmp_path: Path) -> None:
    system = write_ini(tmp_path / "etc.defense", f"[default]\nurl = https://old\ntoken = {TOKEN}\n")
    user = write_ini(tmp_path / "home.defense", "[default]\nurl = https://new\n")
    creds = resolve_credentials(environ={}, files=[system, user])
    assert (creds.url, creds.token.reveal()) == ("https://new", TOKEN)


def test_flags_win_over_environment_over_file(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "c.defense", "[default]\nurl = https://file\ntoken = FILE/1\n")
    env = {"CBLR_URL": "https://env", "CBLR_TOKEN": "ENV/2"}
    creds = resolve_credentials(environ=env, files=[ini])
    assert (creds.url, creds.token.reveal()) == ("https://env", "ENV/2")
    creds = resolve_credentials(url="https://flag", environ=env, files=[ini])
    assert (creds.url, creds.token.reveal()) == ("https://flag", "ENV/2")
    assert creds.source == "command line and environment"


def test_missing_named_profile_is_an_error(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "c.defense", f"[default]\nurl = https://a\ntoken = {TOKEN}\n")
    with pytest.raises(CredentialsError, match=r"no credentials profile \[nope\]"):
        resolve_credentials(profile="nope", environ={}, files=[ini])


@pytest.mark.parametrize(
    ("url", "token", "message"),
    [
        (None, TOKEN, "no server URL"),
        ("https://a", None, "no API token"),
        ("ftp://a", TOKEN, "must start with https://"),
        ("https://a", "NOSLASH", "KEY/CONNECTOR_ID"),
    ],
)
def test_incomplete_credentials_say_what_is_missing(
    url: str | None, token: str | None, message: str
) -> None:
    with pytest.raises(CredentialsError, match=message) as caught:
        resolve_credentials(url=url, token=token, environ={}, files=[])
    assert "NOSLASH" not in str(caught.value)


def test_a_broken_file_does_not_echo_its_lines(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "c.defense", "token = SECRETSECRET/1\n[default\n")
    with pytest.raises(CredentialsError) as caught:
        resolve_credentials(environ={}, files=[ini])
    assert "SECRETSECRET" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_search_path_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CBLR_CREDENTIALS_FILE", raising=False)
    files = credentials_files(home=tmp_path / "home", cwd=tmp_path / "cwd")
    assert files == [
        Path("/etc/carbonblack/credentials.defense"),
        tmp_path / "home" / ".carbonblack" / "credentials.defense",
        tmp_path / "cwd" / ".carbonblack" / "credentials.defense",
    ]
    monkeypatch.setenv("CBLR_CREDENTIALS_FILE", str(tmp_path / "x.ini"))
    assert credentials_files() == [tmp_path / "x.ini"]


def test_a_ca_bundle_that_cannot_be_loaded_is_refused_up_front(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("/tmp/emulator-cert.pem\n", encoding="utf-8")
    with pytest.raises(CredentialsError, match=r"ca\.pem: not a PEM certificate bundle"):
        resolve_credentials(
            url="https://a", token=TOKEN, ca_bundle=str(not_pem), environ={}, files=[]
        )
    with pytest.raises(CredentialsError, match="no such file"):
        resolve_credentials(
            url="https://a", token=TOKEN, ca_bundle=str(tmp_path / "x.pem"), environ={}, files=[]
        )
