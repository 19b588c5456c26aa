"""``s3://BUCKET/PREFIX``: any S3-compatible service, through aiobotocore.

Credentials come from the standard AWS chain (environment, shared config and credentials
files, ``AWS_PROFILE``); this module never reads, logs or stores them.

How a delivery is confirmed:

- an archive up to one part long goes up in a single ``PutObject`` carrying its SHA-256
  (``x-amz-checksum-sha256``), which the service checks against the bytes it received; the
  object's checksum as the service then reports it must equal the local one
  (``s3-full-object-sha256``);
- a larger archive goes up in parts, each carrying its own SHA-256, which the service checks
  (a part corrupted in flight is refused with ``BadDigest`` and sent again). S3 offers a
  full-object checksum on multipart uploads only for the CRC algorithms, so for SHA-256 the
  object's checksum is the *composite* one: the SHA-256 of the parts' SHA-256 digests, with the
  part count. It is computed here from the local file and must equal what the service reports
  (``s3-composite-sha256``); since each part's digest fixes its bytes, an equal composite
  means the object is the local file, byte for byte. The archive's own SHA-256 is computed on
  the same read and goes into the receipt.

The upload id, the part size and each finished part (ETag, SHA-256, size) are saved in the
delivery journal as soon as the service accepts the part, so a resumed delivery sends only the
parts it has no record of (at most those that were in flight are sent twice). An upload id the
service has forgotten (aborted, expired) starts the upload over.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from collector.delivery.base import (
    DeliveryError,
    Destination,
    DestinationUnusable,
    Progress,
    Receipt,
    UploadState,
)
from collector.delivery.lock import LockRequest

log = logging.getLogger(__name__)

for _noisy in ("botocore", "aiobotocore", "urllib3"):
    # Their debug output carries request headers (a session token among them): never in a log.
    logging.getLogger(_noisy).setLevel(logging.WARNING)

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
"""S3's smallest part (all but the last)."""
MAX_PART_SIZE = 5 * 1024 * MIB
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 8 * MIB
"""As boto3's; a larger file gets larger parts (at most ``MAX_PARTS`` of them)."""
DEFAULT_CONCURRENCY = 10
"""Parts in flight at once, as boto3; memory: about this many parts, ``READ_AHEAD`` and one."""
READ_AHEAD = 2
"""Parts read and hashed ahead, waiting for a sender."""
MAX_PART_ATTEMPTS = 4
"""How often one part is sent when the service refuses its checksum."""
DIGEST_ERRORS = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
FORGOTTEN_UPLOAD = "NoSuchUpload"
DENIED = frozenset({"AccessDenied", "403", "NotImplemented", "501", "MethodNotAllowed"})
NO_LOCK_CONFIGURATION = frozenset(
    {"ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"}
)
MAX_REMOTE_TEXT = 200

T = TypeVar("T")


class UploadForgotten(Exception):
    """The service no longer knows the upload id (aborted, expired): start over."""


class ChecksumRefused(DeliveryError):
    """The service computed another checksum than the one sent: the bytes changed in flight."""


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def composite_sha256(part_digests: list[bytes]) -> str:
    """S3's COMPOSITE checksum: base64 SHA-256 of the concatenated part digests, ``-COUNT``."""
    return f"{b64(hashlib.sha256(b''.join(part_digests)).digest())}-{len(part_digests)}"


def _bare_checksum(value: str) -> str:
    """A reported checksum without its ``-COUNT`` suffix (some services add it, some don't)."""
    return value.split("-", 1)[0]


def _clean(text: str) -> str:
    """A service's message as one short printable line: it is the far end's text, not ours."""
    flat = re.sub(r"[^\x20-\x7e]+", " ", text).strip()
    return flat if len(flat) <= MAX_REMOTE_TEXT else flat[: MAX_REMOTE_TEXT - 1] + "…"


def error_code(error: BaseException) -> str:
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code or (str(status) if status else "")


def describe(error: BaseException) -> str:
    """One line saying what went wrong, without credentials (botocore's texts carry none)."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(error, NoCredentialsError):
        return (
            "no AWS credentials found (environment, shared credentials/config files, AWS_PROFILE)"
        )
    if isinstance(error, EndpointConnectionError | ConnectTimeoutError):
        return "cannot reach the S3 endpoint"
    if isinstance(error, ReadTimeoutError):
        return "the S3 endpoint stopped answering"
    if isinstance(error, ClientError):
        message = str(error.response.get("Error", {}).get("Message", "") or "")
        return _clean(f"{error_code(error)}: {message}".rstrip(": "))
    return _clean(f"{type(error).__name__}: {error}")


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error of a task group (ours are never nested on purpose)."""
    first = group.exceptions[0]
    return _unwrap(first) if isinstance(first, BaseExceptionGroup) else first


def _read(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(length)
    if len(data) != length:
        raise DeliveryError(f"{path.name}: shorter than when the upload began")
    return data


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value.astimezone(UTC).replace(microsecond=0)
        return moment.isoformat().replace("+00:00", "Z")
    return str(value)


def _version(value: Any) -> str | None:
    """A version id; ``null`` is what an unversioned bucket reports."""
    return None if value in (None, "", "null") else str(value)


def _datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class S3Destination(Destination):
    """An S3 bucket and key prefix; multipart uploads with SHA-256 per part."""

    scheme: ClassVar[str] = "s3"

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        object_lock: LockRequest | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise DestinationUnusable(f"{self.url}: not an s3://BUCKET/PREFIX URL")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise DestinationUnusable(f"{self.url}: an s3 URL is s3://BUCKET/PREFIX, no more")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise DestinationUnusable(
                f"part size {part_size} is outside S3's {MIN_PART_SIZE}..{MAX_PART_SIZE} bytes"
            )
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.endpoint_url = endpoint_url
        self.object_lock = object_lock
        self.part_size = part_size
        self.concurrency = max(1, concurrency)
        self._context: Any = None
        self._client: Any = None

    # ---- connection

    def key_for(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def location_of(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    async def _open(self) -> Any:
        if self._client is not None:
            return self._client
        from aiobotocore.session import AioSession
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=20,
            read_timeout=120,
            max_pool_connections=self.concurrency + 2,
            # The x-amz-checksum-sha256 header (signed) binds the body; signing the payload
            # as well would hash every byte a second time on plain-HTTP endpoints.
            s3={
                "payload_signing_enabled": False,
                "addressing_style": "path" if self.endpoint_url else "auto",
            },
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        try:
            session = AioSession()
            region = session.get_config_variable("region") or "us-east-1"
            self._context = session.create_client(
                "s3", region_name=region, endpoint_url=self.endpoint_url, config=config
            )
            self._client = await self._context.__aenter__()
        except (BotoCoreError, ValueError) as error:
            self._context = None
            raise DestinationUnusable(f"{self.url}: {describe(error)}") from None
        return self._client

    async def finish(self) -> None:
        context, self._context, self._client = self._context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A service call whose unexpected failure becomes a one-line :class:`DeliveryError`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await call()
        except ClientError as error:
            if error_code(error) == FORGOTTEN_UPLOAD:
                raise UploadForgotten() from None
            if error_code(error) in DIGEST_ERRORS:
                raise ChecksumRefused(f"{self.url}: {what}: {describe(error)}") from None
            raise DeliveryError(f"{self.url}: {what}: {describe(error)}") from None
        except BotoCoreError as error:
            raise DeliveryError(f"{self.url}: {what}: {describe(error)}") from None

    # ---- preflight

    async def prepare(self) -> None:
        """Start and abort a multipart upload under the prefix: it proves the bucket exists and
        these credentials may write there (with the lock headers, when a lock is asked for),
        without reading anything and without leaving an object behind."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = await self._open()
        probe = self.key_for(f".cblr-preflight-{secrets.token_hex(8)}")
        retain_until = self.object_lock.retain_until() if self.object_lock else None
        try:
            created = await client.create_multipart_upload(
                Bucket=self.bucket,
                Key=probe,
                ChecksumAlgorithm="SHA256",
                **self._lock_arguments(retain_until),
            )
        except ClientError as error:
            raise DestinationUnusable(self._unusable(error)) from None
        except BotoCoreError as error:
            raise DestinationUnusable(f"{self.url}: {describe(error)}") from None
        try:
            await client.abort_multipart_upload(
                Bucket=self.bucket, Key=probe, UploadId=created["UploadId"]
            )
        except (ClientError, BotoCoreError) as error:
            # An upload-only key may not abort; the empty probe upload is left to the bucket's
            # lifecycle rule for incomplete uploads.
            log.info("%s: preflight probe not aborted (%s)", self.url, describe(error))
        if self.object_lock is not None:
            await self._check_lock_configuration(client)

    def _unusable(self, error: BaseException) -> str:
        code = error_code(error)
        if code == "NoSuchBucket":
            return f"{self.url}: no such bucket"
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            need = "s3:PutObject"
            if self.object_lock is not None:
                need += " and " + (
                    "s3:PutObjectLegalHold"
                    if self.object_lock.legal_hold
                    else "s3:PutObjectRetention"
                )
            return f"{self.url}: these credentials may not write here ({code}; needs {need})"
        if self.object_lock is not None and code == "InvalidRequest":
            return f"{self.url}: the bucket refuses an object lock ({describe(error)})"
        return f"{self.url}: cannot write here ({describe(error)})"

    async def _check_lock_configuration(self, client: Any) -> None:
        """Refuse a bucket without Object Lock when a lock is asked for. A key not allowed to
        read the bucket's lock configuration is let through: the upload's own lock headers,
        and the check after completion, still hold it to the lock."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = await client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as error:
            if error_code(error) in NO_LOCK_CONFIGURATION:
                raise DestinationUnusable(
                    f"{self.url}: --object-lock {self.object_lock} needs a bucket with Object "
                    "Lock enabled; this one has none"
                ) from None
            log.info("%s: lock configuration not readable (%s)", self.url, describe(error))
            return
        except BotoCoreError as error:
            raise DestinationUnusable(f"{self.url}: {describe(error)}") from None
        enabled = reply.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise DestinationUnusable(
                f"{self.url}: --object-lock {self.object_lock} needs a bucket with Object Lock "
                "enabled; this one has it off"
            )

    def _lock_arguments(self, retain_until: str | None) -> dict[str, Any]:
        if self.object_lock is None:
            return {}
        if self.object_lock.legal_hold:
            return {"ObjectLockLegalHoldStatus": "ON"}
        assert retain_until is not None
        return {
            "ObjectLockMode": self.object_lock.mode,
            "ObjectLockRetainUntilDate": _datetime(retain_until),
        }

    # ---- upload

    async def upload(
        self, path: Path, name: str, state: UploadState, progress: Progress | None = None
    ) -> Receipt:
        client = await self._open()
        key = self.key_for(name)
        size = (await asyncio.to_thread(path.stat)).st_size
        if size <= self.part_size:
            state.clear()
            return await self._put_whole(client, path, key, size, progress)
        for _ in range(2):
            try:
                return await self._put_parts(client, path, key, size, state, progress)
            except UploadForgotten:
                log.warning("%s: the service forgot upload of %s; starting over", self.url, name)
                state.clear()
        raise DeliveryError(f"{self.url}: the service forgot the upload of {name} twice")

    async def _put_whole(
        self, client: Any, path: Path, key: str, size: int, progress: Progress | None
    ) -> Receipt:
        data = await asyncio.to_thread(_read, path, 0, size)
        digest = await asyncio.to_thread(_sha256, data)
        retain_until = self.object_lock.retain_until() if self.object_lock else None
        reply: dict[str, Any] = {}
        for attempt in range(1, MAX_PART_ATTEMPTS + 1):
            reply = await self._send(
                f"sending {path.name}",
                attempt,
                lambda: client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ChecksumSHA256=b64(digest),
                    ChecksumAlgorithm="SHA256",
                    **self._lock_arguments(retain_until),
                ),
            )
            if reply and reply.get("ChecksumSHA256", b64(digest)) == b64(digest):
                break
        else:
            raise DeliveryError(f"{self.url}: {path.name}: every attempt arrived corrupted")
        if progress is not None:
            progress(size)
        version_id = _version(reply.get("VersionId"))
        checked = ["put"] if reply.get("ChecksumSHA256") else []
        checked += await self._confirm_attributes(client, key, version_id, size, b64(digest))
        if not checked:
            raise DeliveryError(f"{self.url}: {path.name}: the service confirmed no checksum")
        lock = await self._confirm_lock(client, key, version_id, retain_until)
        return Receipt(
            destination=self.url,
            location=self.location_of(key),
            size=size,
            sha256=digest.hex(),
            confirmation="s3-full-object-sha256",
            version_id=version_id,
            lock=lock,
            extra={"checksum_sha256": b64(digest), "checked_by": checked},
        )

    async def _send(
        self, what: str, attempt: int, call: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        """One attempt at sending bytes: ``{}`` when the service refused their checksum and
        another attempt is allowed."""
        try:
            return await self._call(what, call)
        except ChecksumRefused:
            if attempt == MAX_PART_ATTEMPTS:
                raise
            log.warning("%s: %s: checksum refused (corrupted in flight); again", self.url, what)
            return {}

    async def _put_parts(
        self,
        client: Any,
        path: Path,
        key: str,
        size: int,
        state: UploadState,
        progress: Progress | None,
    ) -> Receipt:
        upload = state.load()
        if upload and (upload.get("key") != key or upload.get("size") != size):
            upload = None  # another file under this name: not this upload's parts
        if upload is None:
            upload = await self._create_upload(client, key, size)
            state.save(upload)
        part_size = int(upload["part_size"])
        count = math.ceil(size / part_size)
        digests: list[bytes] = []
        whole = hashlib.sha256()
        if "completed" not in upload:
            digests = await self._send_parts(client, path, upload, state, whole, progress)
            parts = [
                {"PartNumber": int(n), "ETag": p["etag"], "ChecksumSHA256": p["sha256"]}
                for n, p in sorted(upload["parts"].items(), key=lambda item: int(item[0]))
            ]
            reply = await self._call(
                "completing the upload",
                lambda: client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload["upload_id"],
                    MultipartUpload={"Parts": parts},
                ),
            )
            upload["completed"] = {
                "version_id": _version(reply.get("VersionId")),
                "checksum": reply.get("ChecksumSHA256"),
                "etag": reply.get("ETag"),
            }
            state.save(upload)
        else:
            digests = await self._hash_file(path, size, part_size, whole)
        completed = upload["completed"]
        composite = composite_sha256(digests)
        checked = []
        if completed.get("checksum"):
            if _bare_checksum(completed["checksum"]) != _bare_checksum(composite):
                state.clear()
                raise DeliveryError(
                    f"{self.url}: {path.name}: the object's composite SHA-256 differs from the "
                    "local file's; not delivered (the next run uploads it again)"
                )
            checked.append("complete")
        version_id = completed.get("version_id")
        try:
            checked += await self._confirm_attributes(client, key, version_id, size, composite)
        except DeliveryError:
            state.clear()
            raise
        if not checked:
            raise DeliveryError(f"{self.url}: {path.name}: the service confirmed no checksum")
        lock = await self._confirm_lock(client, key, version_id, upload.get("retain_until"))
        return Receipt(
            destination=self.url,
            location=self.location_of(key),
            size=size,
            sha256=whole.hexdigest(),
            confirmation="s3-composite-sha256",
            version_id=version_id,
            lock=lock,
            extra={
                "composite_sha256": composite,
                "parts": count,
                "part_size": part_size,
                "checked_by": checked,
            },
        )

    async def _create_upload(self, client: Any, key: str, size: int) -> dict[str, Any]:
        part_size = max(self.part_size, math.ceil(size / MAX_PARTS))
        retain_until = self.object_lock.retain_until() if self.object_lock else None
        created = await self._call(
            "starting the upload",
            lambda: client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ChecksumAlgorithm="SHA256",
                **self._lock_arguments(retain_until),
            ),
        )
        return {
            "key": key,
            "size": size,
            "part_size": part_size,
            "upload_id": created["UploadId"],
            "retain_until": retain_until,
            "parts": {},
        }

    async def _hash_file(self, path: Path, size: int, part_size: int, whole: Any) -> list[bytes]:
        """The parts' digests of a file whose upload completed before a crash."""
        count = math.ceil(size / part_size)
        digests = []
        for number in range(1, count + 1):
            digest, _ = await self._read_part(path, size, part_size, number, whole)
            digests.append(digest)
        return digests

    async def _read_part(
        self, path: Path, size: int, part_size: int, number: int, whole: Any
    ) -> tuple[bytes, bytes]:
        """Part ``number``'s bytes and SHA-256; the whole file's hash advances in order."""
        offset = (number - 1) * part_size
        data = await asyncio.to_thread(_read, path, offset, min(part_size, size - offset))
        digest, _ = await asyncio.gather(
            asyncio.to_thread(_sha256, data), asyncio.to_thread(whole.update, data)
        )
        return digest, data

    async def _send_parts(
        self,
        client: Any,
        path: Path,
        upload: dict[str, Any],
        state: UploadState,
        whole: Any,
        progress: Progress | None,
    ) -> list[bytes]:
        """Read the file once in order (hashing each part and the whole), and send the parts
        the journal has no record of, ``concurrency`` at a time."""
        part_size = int(upload["part_size"])
        count = math.ceil(int(upload["size"]) / part_size)
        done: dict[str, dict[str, Any]] = upload["parts"]
        accepted = [sum(int(p["size"]) for p in done.values())]
        if progress is not None:
            progress(accepted[0])
        queue: asyncio.Queue[tuple[int, bytes, bytes] | None] = asyncio.Queue(READ_AHEAD)
        saving = asyncio.Lock()

        async def sender() -> None:
            while (item := await queue.get()) is not None:
                number, data, digest = item
                etag = await self._send_part(client, upload, number, data, digest)
                async with saving:
                    done[str(number)] = {"etag": etag, "sha256": b64(digest), "size": len(data)}
                    snapshot = {**upload, "parts": dict(done)}
                    await asyncio.to_thread(state.save, snapshot)
                    accepted[0] += len(data)
                if progress is not None:
                    progress(accepted[0])

        digests: list[bytes] = []
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.concurrency):
                    group.create_task(sender())
                for number in range(1, count + 1):
                    digest, data = await self._read_part(
                        path, int(upload["size"]), part_size, number, whole
                    )
                    digests.append(digest)
                    record = done.get(str(number))
                    if record is None:
                        await queue.put((number, data, digest))
                    elif record["sha256"] != b64(digest):
                        raise DeliveryError(
                            f"{path.name}: part {number} differs from the one sent earlier "
                            "(the file changed); delete its .delivery.json entry to start over"
                        )
                for _ in range(self.concurrency):
                    await queue.put(None)
        except BaseExceptionGroup as group_error:
            raise _unwrap(group_error) from None
        return digests

    async def _send_part(
        self, client: Any, upload: dict[str, Any], number: int, data: bytes, digest: bytes
    ) -> str:
        for attempt in range(1, MAX_PART_ATTEMPTS + 1):
            reply = await self._send(
                f"part {number}",
                attempt,
                lambda: client.upload_part(
                    Bucket=self.bucket,
                    Key=upload["key"],
                    UploadId=upload["upload_id"],
                    PartNumber=number,
                    Body=data,
                    ChecksumSHA256=b64(digest),
                    ChecksumAlgorithm="SHA256",
                ),
            )
            if reply and reply.get("ChecksumSHA256", b64(digest)) == b64(digest):
                return str(reply["ETag"])
        raise DeliveryError(f"{self.url}: part {number}: every attempt arrived corrupted")

    # ---- confirmation

    async def _confirm_attributes(
        self, client: Any, key: str, version_id: str | None, size: int, checksum: str
    ) -> list[str]:
        """``["attributes"]`` when GetObjectAttributes reports the size and checksum and both
        are ours; ``[]`` when this key may not ask; :class:`DeliveryError` when they differ."""
        from botocore.exceptions import ClientError

        arguments: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            arguments["VersionId"] = version_id
        try:
            reply = await client.get_object_attributes(
                **arguments, ObjectAttributes=["Checksum", "ObjectSize"]
            )
        except ClientError as error:
            if error_code(error) in DENIED:
                log.info("%s: object attributes not readable (%s)", self.url, describe(error))
                return []
            raise DeliveryError(f"{self.url}: confirming {key}: {describe(error)}") from None
        reported = str(reply.get("Checksum", {}).get("ChecksumSHA256") or "")
        reported_size = reply.get("ObjectSize")
        if not reported:
            return []
        if _bare_checksum(reported) != _bare_checksum(checksum) or reported_size != size:
            raise DeliveryError(
                f"{self.url}: {key}: the service reports {reported_size} bytes with SHA-256 "
                f"{_clean(reported)}, not {size} bytes with {checksum}; not delivered"
            )
        return ["attributes"]

    async def _confirm_lock(
        self, client: Any, key: str, version_id: str | None, retain_until: str | None
    ) -> dict[str, Any] | None:
        """The lock as the service reports it; applied now when the service did not honour it
        at creation (some do not on multipart uploads)."""
        request = self.object_lock
        if request is None:
            return None
        if not version_id:
            raise DeliveryError(f"{self.url}: {key}: no version id, so no object lock")
        status = await self._lock_status(client, key, version_id, strict=False)
        applied = "at-creation"
        if not self._lock_holds(status, retain_until):
            applied = "after-completion"
            await self._apply_lock(client, key, version_id, retain_until)
            status = await self._lock_status(client, key, version_id)
            if not self._lock_holds(status, retain_until):
                raise DeliveryError(f"{self.url}: {key}: the object lock did not take")
        return {**status, "applied": applied}

    def _lock_holds(self, status: dict[str, Any], retain_until: str | None) -> bool:
        request = self.object_lock
        assert request is not None
        if request.legal_hold:
            return status.get("legal_hold") == "ON"
        reported = status.get("retain_until")
        return (
            status.get("mode") == request.mode
            and reported is not None
            and retain_until is not None
            and _datetime(reported) >= _datetime(retain_until)
        )

    async def _lock_status(
        self, client: Any, key: str, version_id: str, strict: bool = True
    ) -> dict[str, Any]:
        """Legal hold and retention as reported. The one asked for must be readable (when
        ``strict``; before the lock is applied, unreadable means not set); the other is recorded
        when it can be read (``None`` when not)."""
        from botocore.exceptions import BotoCoreError, ClientError

        request = self.object_lock
        assert request is not None
        arguments = {"Bucket": self.bucket, "Key": key, "VersionId": version_id}
        try:
            head = await client.head_object(**arguments)
            return {
                "mode": head.get("ObjectLockMode"),
                "retain_until": _iso(head.get("ObjectLockRetainUntilDate")),
                "legal_hold": head.get("ObjectLockLegalHoldStatus", "OFF"),
            }
        except ClientError as error:
            # An upload-only key may not read the object, not even its head: ask for the lock
            # alone (s3:GetObjectLegalHold, s3:GetObjectRetention).
            if error_code(error) not in DENIED:
                raise DeliveryError(f"{self.url}: {key}: {describe(error)}") from None
        status: dict[str, Any] = {"mode": None, "retain_until": None, "legal_hold": None}
        for aspect in ("legal_hold", "retention"):
            required = request.legal_hold == (aspect == "legal_hold")
            try:
                if aspect == "legal_hold":
                    hold = await client.get_object_legal_hold(**arguments)
                    status["legal_hold"] = hold.get("LegalHold", {}).get("Status", "OFF")
                else:
                    retention = (await client.get_object_retention(**arguments))["Retention"]
                    status["mode"] = retention.get("Mode")
                    status["retain_until"] = _iso(retention.get("RetainUntilDate"))
            except (ClientError, BotoCoreError, KeyError) as error:
                if error_code(error) in NO_LOCK_CONFIGURATION:
                    status["legal_hold" if aspect == "legal_hold" else "mode"] = (
                        "OFF" if aspect == "legal_hold" else None
                    )
                elif required and strict:
                    what = aspect.replace("_", " ")
                    raise DeliveryError(f"{self.url}: {key}: {what}: {describe(error)}") from None
        return status

    async def _apply_lock(
        self, client: Any, key: str, version_id: str, retain_until: str | None
    ) -> None:
        request = self.object_lock
        assert request is not None
        arguments = {"Bucket": self.bucket, "Key": key, "VersionId": version_id}
        if request.legal_hold:
            await self._call(
                "setting the legal hold",
                lambda: client.put_object_legal_hold(**arguments, LegalHold={"Status": "ON"}),
            )
            return
        assert retain_until is not None
        retention = {"Mode": request.mode, "RetainUntilDate": _datetime(retain_until)}
        await self._call(
            "setting the retention",
            lambda: client.put_object_retention(**arguments, Retention=retention),
        )
