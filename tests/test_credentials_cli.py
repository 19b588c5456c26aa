"""The installed CLI never sends a token to a URL from another credentials file (issue 14).

Two real HTTP servers on loopback: the emulator, named with its token in
``~/.carbonblack/credentials.psc``, and a recorder, named (URL only) by a later
``./.carbonblack/credentials.defense``. The run must use the one complete section, say so, and
the recorder must receive nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from cli_harness import (
    DATA_PROFILE,
    TOKEN,
    Emulator,
    clean_env,
    device,
    emulator_process,
    run_cli,
    stderr_lines,
    write_scenario,
)

DEVICE = 300
PLAIN_API_KEY = "PLAINAPIKEY0000000000/APIKEY01"
"""A key of a type without the Live Response permissions."""
V6_PERMISSIONS = (
    "org.liveresponse.session",
    "org.liveresponse.files",
    "org.liveresponse.memdump",
    "org.liveresponse.process",
    "org.liveresponse.registry",
    "Device READ",
)


class Recorder(ThreadingHTTPServer):
    """Answers every request 401 and keeps its method, path and headers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RecordingHandler(BaseHTTPRequestHandler):
    server: Recorder

    def _record(self) -> None:
        self.server.requests.append((self.command, self.path, dict(self.headers.items())))
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_DELETE = _record

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    folder = tmp_path_factory.mktemp("creds-lab")
    scenario = write_scenario(
        folder / "scenario.yaml",
        [device(DEVICE, [{"path": "C:\\data\\notes.txt", "text": "hello\n"}])],
    )
    document = yaml.safe_load(scenario.read_text(encoding="utf-8"))
    document["tokens"].append({"token": PLAIN_API_KEY, "key_type": "API"})
    scenario.write_text(yaml.safe_dump(document), encoding="utf-8")
    with emulator_process(scenario, folder) as server:
        yield server


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_url_only_section_never_receives_the_other_files_token(
    emulator: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    complete = write(
        home / ".carbonblack" / "credentials.psc",
        f"[default]\nurl = {emulator.url}\ntoken = {TOKEN}\n",
    )
    url_only = write(
        work / ".carbonblack" / "credentials.defense", f"[default]\nurl = {recorder.url}\n"
    )
    profile = write(work / "data.yaml", DATA_PROFILE)
    out = work / "evidence"

    result = run_cli(
        "collect", "--device", str(DEVICE), "--profile", profile, "--case", "CRED-1",
        "--examiner", "E", "--out", out, "--no-seal", "--json",
        env=clean_env(home), cwd=work,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert recorder.requests == []
    assert stderr_lines(result) == [
        f"warning: {url_only} [default] lacks url or token; not used",
        f"credentials: {complete} [default]; server {emulator.url} (v3)",
    ]
    assert TOKEN not in result.stdout + result.stderr
    (workspace,) = (out / "workspaces").iterdir()
    run_log = (workspace / "logs" / "run.log").read_text(encoding="utf-8")
    assert f"{complete} [default]" in run_log


def test_a_half_given_environment_is_refused_not_completed_from_a_file(
    emulator: Emulator, recorder: Recorder, tmp_path: Path
) -> None:
    """CBLR_URL naming the recorder with the token only in a file: refused, nothing sent."""
    write(tmp_path / ".carbonblack" / "credentials.cbc", f"[default]\ntoken = {TOKEN}\n")
    write(
        tmp_path / ".carbonblack" / "credentials.psc",
        f"[default]\nurl={emulator.url}\ntoken={TOKEN}\n",
    )

    result = run_cli(
        "collect", "--device", str(DEVICE), "--case", "C", "--examiner", "E",
        "--out", tmp_path / "out", "--no-seal",
        env=clean_env(tmp_path, CBLR_URL=recorder.url), cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 2
    (line,) = stderr_lines(result)
    assert line.startswith("cblr-collect collect: no API token to go with CBLR_URL")
    assert recorder.requests == []


def test_credentials_cbc_with_an_org_key_selects_v6(emulator: Emulator, tmp_path: Path) -> None:
    """Only v6 has a device search: it answering proves the org key chose the dialect."""
    section = write(
        tmp_path / ".carbonblack" / "credentials.cbc",
        f"[default]\nurl = {emulator.url}\ntoken = {TOKEN}\norg_key = {emulator.org_key}\n",
    )

    result = run_cli("devices", "--csv", env=clean_env(tmp_path), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == [
        f"credentials: {section} [default]; server {emulator.url} (v6, org key {emulator.org_key})"
    ]
    assert result.stdout.splitlines()[1].startswith(f"{DEVICE},E2E-HOST-{DEVICE},WINDOWS,")


@pytest.mark.parametrize(("token", "status"), [(PLAIN_API_KEY, 403), ("WRONG0000000/NOPE", 401)])
def test_a_refused_v6_key_names_the_permissions_it_needs(
    emulator: Emulator, tmp_path: Path, token: str, status: int
) -> None:
    env = clean_env(tmp_path, CBC_URL=emulator.url, CBC_TOKEN=token, CBC_ORG_KEY=emulator.org_key)

    result = run_cli(
        "collect", "--device", str(DEVICE), "--case", "C", "--examiner", "E",
        "--out", tmp_path / "out", "--no-seal", "--quiet",
        env=env, cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 3, result.stderr
    (line,) = stderr_lines(result)
    assert line.startswith(f"cblr-collect collect: the server refused the API key (HTTP {status})")
    assert "access level type Custom" in line
    assert all(permission in line for permission in V6_PERMISSIONS)
    assert token not in result.stdout + result.stderr
