"""Which columns hold personal data (emails, phone numbers, card numbers), so they are masked, never
listed in a profile's top values, and never shown to the model as examples.

A column is flagged when at least ``PII_SHARE`` of its non-null values look like one kind (cards must also
pass the Luhn checksum); integer columns are phone numbers only with a phone-like name, since long
integers are more often ids.
"""

from __future__ import annotations

import re
from enum import StrEnum

import polars as pl

from shared.spec.models import DataType

_EMAIL = r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"
_PHONE_CHARS = r"^\+?[\d\s().-]+$"
_PHONE_NAME = re.compile(r"(?i)phone|mobile|cell|fax|(^|_)tel($|_)")
PII_SHARE = 0.8  # share of non-null values that must look like PII for the column to be flagged


class PiiKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"
    CARD_NUMBER = "card_number"


def detect_pii(name: str, text: pl.Series, inferred: DataType | None) -> PiiKind | None:
    present = text.drop_nulls()
    n = len(present)
    if not n or inferred not in (DataType.STRING, DataType.INT64):
        return None
    frame = present.to_frame("v")
    v = pl.col("v")
    digits = v.str.replace_all(r"[\s-]", "")
    digit_count = v.str.count_matches(r"\d")
    shares = frame.select(
        email=v.str.contains(_EMAIL).mean(),
        card=(digits.str.contains(r"^\d{13,19}$") & _luhn_ok(digits)).mean(),
        phone=(v.str.contains(_PHONE_CHARS) & digit_count.is_between(7, 15)).mean(),
    ).row(0, named=True)
    if (shares["email"] or 0) >= PII_SHARE:
        return PiiKind.EMAIL
    if (shares["card"] or 0) >= PII_SHARE:
        return PiiKind.CARD_NUMBER
    # Integer columns of 7+ digits are often ids; only a phone-like name makes them phone numbers.
    phone_like = (shares["phone"] or 0) >= PII_SHARE
    if phone_like and (inferred is DataType.STRING or _PHONE_NAME.search(name)):
        return PiiKind.PHONE
    return None


def _luhn_ok(digits: pl.Expr) -> pl.Expr:
    """The Luhn checksum, vectorized: every second digit from the right is doubled (minus 9 above 9)."""
    reversed_digits = digits.str.reverse()
    total = pl.lit(0)
    for position in range(19):
        d = reversed_digits.str.slice(position, 1).cast(pl.Int32, strict=False).fill_null(0)
        if position % 2:
            d = d * 2
            d = pl.when(d > 9).then(d - 9).otherwise(d)
        total = total + d
    return (total % 10) == 0
