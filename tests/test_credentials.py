"""Credentials come from flags and the environment, or one section of one INI file."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from collector.acquisition.runner import RunSettings
from collector.cli.connection import credentials_from
from collector.liveresponse.credentials import (
    CredentialsError,
    credentials_files,
    plain_http_warning,
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
    assert creds.source == f"{ini} [default]"
    assert (creds.api, creds.org_key) == ("v3", "")
    assert TOKEN not in repr(creds) and TOKEN not in creds.describe()


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


def test_a_later_complete_section_wins_whole(tmp_path: Path) -> None:
    system = write_ini(tmp_path / "etc.cbc", "[default]\nurl = https://old\ntoken = OLD/1\n")
    user = write_ini(tmp_path / "home.cbc", f"[default]\nurl = https://new\ntoken = {TOKEN}\n")
    creds = resolve_credentials(environ={}, files=[system, user])
    assert (creds.url, creds.token.reveal(), creds.source) == (
        "https://new",
        TOKEN,
        f"{user} [default]",
    )


def test_sections_are_never_merged_across_files(tmp_path: Path) -> None:
    """A later section holding only a url does not redirect an earlier section's token."""
    system = write_ini(tmp_path / "etc.psc", f"[default]\nurl = https://old\ntoken = {TOKEN}\n")
    user = write_ini(tmp_path / "home.defense", "[default]\nurl = https://elsewhere\n")
    creds = resolve_credentials(environ={}, files=[system, user])
    assert (creds.url, creds.token.reveal(), creds.source) == (
        "https://old",
        TOKEN,
        f"{system} [default]",
    )
    assert creds.skipped == (f"{user} [default]",)
    only_tokens = write_ini(tmp_path / "t.cbc", f"[default]\ntoken = {TOKEN}\n")
    with pytest.raises(CredentialsError, match=r"lack url or token") as caught:
        resolve_credentials(environ={}, files=[user, only_tokens])
    assert TOKEN not in str(caught.value)


def test_flags_and_environment_are_one_source(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "c.defense", "[default]\nurl = https://file\ntoken = FILE/1\n")
    env = {"CBLR_URL": "https://env", "CBLR_TOKEN": "ENV/2"}
    creds = resolve_credentials(environ=env, files=[ini])
    assert (creds.url, creds.token.reveal()) == ("https://env", "ENV/2")
    assert creds.source == "CBLR_URL and CBLR_TOKEN"
    creds = resolve_credentials(url="https://flag", environ=env, files=[ini])
    assert (creds.url, creds.token.reveal()) == ("https://flag", "ENV/2")
    assert creds.source == "--url and CBLR_TOKEN"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CBLR_TOKEN": TOKEN}, "no server URL to go with CBLR_TOKEN"),
        ({"CBC_URL": "https://env"}, "no API token to go with CBC_URL"),
    ],
)
def test_half_of_the_environment_is_not_completed_from_a_file(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    ini = write_ini(tmp_path / "c.cbc", f"[default]\nurl = https://file\ntoken = {TOKEN}\n")
    with pytest.raises(CredentialsError, match=message):
        resolve_credentials(environ=env, files=[ini])


def test_a_profile_and_url_flags_are_two_sources(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "c.cbc", f"[lab]\nurl = https://file\ntoken = {TOKEN}\n")
    with pytest.raises(CredentialsError, match="not both"):
        resolve_credentials(url="https://flag", profile="lab", environ={}, files=[ini])


def test_sdk_environment_names_and_org_key_select_v6() -> None:
    env = {"CBC_URL": "https://cbc", "CBC_TOKEN": TOKEN, "CBC_ORG_KEY": "ABCD1234"}
    creds = resolve_credentials(environ=env, files=[])
    assert (creds.url, creds.org_key, creds.api, creds.source) == (
        "https://cbc",
        "ABCD1234",
        "v6",
        "CBC_URL and CBC_TOKEN",
    )
    legacy = {"CBAPI_URL": "https://old", "CBAPI_TOKEN": TOKEN}
    assert resolve_credentials(environ=legacy, files=[]).api == "v3"
    assert resolve_credentials(environ=env, files=[], api="v3").api == "v3"


def test_credentials_cbc_with_org_key_selects_v6(tmp_path: Path) -> None:
    ini = write_ini(
        tmp_path / ".carbonblack" / "credentials.cbc",
        f"[default]\nurl = https://defense-prod05.conferdeploy.net\ntoken = {TOKEN}\n"
        "org_key = ABCD123456\n",
    )
    creds = resolve_credentials(environ={}, files=[ini])
    assert (creds.api, creds.org_key) == ("v6", "ABCD123456")
    assert creds.describe() == (
        f"credentials: {ini} [default]; server https://defense-prod05.conferdeploy.net "
        "(v6, org key ABCD123456)"
    )


def test_v6_without_an_org_key_says_where_to_find_one() -> None:
    with pytest.raises(CredentialsError, match=r"needs an org key \(Settings > API Access\)"):
        resolve_credentials(url="https://a", token=TOKEN, api="v6", environ={}, files=[])
    with pytest.raises(CredentialsError, match="is not a Carbon Black org key"):
        resolve_credentials(url="https://a", token=TOKEN, org_key="../x", environ={}, files=[])


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
    names = ["credentials.defense", "credentials.psc", "credentials.cbc"]
    assert files == [
        *(Path("/etc/carbonblack") / name for name in names),
        *(tmp_path / "home" / ".carbonblack" / name for name in names),
        *(tmp_path / "cwd" / ".carbonblack" / name for name in names),
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


def test_resume_takes_the_workspace_url_only_beside_a_token_from_flags_or_environment(
    tmp_path: Path,
) -> None:
    env = {"CBLR_TOKEN": TOKEN, "CBC_ORG_KEY": "ORG1"}
    creds = resolve_credentials(environ=env, files=[], fallback_url="https://recorded")
    assert (creds.url, creds.source, creds.api) == (
        "https://recorded",
        "the workspace's server URL and CBLR_TOKEN",
        "v6",
    )
    ini = write_ini(tmp_path / "c.cbc", f"[default]\nurl = https://file\ntoken = {TOKEN}\n")
    creds = resolve_credentials(environ={}, files=[ini], fallback_url="https://recorded")
    assert (creds.url, creds.source) == ("https://file", f"{ini} [default]")


def test_the_home_folder_as_working_folder_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CBLR_CREDENTIALS_FILE", raising=False)
    files = credentials_files(home=tmp_path, cwd=tmp_path)
    assert len(files) == len(set(files)) == 6


def test_resume_refuses_credentials_for_another_server_and_keeps_the_recorded_dialect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = RunSettings(
        case_id="C", examiner="E", device_id=1, profile="triage", out="/o",
        url="https://recorded", api="v6", org_key="ORG1",
    )  # fmt: skip
    flags = argparse.Namespace(
        url=None, token=None, org_key=None, api=None, credentials_profile=None,
        insecure=False, ca_bundle=None,
    )  # fmt: skip
    for name in ("CBLR_URL", "CBC_URL", "CBAPI_URL", "CBC_ORG_KEY", "CBLR_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CBLR_TOKEN", TOKEN)
    creds = credentials_from(flags, recorded)
    assert (creds.url, creds.api, creds.org_key) == ("https://recorded", "v6", "ORG1")
    monkeypatch.setenv("CBLR_URL", "https://elsewhere")
    with pytest.raises(CredentialsError, match="collected from https://recorded"):
        credentials_from(flags, recorded)


@pytest.mark.parametrize(
    "url", ["http://10.20.30.40", "http://tenant.example.com:8080", "http://[2001:db8::1]"]
)
def test_plain_http_to_another_machine_needs_insecure(url: str, tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "c.cbc", f"[default]\nurl = {url}\ntoken = {TOKEN}\n")
    with pytest.raises(CredentialsError) as refused:
        resolve_credentials(files=[ini], environ={})
    assert str(refused.value) == (
        f"{url} is plain http: the API token and the evidence would cross the network "
        f"unencrypted; use https://, or give --insecure to accept that risk ({ini} [default])"
    )
    accepted = resolve_credentials(files=[ini], environ={}, insecure=True)
    assert plain_http_warning(accepted) == (
        f"warning: {url} is plain http (--insecure): the API token and every collected byte "
        "cross the network unencrypted, readable and alterable on the way"
    )


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://127.9.9.9", "http://[::1]:80",
                                 "http://localhost:5000"])  # fmt: skip
def test_plain_http_on_this_machine_is_accepted_without_a_warning(url: str) -> None:
    credentials = resolve_credentials(environ={"CBLR_URL": url, "CBLR_TOKEN": TOKEN}, files=[])
    assert (credentials.url, plain_http_warning(credentials)) == (url, None)


def test_collect_refuses_plain_http_in_one_line_before_any_connection(tmp_path: Path) -> None:
    from cli_harness import PASSPHRASE, PASSWORD_VAR, clean_env, run_cli

    env = clean_env(
        tmp_path, CBLR_URL="http://10.20.30.40", CBLR_TOKEN=TOKEN, **{PASSWORD_VAR: PASSPHRASE}
    )
    result = run_cli(
        "collect", "--device", "1", "--case", "C", "--examiner", "E", "--out", "out",
        "--password-env", PASSWORD_VAR, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "cblr-collect collect: http://10.20.30.40 is plain http: the API token and the evidence "
        "would cross the network unencrypted; use https://, or give --insecure to accept that "
        "risk (CBLR_URL and CBLR_TOKEN)"
    )
