"""Trusted time: RFC 3161 timestamps from a Time Stamping Authority (``rfc3161-client``).

A signature says who, not when: the signer's own clock is the signer's claim. A token from a
TSA binds the SHA-256 of the signature bytes to the TSA's time, signed by the TSA's
certificate. The collector asks for one over the manifest signature when sealing (stored in
the sidecar's ``sealed`` record) and over each custody record's signature (the event's
``timestamp`` field); ``verify --tsa-chain PEM`` checks every token against the TSA
certificate chain the verifier brings, as with signing keys: the token's embedded
certificate is never trusted on its own.
"""

from __future__ import annotations

import base64
import hashlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import rfc3161_client
from cryptography import x509

TIMEOUT_SECONDS = 30.0
MAX_REPLY_BYTES = 256 * 1024
MAX_CHAIN_BYTES = 1024 * 1024
QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"


class TimestampError(ValueError):
    """The TSA could not be asked, or its answer is not a valid token for the data."""


def _check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TimestampError(f"--tsa {url!r}: not an http(s) URL")


def request_timestamp(url: str, data: bytes, timeout: float = TIMEOUT_SECONDS) -> bytes:
    """Ask the TSA at ``url`` for a token over ``data``; the DER TimeStampResp. Blocking.

    The reply is bounded in size and checked before it is kept: granted, our nonce, and the
    SHA-256 of ``data`` as its message imprint. (An RFC 3161 request carries only a hash, so
    a TSA learns nothing about the evidence.)
    """
    _check_url(url)
    query = (
        rfc3161_client.TimestampRequestBuilder()
        .data(data)
        .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    request = urllib.request.Request(
        url, data=query.as_bytes(), headers={"Content-Type": QUERY_TYPE}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            body = reply.read(MAX_REPLY_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TimestampError(f"the TSA at {url} did not answer ({_reason(exc)})") from None
    if len(body) > MAX_REPLY_BYTES:
        raise TimestampError(f"the TSA at {url} sent more than {MAX_REPLY_BYTES} bytes")
    try:
        response = rfc3161_client.decode_timestamp_response(body)
    except ValueError:
        raise TimestampError(f"the TSA at {url} sent no RFC 3161 reply") from None
    if rfc3161_client.PKIStatus(response.status) != rfc3161_client.PKIStatus.GRANTED:
        raise TimestampError(f"the TSA at {url} refused the request (status {response.status})")
    info = response.tst_info
    if info.nonce != query.nonce or info.message_imprint.message != _sha256(data):
        raise TimestampError(f"the TSA at {url} answered for another request")
    return body


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
    return str(reason)[:120]


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def timestamper(url: str) -> Callable[[bytes], bytes]:
    """``custody.Timestamper`` for ``url`` (checked now, so a bad URL is a usage error)."""
    _check_url(url)
    return lambda data: request_timestamp(url, data)


@dataclass(frozen=True)
class TsaChain:
    """The TSA certificates a verifier trusts: self-signed roots and the intermediates."""

    roots: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...]
    source: str


def load_chain(path: str | Path) -> TsaChain:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CHAIN_BYTES + 1)
        certificates = x509.load_pem_x509_certificates(data)
    except OSError as exc:
        raise TimestampError(f"cannot read TSA chain {path}: {exc.strerror}") from None
    except ValueError:
        raise TimestampError(f"{path}: not PEM certificates (the TSA's chain)") from None
    roots = tuple(cert for cert in certificates if cert.issuer == cert.subject)
    if not roots:
        raise TimestampError(f"{path}: no root (self-signed) certificate in the TSA chain")
    others = tuple(cert for cert in certificates if cert.issuer != cert.subject)
    return TsaChain(roots, others, str(path))


@dataclass(frozen=True)
class TimestampCheck:
    ok: bool
    detail: str
    time: str = ""


def check_token(token_b64: str, data: bytes, chain: TsaChain) -> TimestampCheck:
    """Does ``token_b64`` timestamp exactly ``data``, signed by a TSA of ``chain``?"""
    try:
        response = rfc3161_client.decode_timestamp_response(
            base64.b64decode(token_b64, validate=True)
        )
    except ValueError:
        return TimestampCheck(False, "the timestamp token is unreadable")
    builder = rfc3161_client.VerifierBuilder()
    for root in chain.roots:
        builder = builder.add_root_certificate(root)
    for intermediate in chain.intermediates:
        builder = builder.add_intermediate_certificate(intermediate)
    try:
        builder.build().verify_message(response, data)
    except (rfc3161_client.VerificationError, ValueError) as exc:
        return TimestampCheck(False, f"the timestamp does not verify ({str(exc)[:160]})")
    when = response.tst_info.gen_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return TimestampCheck(True, f"RFC 3161 time {when}", when)
