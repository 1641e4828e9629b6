"""What guardrails look for in a prompt: personal data and secrets, each a precompiled regex plus, where
the shape alone would match ordinary numbers, a validation (Luhn for cards, ISO 13616 mod-97 and the
country's length for IBANs, the issued ranges for US SSNs, fastgw's own checksum for its API keys).

Where each detector scans (hints, anchors, digit clusters) is ``scan.py``'s business. Patterns start with
a literal or a character class, the "not preceded by" look-behind coming after the first character, and
are anchored on both sides by look-arounds so that a detector never matches inside a longer
word or number (an order id, a version string, a hash). The false-positive rate of each is measured on
tests/ai/guardrails_corpus/clean.txt (tests/ai/test_guardrail_corpus.py).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Final

import orjson

from fastgw.ai.guardrails.scan import DIGIT_REACH, Detector, Reach, TextView, rare_char
from fastgw.key_format import well_formed

# --- validations ------------------------------------------------------------------------------------------


def luhn(digits: str) -> bool:
    """ISO/IEC 7812 check digit: every second digit from the right doubled."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Issuer prefixes of the card networks (Visa 4, Mastercard 51-55 and 2221-2720, Amex 34/37, Discover
# 6011/644-649/65, JCB 3528-3589, Diners 300-305/36/38, UnionPay 62): a Luhn-valid number outside them is
# more likely an id than a card (a tenth of all random numbers pass Luhn).
_CARD_PREFIX: Final = re.compile(
    r"4|5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|6011|64[4-9]|65|35(?:2[89]|[3-8]\d)"
    r"|30[0-5]|3[68]|62"
)


def valid_card(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) is not None and luhn(digits)


# ISO 13616 IBAN lengths by country (the SWIFT registry): a mod-97-valid string of the wrong length for its
# country is no IBAN.
IBAN_LENGTHS: Final = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27,
    "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24,
    "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TL": 23, "TN": 24, "TR": 26,
    "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


# Some countries' account numbers are alphanumeric (Malta, Kazakhstan, Saint Lucia): an IBAN may hold
# few digits, so any digit cluster is scanned for one.
IBAN_DIGITS_MIN: Final = 6


def iban_checksum(iban: str) -> int:
    """ISO 7064 mod 97-10 over the IBAN with its first four characters moved to the end (1 when valid)."""
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97


def valid_iban(text: str) -> bool:
    iban = text.replace(" ", "")
    return IBAN_LENGTHS.get(iban[:2]) == len(iban) and iban_checksum(iban) == 1


# What a phone number's match holds besides its digits.
_PHONE_MARKS: Final = str.maketrans("", "", " .-()+")


def valid_phone(text: str) -> bool:
    """E.164 allows 15 digits at most; fewer than 8 is an extension or a short code, not a number."""
    return 8 <= len(text.translate(_PHONE_MARKS)) <= 15


def valid_national_phone(text: str) -> bool:
    """A trunk-prefixed national number (``020 7946 0958``, ``06 12 34 56 78``) has 10 or 11 digits."""
    return len(text.translate(_PHONE_MARKS)) in (10, 11)


def valid_ssn(text: str) -> bool:
    """Never issued: area 000, 666 and 900-999 (the pattern starts 0-8), group 00, serial 0000."""
    return text[:3] not in ("000", "666") and text[4:6] != "00" and text[7:] != "0000"


# NINO prefixes never allocated (HMRC's list), beyond the letters the pattern already excludes.
_NINO_NEVER: Final = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def valid_nino(text: str) -> bool:
    return text[:2] not in _NINO_NEVER


def valid_jwt(text: str) -> bool:
    """The first part must decode (base64url) to a JSON object naming an algorithm or a type."""
    head = text.split(".", 1)[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and ("alg" in header or "typ" in header)


def valid_fastgw_key(text: str) -> bool:
    return well_formed(text.encode())


# --- the detectors ----------------------------------------------------------------------------------------
# Each pattern starts with its first character (a literal or a class), then a look-behind over the two
# characters ending there: "not preceded by" checked only where a candidate starts.

# RFC 5321 limits: a local part of 64 characters, a domain of 255.
LOCAL_MAX: Final = 64
DOMAIN_MAX: Final = 255
_LOCAL_PART: Final = re.compile(r"[A-Za-z0-9._%+-]{1," + str(LOCAL_MAX) + "}")


# Past one "@" in this many characters, one pass of the pattern over the text costs less than a match per
# "@" (about 6 us each in Python against 0.3 us a character in the regex engine): a text of "a@a@..."
# took 3 s a MiB.
EMAIL_DENSE: Final = 20


def email_starts(view: TextView) -> list[tuple[int, int]] | None:
    """From each ``@``, back over the local part's characters: where an address may start (None: so
    many "@" that the whole text is scanned instead)."""
    text = view.text
    at = text.find("@")
    if at < 0:
        return []
    if text.find("@", at + 1) >= 0 and text.count("@") * EMAIL_DENSE > len(text):  # one "@": no count
        return None
    out = []
    while at >= 0:
        back = _LOCAL_PART.match(text[max(0, at - LOCAL_MAX) : at][::-1])
        if back is not None:
            out.append((at - back.end(), min(len(text), at + DOMAIN_MAX + 1)))
        at = text.find("@", at + 1)
    return out


_EMAIL: Final = (
    r"[A-Za-z0-9._%+-](?<![\w.%+-].)[A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)
# A "+" and a country code, then groups of digits with one separator between them (the brackets of a
# trunk digit allowed); the digit count is checked after.
# Each group's digits possessive (``{1,4}+``): a group never gives digits back to the next, so a long
# run of digits is split one way, not tried in every way (8 ms per "+1" and 30 digits before, a worker's
# loop held for seconds by a prompt of them).
_PHONE_INTL: Final = r"\+(?<![\w+]\+)[1-9]\d{0,3}(?:[ .-]?\(?\d{1,4}+\)?){2,6}(?![\w.-]\d|\w)"
# North American numbers in their written forms: (415) 555-0132, 415-555-0132, 415.555.0132 (area code
# and exchange start with 2-9).
_PHONE_NANP_PAREN: Final = r"\((?<!\w\()[2-9]\d\d\) ?[2-9]\d\d[.-]\d{4}(?![\w.-]\d|\w)"
_PHONE_NANP: Final = r"[2-9](?<![\w.+-].)\d\d(?P<sep>[.-])[2-9]\d\d(?P=sep)\d{4}(?![\w.-]\d|\w)"
# Trunk-prefixed national numbers written with spaces: 020 7946 0958, 07700 900123, 06 12 34 56 78.
_PHONE_NATIONAL: Final = r"0(?<![\w.,+/-]0)[1-9]\d{0,4}(?: \d{2,6}){1,4}(?![\w.,/-]\d|\w| \d)"
# 13-19 digits unbroken, or in the printed groupings (4-4-4-4[-3], Amex's 4-6-5) with one separator.
_CARD: Final = (
    r"[2-6](?<![\w.-].)(?:\d{12,18}|\d{3}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{3}([ -])\d{6}\2\d{4,5})"
    r"(?![\w-]|[ .]\d)"
)
_IBAN: Final = r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"
# US SSN written AAA-GG-SSSS (the ranges never issued are excluded by valid_ssn).
_US_SSN: Final = r"[0-8](?<![\w-].)\d\d-\d\d-\d{4}(?![\w-])"
# UK National Insurance number: two prefix letters (D, F, I, Q, U, V never; O never second; BG, GB, KN, NK,
# NT, TN, ZZ never allocated: valid_nino), six digits, suffix A-D.
_UK_NINO: Final = (
    r"[A-CEGHJ-PR-TW-Z](?<![A-Za-z0-9].)[A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])"
)
_AWS_ACCESS_KEY: Final = (
    r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|PKA|ROA)[A-Z2-7]{16}(?![A-Za-z0-9])"
)
# A secret access key is 40 base64 characters with no prefix: recognisable only next to its name.
_AWS_SECRET_KEY: Final = (
    r"(?i:aws_?secret(?:_?access)?_?key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
)
_GCP_API_KEY: Final = r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"
# An Azure storage account key (64 random bytes in base64) in its connection string.
_AZURE_STORAGE_KEY: Final = r"AccountKey=[A-Za-z0-9+/]{86}=="
# Bounded: a PEM block longer than 16 KiB is no private key (an RSA-8192 key is about 6.5 KiB). Its body
# never crosses another BEGIN line, so a text of BEGIN lines with no END is scanned once, not 16 KiB from
# each (a 28 KB one took 0.56 s).
_PRIVATE_KEY: Final = (
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:(?!-----BEGIN )[\s\S]){1,16384}?"
    r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
)
_JWT: Final = r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*(?![A-Za-z0-9_-])"
_FASTGW_KEY: Final = r"fgw_(?<![A-Za-z0-9]fgw_)[0-9A-Za-z]{49}(?![0-9A-Za-z])"
# OpenAI (sk-, sk-proj-) and Anthropic (sk-ant-) keys: long, prefixed, high-entropy.
_PROVIDER_KEY: Final = r"sk-(?<![A-Za-z0-9_-]sk-)(?:proj-|ant-)?[A-Za-z0-9_-]{32,}(?![A-Za-z0-9_-])"


def _d(
    name: str,
    group: str,
    *patterns: str | tuple[str, str, int, bytes],
    valid: Callable[[str], bool] | None = None,
    hints: tuple[str, ...] = (),
    digits: int = 0,
    reach: Reach = (DIGIT_REACH, DIGIT_REACH),
    token_run: bool = False,
) -> Detector:
    compiled = tuple(
        (re.compile(p[0]), *p[1:]) if isinstance(p, tuple) else (re.compile(p), "", 0, b"") for p in patterns
    )
    gates = tuple((rare_char(h), h) for h in hints)
    return Detector(
        name, group, compiled, valid, hints, gates, digits=digits, reach=reach, token_run=token_run
    )


DETECTORS: Final = {
    d.name: d
    for d in (
        Detector("email", "pii", ((re.compile(_EMAIL), "@", 0, b""),), starts=email_starts),
        # Three patterns, each with its own first character, not one alternation: the regex engine skips
        # to a literal or one class of first characters, and tries an alternation at every position; and
        # each only where it can match (a "+" in the text, a "(", ten digits in the window: a date
        # has eight). Reach: a "+" or "(" before the first digit; a ")" and the look-ahead's two after.
        _d(
            "phone",
            "pii",
            (_PHONE_INTL, "+", 8, b""),
            (_PHONE_NANP_PAREN, "(", 10, b""),
            (_PHONE_NANP, "", 10, b""),
            valid=valid_phone,
            digits=8,
            reach=(1, 3),
        ),
        _d("phone_national", "pii", _PHONE_NATIONAL, valid=valid_national_phone, digits=10, reach=(0, 2)),
        _d("payment_card", "pii", _CARD, valid=valid_card, digits=13, reach=(0, 2)),
        # The country code and check digits may lie before the cluster (letters run up to 8 characters
        # after them in Saint Lucia's or Kuwait's accounts: "LC07 HEMM ABCD 0001 ..."); after the last
        # digit of the cluster, Malta's trailing " MTLC AST0 01S" (too few digits to be one) and the
        # look-ahead. The shape gate: the country code and check digits are in the window.
        _d(
            "iban",
            "pii",
            (_IBAN, "", 0, b"AA00"),
            valid=valid_iban,
            digits=IBAN_DIGITS_MIN,
        ),
        _d("us_ssn", "national_id", _US_SSN, valid=valid_ssn, hints=("-",), digits=9, reach=(0, 1)),
        # Two letters and a space before the digits; a space, the suffix letter and the look-ahead after.
        _d("uk_nino", "national_id", (_UK_NINO, "", 0, b"AA"), valid=valid_nino, digits=6, reach=(3, 3)),
        # These four hold a run of TOKEN_RUN characters of [A-Za-z0-9_+/-] (20, 40, 39 and 35).
        _d("aws_access_key", "secrets", _AWS_ACCESS_KEY, token_run=True),
        _d("aws_secret_key", "secrets", _AWS_SECRET_KEY, hints=("ecret", "ECRET"), token_run=True),
        _d("gcp_api_key", "secrets", _GCP_API_KEY, hints=("AIza",), token_run=True),
        _d("azure_storage_key", "secrets", _AZURE_STORAGE_KEY, hints=("AccountKey=",)),
        _d("private_key", "secrets", _PRIVATE_KEY, hints=("-----BEGIN",)),
        _d("jwt", "secrets", _JWT, valid=valid_jwt, hints=("eyJ",)),
        _d("fastgw_key", "secrets", _FASTGW_KEY, valid=valid_fastgw_key, hints=("fgw_",)),
        _d("provider_key", "secrets", _PROVIDER_KEY, hints=("sk-",), token_run=True),
    )
}
GROUPS: Final = {
    g: tuple(n for n, d in DETECTORS.items() if d.group == g) for g in ("pii", "national_id", "secrets")
}
