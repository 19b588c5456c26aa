"""WinZip AES (AE-1/AE-2) for pyzipper with OpenSSL doing the work: the same bytes, faster.

Why: sealing spends its time in pyzipper's cipher and MAC, not in zip bookkeeping. pyzipper
0.4.0 runs AES-CTR and HMAC-SHA1 through pycryptodome; on the 2-core reference machine (AES-NI,
SHA-NI) that costs, per MiB, 1.95 ms of CTR and 1.57 ms of HMAC-SHA1 (pycryptodome's HMAC is
built in Python over its SHA-1). hashlib's OpenSSL HMAC-SHA1 takes 0.55 ms, and an AES keystream
made by OpenSSL's AES-ECB (the ``cryptography`` package) over a prepared buffer of counter
blocks, XORed in C by ``Cryptodome.Util.strxor``, about 0.3 ms. OpenSSL's own CTR mode cannot be
used: it increments a big-endian counter, while WinZip's is a little-endian 128-bit integer
starting at 1, so the counter blocks are laid out here and encrypted in ECB mode. The cipher
and MAC drop from 3.5 to 0.84 ms per MiB; a 256 MiB stored member, with pyzipper's CRC-32 and
the file I/O around it, writes 2.4 and reads 3.0 times as fast as through pyzipper alone.

What is identical: the key derivation (PBKDF2-HMAC-SHA1, 1000 rounds, here by hashlib), the
salt and password-verifier header, the ciphertext, the 10-byte MAC, the zip records (pyzipper
still writes them), and the errors: a wrong password raises pyzipper's ``RuntimeError`` and an
altered byte its ``BadZipFile("Bad HMAC check ...")``. Given the same salt, an archive written
through :class:`FastAESZipFile` is byte-identical to one written through ``pyzipper.AESZipFile``,
which the tests check, so anything that opens pyzipper's archives (7-Zip included) opens these.

Why pinned and loud: the classes below hook into pyzipper internals (``AESZipEncrypter``'s
attributes, ``AESZipExtFile.setup_aeszipdecrypter``, the decrypter's constructor signature),
which a pyzipper release may change without notice. Importing this module with any pyzipper
other than :data:`PYZIPPER_VERSION` raises ``ImportError`` instead of falling back to the slow
path: a silent fallback would hide both a speed regression and an untested code path in the
one place where a mistake costs evidence.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from functools import cache

import pyzipper
from Cryptodome.Util.strxor import strxor
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pyzipper.zipfile import _ZipWriteFile
from pyzipper.zipfile_aes import (
    WZ_AES,
    WZ_AES_V2,
    WZ_KEY_LENGTHS,
    WZ_SALT_LENGTHS,
    AESZipDecrypter,
    AESZipEncrypter,
    AESZipExtFile,
    AESZipInfo,
    BadZipFile,
)

PYZIPPER_VERSION = "0.4.0"
"""The only pyzipper release whose internals this module has been checked against."""

BytesLike = bytes | bytearray | memoryview

AES_BLOCK = 16
WINDOW_BLOCKS = 1 << 16
"""Counter blocks per window: bytes 0-1 of a counter are its slot, bytes 2-15 the window."""
WINDOW_BYTES = WINDOW_BLOCKS * AES_BLOCK
MAX_PIECE = WINDOW_BYTES
"""The longest run encrypted in one OpenSSL call; longer inputs are cut into such pieces."""
PBKDF2_ROUNDS = 1000
PASSWORD_VERIFIER_BYTES = 2
MAC_BYTES = 10


def _require_pinned_pyzipper() -> None:
    found = getattr(pyzipper, "__version__", "unknown")
    if found != PYZIPPER_VERSION:
        raise ImportError(
            f"evidence.wzaes hooks into pyzipper {PYZIPPER_VERSION} internals but pyzipper "
            f"{found} is installed; install pyzipper=={PYZIPPER_VERSION}, or review "
            "evidence/wzaes.py against the new release before moving the pin"
        )


_require_pinned_pyzipper()


@cache
def _counter_slots() -> bytes:
    """Two windows of counter blocks with bytes 0-1 set to the slot number and bytes 2-15 zero.

    Two windows because a piece of up to one window's length, starting anywhere in the first,
    ends at the latest in the second: every piece is one contiguous slice of this template.
    """
    template = bytearray(2 * WINDOW_BYTES)
    template[0::AES_BLOCK] = bytes(range(256)) * (2 * WINDOW_BLOCKS // 256)
    template[1::AES_BLOCK] = b"".join(bytes([high]) * 256 for high in range(256)) * 2
    return bytes(template)


class WinZipKeystream:
    """AES in WinZip's CTR mode: block ``b`` of the stream is XORed with AES(key, b + 1), the
    counter being a 128-bit little-endian integer.

    :meth:`xor` takes the stream in pieces of any size and keeps the position between calls.
    No keystream is carried over: a piece that ends inside a block recomputes that one block
    for the next piece, which costs a single AES block and leaves no tail to keep in step.
    ``first_block`` starts the stream further on (the tests use it to cross high counter bytes).
    """

    def __init__(self, key: bytes, first_block: int = 0) -> None:
        self._ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        self._first_counter = first_block + 1
        self._position = 0
        self._counters = bytearray(_counter_slots())
        self._counters_view = memoryview(self._counters)
        self._window_numbers = [bytes(14), bytes(14)]
        """The bytes 2-15 currently written in each half of ``_counters``."""
        self._base_window = -1
        # update_into wants room for one block more than it is given, less one byte.
        self._keystream = bytearray(MAX_PIECE + 2 * AES_BLOCK)
        self._keystream_view = memoryview(self._keystream)

    @property
    def position(self) -> int:
        """Bytes processed so far."""
        return self._position

    def xor(self, data: BytesLike) -> bytes:
        """``data`` XOR the next ``len(data)`` keystream bytes; encrypts and decrypts alike."""
        view = memoryview(data).cast("B")
        if len(view) <= MAX_PIECE:
            return self._xor_piece(view)
        return b"".join(
            self._xor_piece(view[start : start + MAX_PIECE])
            for start in range(0, len(view), MAX_PIECE)
        )

    def _xor_piece(self, view: memoryview) -> bytes:
        length = len(view)
        if not length:
            return b""
        counter = self._first_counter + self._position // AES_BLOCK
        skip = self._position % AES_BLOCK
        blocks = -(-(skip + length) // AES_BLOCK)
        window = counter // WINDOW_BLOCKS
        if window != self._base_window:
            self._rebase(window)
        slot = counter - window * WINDOW_BLOCKS
        counters = self._counters_view[slot * AES_BLOCK : (slot + blocks) * AES_BLOCK]
        keystream = self._keystream_view[: blocks * AES_BLOCK + AES_BLOCK - 1]
        self._ecb.update_into(counters, keystream)
        region = self._keystream_view[skip : skip + length]
        strxor(view, region, output=region)
        self._position += length
        return bytes(region)

    def _rebase(self, window: int) -> None:
        """Make the template's halves hold windows ``window`` and ``window + 1``, rewriting only
        the counter bytes that change (usually byte 2 alone)."""
        for half in (0, 1):
            wanted = (window + half).to_bytes(14, "little")
            current = self._window_numbers[half]
            start = half * WINDOW_BYTES
            for index, (old, new) in enumerate(zip(current, wanted, strict=True)):
                if old != new:
                    first = start + 2 + index
                    self._counters[first : start + WINDOW_BYTES : AES_BLOCK] = (
                        bytes([new]) * WINDOW_BLOCKS
                    )
            self._window_numbers[half] = wanted
        self._base_window = window


def _derive_keys(pwd: bytes, salt: bytes, key_length: int) -> tuple[bytes, bytes, bytes]:
    """WinZip's key material: (AES key, HMAC key, 2-byte password verifier)."""
    material = hashlib.pbkdf2_hmac(
        "sha1", pwd, salt, PBKDF2_ROUNDS, 2 * key_length + PASSWORD_VERIFIER_BYTES
    )
    return material[:key_length], material[key_length : 2 * key_length], material[2 * key_length :]


class FastAESZipEncrypter(AESZipEncrypter):
    """pyzipper's ``AESZipEncrypter`` with OpenSSL AES and HMAC-SHA1 underneath.

    Same arguments: pyzipper's constructor still validates them and sets the attributes
    pyzipper reads (strength, version rules). The key schedule it builds with pycryptodome
    (about 1.5 ms, once per member) is then replaced: a fresh salt from ``os.urandom``, keys by
    hashlib's PBKDF2, and ``encrypter``/``hmac`` rebound to the OpenSSL-backed objects.
    """

    def __init__(
        self,
        pwd: bytes,
        nbits: int = 256,
        force_wz_aes_version: int | None = None,
        conditionally_include_crc: bool | None = None,
        min_bytes_to_include_crc: int | None = None,
    ) -> None:
        super().__init__(
            pwd,
            nbits=nbits,
            force_wz_aes_version=force_wz_aes_version,
            conditionally_include_crc=conditionally_include_crc,
            min_bytes_to_include_crc=min_bytes_to_include_crc,
        )
        self.salt = os.urandom(self.salt_length)
        key, mac_key, verifier = _derive_keys(pwd, self.salt, WZ_KEY_LENGTHS[self.aes_strength])
        self.encpwdverify = verifier
        self.encrypter = WinZipKeystream(key)
        self.hmac = hmac.new(mac_key, digestmod="sha1")

    def encrypt(self, data: BytesLike) -> bytes:
        ciphertext = self.encrypter.xor(data)
        self.hmac.update(ciphertext)
        return ciphertext

    def flush(self) -> bytes:
        return self.hmac.digest()[:MAC_BYTES]


class FastAESZipDecrypter(AESZipDecrypter):
    """pyzipper's ``AESZipDecrypter`` with OpenSSL AES and HMAC-SHA1 underneath; the same
    password-verifier and MAC checks, raising the same exceptions with the same messages."""

    def __init__(self, zinfo: AESZipInfo, pwd: bytes, encryption_header: bytes) -> None:
        self.filename = zinfo.filename
        salt_length = WZ_SALT_LENGTHS[zinfo.wz_aes_strength]
        salt = encryption_header[:salt_length]
        key, mac_key, verifier = _derive_keys(pwd, salt, WZ_KEY_LENGTHS[zinfo.wz_aes_strength])
        if verifier != encryption_header[salt_length:]:
            raise RuntimeError(f"Bad password for file {zinfo.filename!r}")
        self.keystream = WinZipKeystream(key)
        self.hmac = hmac.new(mac_key, digestmod="sha1")

    def decrypt(self, data: BytesLike) -> bytes:
        self.hmac.update(data)
        return self.keystream.xor(data)

    def check_hmac(self, hmac_check: bytes) -> None:
        if not hmac.compare_digest(self.hmac.digest()[:MAC_BYTES], hmac_check):
            raise BadZipFile(f"Bad HMAC check for file {self.filename!r}")


class FastAESZipExtFile(AESZipExtFile):
    """Reads WinZip AES members through :class:`FastAESZipDecrypter`."""

    def setup_aeszipdecrypter(self) -> type[FastAESZipDecrypter]:
        super().setup_aeszipdecrypter()
        return FastAESZipDecrypter


class FastAESZipWriteFile(_ZipWriteFile):
    """pyzipper's member writer without the CRC-32 of an AE-2 member.

    AE-2 records a CRC of 0 in every header and descriptor (the HMAC authenticates the member
    instead), yet pyzipper 0.4.0 computes the CRC of every byte it writes, ~0.25 ms of CPU
    per MiB, only to write 0. Here an AE-2 member's CRC is not computed; the archive is the
    same bytes (the tests compare). Every other member (AE-1, plain) goes through pyzipper's
    own ``write``. ``write`` repeats the body of pyzipper's: the pinned version is the one it
    was checked against.
    """

    def write(self, data: BytesLike) -> int:  # type: ignore[override]
        if not self._crc_is_unused():
            return int(super().write(data))
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        nbytes = len(data)
        self._file_size += nbytes
        if self._compressor:
            data = self._compressor.compress(data)
        data = self._encrypter.encrypt(data)
        self._compress_size += len(data)
        self._fileobj.write(data)
        return nbytes

    def _crc_is_unused(self) -> bool:
        """AE-2 now and for good: with ``conditionally_include_crc`` a member that can be
        seeked back to may turn AE-1 (CRC needed) once its size is known."""
        return (
            self._encrypter is not None
            and getattr(self._zinfo, "wz_aes_version", None) == WZ_AES_V2
            and not getattr(self._encrypter, "conditionally_include_crc", False)
        )


class FastAESZipFile(pyzipper.AESZipFile):
    """Drop-in ``pyzipper.AESZipFile``: same constructor, same archives, faster AES members."""

    zipextfile_cls = FastAESZipExtFile
    zipwritefile_cls = FastAESZipWriteFile

    def get_encrypter(self) -> AESZipEncrypter | None:
        if self.encryption == WZ_AES:
            return FastAESZipEncrypter(pwd=self.pwd, **(self.encryption_kwargs or {}))
        return super().get_encrypter()
