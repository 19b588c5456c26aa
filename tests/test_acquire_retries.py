"""What an artifact does when its session is lost more often than the session layer reopens."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.acquisition.acquire import HOST_COPY_ATTEMPTS, SESSION_LOSS_ATTEMPTS, Acquirer
from collector.acquisition.reporter import Reporter
from collector.liveresponse.errors import CommandOutcomeUnknownError, SessionLostError
from collector.liveresponse.models import ProcessResult
from collector.transfer.journal import ArtifactState, Journal


class LosingSession:
    """Loses the session during the first ``losses`` create process calls."""

    def __init__(self, losses: int) -> None:
        self.losses = losses
        self.commands: list[str] = []
        self.deleted: list[str] = []

    async def create_process(
        self, command_line: str, *, wait: bool = False, output_file: str | None = None
    ) -> ProcessResult:
        self.commands.append(command_line)
        if len(self.commands) <= self.losses:
            raise CommandOutcomeUnknownError("create process", command_line, session_id="1:1")
        return ProcessResult(pid=4242, return_code=0)

    async def delete_file(self, remote_path: str) -> None:
        self.deleted.append(remote_path)


def acquirer_for(session: LosingSession, tmp_path: Path) -> tuple[Acquirer, Journal, int]:
    journal = Journal.open(tmp_path)
    artifact = journal.add_artifact("hive", 1, "C:\\Windows\\System32\\config\\SYSTEM")
    return Acquirer(session, journal, tmp_path, None, Reporter(), 1), journal, artifact.id  # type: ignore[arg-type]


def save(temp: str) -> str:
    return f'reg.exe save "HKLM\\SYSTEM" "{temp}" /y'


async def test_a_lost_copy_is_repeated_into_a_new_file(tmp_path: Path) -> None:
    session = LosingSession(losses=1)
    acquirer, journal, artifact_id = acquirer_for(session, tmp_path)
    with journal:
        artifact = journal.artifact(artifact_id)
        await acquirer._copy_on_host(artifact, ".hiv", "reg save, then get file", save)
        temps = [command.split('"')[3] for command in session.commands]
        assert len(temps) == 2 and temps[0] != temps[1]
        assert session.deleted == [temps[0]]
        details = journal.artifact(artifact_id).details
        assert details["remote_temp"] == details["remote_path"] == temps[1]


async def test_a_copy_lost_every_time_gives_up_after_the_bound(tmp_path: Path) -> None:
    session = LosingSession(losses=HOST_COPY_ATTEMPTS)
    acquirer, journal, artifact_id = acquirer_for(session, tmp_path)
    with journal, pytest.raises(CommandOutcomeUnknownError):
        artifact = journal.artifact(artifact_id)
        await acquirer._copy_on_host(artifact, ".hiv", "reg save, then get file", save)
    assert len(session.commands) == HOST_COPY_ATTEMPTS
    assert len(session.deleted) == HOST_COPY_ATTEMPTS


class ExpiringSession(LosingSession):
    """The process list outlasts its session ``losses`` times before it completes."""

    async def process_list(self) -> list:
        self.commands.append("process list")
        if len(self.commands) <= self.losses:
            raise SessionLostError("session 3:1 is TIMEOUT", session_id="3:1", status="TIMEOUT")
        return []


def document_acquirer(session: LosingSession, tmp_path: Path, kind: str, source: str):
    journal = Journal.open(tmp_path)
    artifact = journal.add_artifact(kind, 1, source)
    return Acquirer(session, journal, tmp_path, None, Reporter(), 1), journal, artifact  # type: ignore[arg-type]


async def test_a_lost_session_starts_the_artifact_over(tmp_path: Path) -> None:
    session = ExpiringSession(losses=SESSION_LOSS_ATTEMPTS - 1)
    acquirer, journal, artifact = document_acquirer(session, tmp_path, "processes", "process list")
    with journal:
        final = await acquirer.acquire(artifact)
    assert final.state is ArtifactState.COLLECTED
    assert len(session.commands) == SESSION_LOSS_ATTEMPTS


async def test_losing_it_every_time_fails_with_the_reason(tmp_path: Path) -> None:
    session = ExpiringSession(losses=SESSION_LOSS_ATTEMPTS)
    acquirer, journal, artifact = document_acquirer(session, tmp_path, "processes", "process list")
    with journal:
        final = await acquirer.acquire(artifact)
    assert final.state is ArtifactState.FAILED
    assert final.reason == "session 3:1 is TIMEOUT"
    assert len(session.commands) == SESSION_LOSS_ATTEMPTS


async def test_a_command_whose_outcome_is_unknown_is_never_run_twice(tmp_path: Path) -> None:
    session = LosingSession(losses=1)
    acquirer, journal, artifact = document_acquirer(
        session, tmp_path, "command", "cmd.exe /c ipconfig /all"
    )
    with journal:
        final = await acquirer.acquire(artifact)
    assert final.state is ArtifactState.FAILED
    assert "may or may not have run" in (final.reason or "")
    assert len(session.commands) == 1
