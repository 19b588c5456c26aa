"""How strong an archive passphrase is, estimated the way a guesser would attack it.

Length alone is a poor measure: ``aaaaaaaaaaaa`` and ``password1234`` have twelve characters
and fall to the first guesses. The estimate counts bits per character from the kinds of
characters used, but gives almost nothing for a character that repeats or continues a run of
the one before (``aaaa``, ``1234``, ``abcd``), and a fixed few bits for a common word, a
keyboard walk or a repeat of an earlier part (``hunter2hunter2``), however long. It is
deliberately simple (no dictionary beyond a short list): a floor that refuses the passphrases
guessers try first, not a proof of strength. The recipient-key mode (``--recipient``) needs no
passphrase at all and is the one to prefer.
"""

from __future__ import annotations

import math
import string

MIN_BITS = 60
MIN_LENGTH = 12
COMMON = (
    "password",
    "passwort",
    "passphrase",
    "letmein",
    "welcome",
    "qwerty",
    "qwertz",
    "azerty",
    "asdfgh",
    "zxcvbn",
    "iloveyou",
    "admin",
    "secret",
    "evidence",
    "forensic",
    "carbonblack",
    "changeme",
    "monkey",
    "dragon",
    "master",
    "summer",
    "winter",
    "spring",
    "autumn",
)
WORD_BITS = 6.0
STEP_BITS = 1.0
REPEAT_MIN = 3


def _alphabet(text: str) -> int:
    size = 0
    if any(char in string.ascii_lowercase for char in text):
        size += 26
    if any(char in string.ascii_uppercase for char in text):
        size += 26
    if any(char in string.digits for char in text):
        size += 10
    if any(not char.isalnum() for char in text):
        size += 33
    if any(ord(char) > 127 for char in text):
        size += 100
    return max(size, 1)


def _known_at(text: str, index: int) -> int:
    """The length of a common word, or of a repeat (3+ characters seen earlier), at
    ``index``; 0 when neither starts there."""
    word = next((w for w in COMMON if text.startswith(w, index)), "")
    repeat = 0
    for length in range(len(text) - index, REPEAT_MIN - 1, -1):
        if text[index : index + length] in text[:index]:
            repeat = length
            break
    return max(len(word), repeat)


def estimate_bits(passphrase: str) -> float:
    """A conservative estimate of the guesses needed, in bits."""
    per_char = math.log2(_alphabet(passphrase))
    lowered = passphrase.lower()
    bits = 0.0
    index = 0
    previous = ""
    while index < len(lowered):
        known = _known_at(lowered, index)
        if known:
            bits += WORD_BITS
            index += known
            previous = ""
            continue
        char = lowered[index]
        continues = previous and (char == previous or abs(ord(char) - ord(previous)) == 1)
        bits += STEP_BITS if continues else per_char
        previous = char
        index += 1
    return bits


def weakness(passphrase: str) -> str:
    """Why the passphrase is too weak to seal evidence with ("" when it is acceptable)."""
    if len(passphrase) < MIN_LENGTH:
        return f"the passphrase has {len(passphrase)} characters; it needs at least {MIN_LENGTH}"
    bits = estimate_bits(passphrase)
    if bits < MIN_BITS:
        return (
            f"the passphrase is too easy to guess (about {bits:.0f} bits; at least {MIN_BITS} "
            "are needed): repeats, runs such as 1234 or abcd, and common words count for "
            "little. Use four or more unrelated words or 14+ random characters, or better, "
            "seal for the lab's public key with --recipient (no passphrase to guess or share)"
        )
    return ""
