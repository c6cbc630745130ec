"""Kubernetes-shaped scalar types for the spec: object names and resource quantities.

Each type is an ``Annotated`` alias that validates in Python and carries the matching OpenAPI
constraints, so the CRD generated from the models refuses the same values as the CLI does.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# A positive Kubernetes quantity: a decimal number and an optional binary/decimal suffix or
# exponent. The sign is left out on purpose: negative CPU or memory is never meaningful here.
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]+))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_BINARY_SUFFIXES = ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_SUFFIX_FACTORS: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{suffix: Decimal(1024) ** (i + 1) for i, suffix in enumerate(_BINARY_SUFFIXES)},
}


def parse_quantity(text: str) -> Decimal:
    """The value of a Kubernetes quantity string ("500m" -> 0.5, "4Gi" -> 4294967296)."""
    match = _QUANTITY_RE.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a Kubernetes quantity: a number with an optional suffix "
            "(m, k, M, G, T, Ki, Mi, Gi, Ti, ... or an exponent), e.g. 500m, 2, 4Gi"
        )
    number, suffix = match.group(1), match.group(5) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * _SUFFIX_FACTORS[suffix]
    except InvalidOperation as err:  # pragma: no cover - the pattern admits only numbers
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from err


QUANTITY_MAX_LENGTH = 64


def _quantity_from_number(value: Any) -> Any:
    # The CRD types a quantity as int-or-string, as the core API does: `cpu: 2` is an int, and a
    # whole float (`2.0`) reaches the API server as 2. A fraction must be written as a string.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        raise ValueError(f'write {value!r} as a string ("{value!r}" or in m: "500m")')
    return value


def _positive_quantity(text: str) -> str:
    if len(text) > QUANTITY_MAX_LENGTH:
        raise ValueError(f"at most {QUANTITY_MAX_LENGTH} characters")
    if parse_quantity(text) <= 0:
        raise ValueError(f"{text!r} must be greater than zero")
    return text


# The API server's copy of _positive_quantity (the pattern alone admits "0", and an integer
# is not matched against a pattern at all).
_POSITIVE_QUANTITY_RULE = {
    "rule": "type(self) == string ? isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))"
    " : self > 0",
    "message": "must be a quantity greater than zero",
}

Quantity = Annotated[
    str,
    BeforeValidator(_quantity_from_number),
    AfterValidator(_positive_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": QUANTITY_MAX_LENGTH,
            "x-kubernetes-validations": [_POSITIVE_QUANTITY_RULE],
        }
    ),
]
"""A positive Kubernetes quantity such as ``500m``, ``2`` or ``4Gi`` (whole numbers accepted)."""


def _name_checker(pattern: str, max_length: int, what: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(text: str) -> str:
        if len(text) > max_length or compiled.match(text) is None:
            raise ValueError(
                f"{text!r} is not a valid {what}: lowercase letters, digits and '-'"
                + (" (and '.' between parts)" if "." in pattern else "")
                + f", starting and ending with a letter or digit, at most {max_length} characters"
            )
        return text

    return AfterValidator(check)


DNSLabel = Annotated[
    str,
    _name_checker(DNS1123_LABEL_PATTERN, 63, "DNS-1123 label"),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": 63, "pattern": DNS1123_LABEL_PATTERN}
    ),
]
"""A DNS-1123 label: lowercase letters, digits and '-', at most 63 characters."""

DNSSubdomain = Annotated[
    str,
    _name_checker(DNS1123_SUBDOMAIN_PATTERN, 253, "DNS-1123 subdomain"),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": 253, "pattern": DNS1123_SUBDOMAIN_PATTERN}
    ),
]
"""A DNS-1123 subdomain: labels joined by '.', at most 253 characters (most object names)."""

LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
"""A Kubernetes label value: empty, or alphanumerics with '-', '_', '.', at most 63 characters."""
