from __future__ import annotations

import io
import threading
import zipfile

import pytest

from evidence.pipe import ThreadedWriter


class Recorder(io.BytesIO):
    def __init__(self, fail_on: int | None = None) -> None:
        super().__init__()
        self.writes = 0
        self.threads: set[str] = set()
        self.fail_on = fail_on

    def write(self, data) -> int:  # type: ignore[override]
        self.writes += 1
        self.threads.add(threading.current_thread().name)
        if self.writes == self.fail_on:
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_blocks_arrive_in_order_written_by_the_worker_thread() -> None:
    target = Recorder()
    blocks = [bytes([n]) * (1000 + n) for n in range(50)]
    with ThreadedWriter(target, name="test-writer") as writer:
        for block in blocks:
            assert writer.write(block) == len(block)
        assert writer.tell() == sum(map(len, blocks))
    assert target.getvalue() == b"".join(blocks)
    assert target.threads == {"test-writer"}


def test_a_reused_buffer_is_copied_before_the_caller_changes_it() -> None:
    target = Recorder()
    buffer = bytearray(b"first")
    with ThreadedWriter(target) as writer:
        writer.write(buffer)
        buffer[:] = b"SECON"
        writer.write(memoryview(buffer))
    assert target.getvalue() == b"firstSECON"


def test_flush_waits_for_every_block() -> None:
    target = Recorder()
    with ThreadedWriter(target) as writer:
        writer.write(b"a" * 100_000)
        writer.write(b"b" * 100_000)
        writer.flush()
        assert target.getvalue() == b"a" * 100_000 + b"b" * 100_000


def test_a_failing_target_raises_in_the_producer_and_never_blocks_it() -> None:
    target = Recorder(fail_on=2)
    writer = ThreadedWriter(target)
    writer.write(b"one")
    with pytest.raises(OSError, match="No space left") as raised:
        for _ in range(1000):  # the failure surfaces on a later call; the queue keeps draining
            writer.write(b"more")
    assert raised.value.errno == 28
    with pytest.raises(OSError, match="No space left"):
        writer.close()
    assert writer.closed
    assert target.getvalue() == b"one"


def test_it_is_a_stream_to_zipfile_which_writes_data_descriptors() -> None:
    target = Recorder()
    with (
        ThreadedWriter(target) as writer,
        zipfile.ZipFile(writer, "w") as archive,
        archive.open("member.bin", "w") as member,
    ):
        member.write(b"evidence" * 10_000)
    with zipfile.ZipFile(io.BytesIO(target.getvalue())) as archive:
        [info] = archive.infolist()
        assert info.flag_bits & 0x08  # sizes after the data: it never seeked back
        assert archive.read("member.bin") == b"evidence" * 10_000
    with ThreadedWriter(Recorder()) as idle, pytest.raises(io.UnsupportedOperation):
        idle.seek(0)


def test_writing_after_close_is_refused_and_closing_twice_is_harmless() -> None:
    target = Recorder()
    writer = ThreadedWriter(target)
    writer.write(b"kept")
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"late")
    assert target.getvalue() == b"kept"
