"""Masking personal identifiers for people who may see a customer's scores but not who the customer is.

A masked value keeps enough to tell two values apart at a glance and nothing to recover them: the first
character and the last two of an id, an email's first character and its top-level domain, a phone number's last
two digits.

>>> mask("c123456")
'c••••56'
>>> mask("jane.doe@example.com")
'j•••@•••.com'
>>> mask("+44 20 7946 0000")
'•••00'
>>> mask("ab")
'••'
"""

from __future__ import annotations

import re

DOT = "•"
_PHONE = re.compile(r"^\+?[\d\s().-]{6,}$")


def mask(value: object) -> str:
    """``value`` (as text) with its identifying middle replaced by dots (see the module docstring)."""
    text = str(value)
    if "@" in text:
        local, _, domain = text.rpartition("@")
        tld = domain.rsplit(".", 1)[-1] if "." in domain else ""
        return f"{local[:1]}{DOT * 3}@{DOT * 3}" + (f".{tld}" if tld else "")
    if _PHONE.match(text):
        digits = re.sub(r"\D", "", text)
        return DOT * 3 + digits[-2:]
    if len(text) <= 4:
        return DOT * len(text)
    return text[0] + DOT * min(len(text) - 3, 8) + text[-2:]
