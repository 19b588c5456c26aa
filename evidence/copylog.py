"""The copy log and the timeline bodyfile: the collection as a table and as a timeline.

``copy-log.csv`` is one row per artifact record, like KAPE's copy log: where the file is in
the collection, where it came from, its size and hashes, the source's MACB times, how it was
acquired and how it ended. ``timeline.bodyfile`` is the Sleuth Kit's body format (mactime
3.x: ``MD5|name|inode|mode|UID|GID|size|atime|mtime|ctime|crtime``, times in seconds since
1970 UTC), one line per collected file with source times, so ``mactime -b timeline.bodyfile``
or a super-timeline tool takes the collection as it is.

MACB: M last write, A last access, C the MFT entry's change time, B creation (birth). Live
Response listings do not report C, so it is empty in the copy log and 0 in the bodyfile.

Remote names are attacker-controlled. In the CSV a cell that a spreadsheet would run as a
formula (starting ``=``, ``+``, ``-``, ``@``, tab or carriage return) is prefixed with ``'``
(the manifest keeps the exact name); in the bodyfile ``|`` and line breaks, which would split
a record, are percent-encoded.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from evidence.filetimes import parse_time
from evidence.outcomes import outcome_of
from evidence.records import ArtifactRecord

COPY_LOG_FILE = "copy-log.csv"
BODYFILE = "timeline.bodyfile"
RUN_LOG_FILE = "run.log"
"""The collector's run log (secrets already redacted), sealed with the evidence."""
DOCUMENTS = (COPY_LOG_FILE, BODYFILE, RUN_LOG_FILE)
COPY_LOG_COLUMNS = (
    "path",
    "remote_path",
    "size",
    "md5",
    "sha1",
    "sha256",
    "modified",
    "accessed",
    "changed",
    "born",
    "method",
    "status",
    "reason",
    "artifact_id",
    "name",
    "finished",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FILE_MODE = "r/rrwxrwxrwx"
"""The mode column ``fls`` writes for a regular NTFS file."""


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def render_copy_log(records: Sequence[ArtifactRecord]) -> bytes:
    """The CSV (UTF-8, CRLF as Excel and ``csv`` write it), a header row first."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COPY_LOG_COLUMNS)
    for record in records:
        hashes = record.digests.as_dict() if record.digests else {}
        times = record.remote_times
        writer.writerow(
            _cell(value)
            for value in (
                record.staged_path,
                record.source,
                record.size if record.size is not None else "",
                hashes.get("md5", ""),
                hashes.get("sha1", ""),
                hashes.get("sha256", ""),
                times.get("last_write_time", ""),
                times.get("last_access_time", ""),
                "",
                times.get("create_time", ""),
                record.acquisition_method or record.method,
                record.outcome or outcome_of(record.status, False),
                record.reason,
                record.artifact_id,
                record.name,
                record.finished,
            )
        )
    return out.getvalue().encode("utf-8")


def _seconds(value: str | None) -> int:
    moment = parse_time(value)
    return int(moment.timestamp()) if moment else 0


def _body_name(text: str) -> str:
    return text.replace("%", "%25").replace("|", "%7C").replace("\n", "%0A").replace("\r", "%0D")


def render_bodyfile(records: Sequence[ArtifactRecord]) -> bytes:
    """One mactime line per collected record that has the source's last write time."""
    lines = []
    for record in records:
        times = record.remote_times
        if record.status != "collected" or not times.get("last_write_time"):
            continue
        md5 = record.digests.md5 if record.digests else "0"
        lines.append(
            "|".join(
                (
                    md5,
                    _body_name(record.source),
                    "0",
                    FILE_MODE,
                    "0",
                    "0",
                    str(record.size or 0),
                    str(_seconds(times.get("last_access_time"))),
                    str(_seconds(times.get("last_write_time"))),
                    "0",
                    str(_seconds(times.get("create_time"))),
                )
            )
        )
    return "".join(line + "\n" for line in lines).encode("utf-8")


def documents(records: Sequence[ArtifactRecord], run_log: bytes) -> dict[str, bytes]:
    """The copy log, the bodyfile and the run log, by their names in the collection."""
    return {
        COPY_LOG_FILE: render_copy_log(records),
        BODYFILE: render_bodyfile(records),
        RUN_LOG_FILE: run_log,
    }
