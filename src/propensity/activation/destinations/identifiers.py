"""Identifier normalisation and hashing for ad audiences: the same person must give the same hash everywhere.

The rules follow Google's (Google Ads API "enhanced conversions" and Customer Match "prepare user data" guides):
trim surrounding whitespace, lowercase, remove every '.' before the domain of gmail.com and googlemail.com
addresses, phone numbers in E.164 (``+`` then country code and number), then SHA-256 as lowercase hex. We also
drop a ``+tag`` from gmail/googlemail local parts (Gmail delivers ``ann+news@`` to ``ann@``, and the platform's
account is ``ann@``). Meta's Custom Audiences rules (trim, lowercase, country code) agree for email; its phone
field is digits without ``+``, which a Meta adapter gets with :func:`phone_digits`.

Raw identifiers live only in memory for the time it takes to hash them: they are never logged, stored or put in
an error message.

>>> normalize_email("  Jane.Doe+promo@GoogleMail.com ")
'janedoe@googlemail.com'
>>> normalize_phone("(415) 555-0100", default_country_code="1")
'+14155550100'
>>> normalize_phone("06 12 34 56 78", default_country_code="33")
'+33612345678'
>>> sha256_hex("janedoe@googlemail.com")[:16]
'338abf9ef1c8793c'
"""

from __future__ import annotations

import hashlib
import re

_GOOGLE_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_NOT_DIGIT = re.compile(r"\D")
_SPACE = re.compile(r"\s+")


def normalize_email(value: str | None) -> str | None:
    """The canonical form of an email address, or None when it is not one (no '@', empty part)."""
    if value is None:
        return None
    text = _SPACE.sub("", value).lower()
    local, sep, domain = text.rpartition("@")
    if not sep or not local or "." not in domain:
        return None
    if domain in _GOOGLE_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        if not local:
            return None
    return f"{local}@{domain}"


def normalize_phone(value: str | None, *, default_country_code: str = "1") -> str | None:
    """E.164 (``+`` and 8 to 15 digits), or None when the number cannot be one.

    ``+44 20 7946 0000`` and ``0044 20 7946 0000`` carry their country code; a national number (``020 7946
    0000``) loses its trunk ``0`` and takes ``default_country_code``.
    """
    if value is None:
        return None
    text = value.strip()
    digits = _NOT_DIGIT.sub("", text)
    if not digits:
        return None
    if text.startswith("+"):
        full = digits
    elif digits.startswith("00"):
        full = digits[2:]
    else:
        code = default_country_code.lstrip("+")
        national = digits.lstrip("0")
        # A North American number written with its leading 1 (1 415 555 0100) already has the code.
        full = (
            national if code == "1" and len(national) == 11 and national.startswith("1") else code + national
        )
    if not 8 <= len(full) <= 15 or full.startswith("0"):
        return None
    return "+" + full


def phone_digits(e164: str) -> str:
    """E.164 without its '+', the form Meta hashes."""
    return e164.lstrip("+")


def sha256_hex(normalized: str) -> str:
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def hash_email(value: str | None) -> str | None:
    norm = normalize_email(value)
    return None if norm is None else sha256_hex(norm)


def hash_phone(value: str | None, *, default_country_code: str = "1") -> str | None:
    norm = normalize_phone(value, default_country_code=default_country_code)
    return None if norm is None else sha256_hex(norm)
