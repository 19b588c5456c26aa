"""moto's S3 server, with the two behaviours of S3's that the delivery tests need and moto lacks.

Run as ``python tests/moto_s3.py -H 127.0.0.1 -p PORT`` (the arguments of ``python -m
moto.server``). Added, as S3 documents them, and nothing else:

- S3 computes the SHA-256 of every ``UploadPart`` and ``PutObject`` body that carries
  ``x-amz-checksum-sha256`` and refuses a mismatch with ``400 BadDigest``; moto stores the body
  and echoes the header. So a byte flipped in flight by the tests' proxy is refused as S3
  would refuse it.
- A part sent to an upload id S3 no longer knows (aborted, expired) gets ``404 NoSuchUpload``;
  moto answers 500 (a KeyError).
"""

from __future__ import annotations

import base64
import hashlib
import sys
from typing import Any

from moto.s3.exceptions import NoSuchUpload, S3ClientError
from moto.s3.responses import S3Response
from moto.server import main


class BadDigest(S3ClientError):
    code = "BadDigest"

    def __init__(self) -> None:
        super().__init__(
            "BadDigest", "The SHA256 you specified did not match the calculated checksum."
        )


def _checked(original: Any) -> Any:
    def handler(self: S3Response) -> Any:
        upload_id = self._get_param("uploadId")
        if upload_id and upload_id not in self.backend.get_bucket(self.bucket_name).multiparts:
            raise NoSuchUpload(upload_id=upload_id)
        claimed = self.headers.get("x-amz-checksum-sha256")
        body = self.body if isinstance(self.body, bytes) else bytes(self.body or b"")
        if claimed and base64.b64encode(hashlib.sha256(body).digest()).decode() != claimed:
            raise BadDigest()
        return original(self)

    return handler


S3Response.upload_part = _checked(S3Response.upload_part)  # type: ignore[method-assign]
S3Response.put_object = _checked(S3Response.put_object)  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])
