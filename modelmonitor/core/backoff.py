"""Durations and the retry backoff of Knative delivery specs: the one backoff model of the project.

The local broker's Trigger retries, the aggregator's redelivery horizon and the restart delays of
supervised function processes (`modelmonitor run`) all use `backoff_delay`.
"""
from __future__ import annotations

import re

_NUM = r"(\d+(?:[.,]\d+)?)"
_DURATION_RE = re.compile(
    rf"^P(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?"
    rf"(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?$")


def parse_duration(text: str) -> float:
    """Seconds in an ISO-8601 duration as Knative delivery specs write them.

    Weeks, days, hours, minutes and (fractional) seconds are accepted; years and months are
    refused because they have no fixed length.

    >>> parse_duration("PT0.2S"), parse_duration("PT1M30S"), parse_duration("P1DT1H")
    (0.2, 90.0, 90000.0)
    >>> parse_duration("0.2s")
    Traceback (most recent call last):
    ...
    ValueError: '0.2s' is not an ISO-8601 duration (e.g. PT0.2S, PT10S, PT1M)
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an ISO-8601 duration string (e.g. PT0.2S)")
    match = _DURATION_RE.match(text.strip().upper())
    if not match or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise ValueError(f"{text!r} is not an ISO-8601 duration (e.g. PT0.2S, PT10S, PT1M)")
    years, months, weeks, days, hours, minutes, seconds = (
        float(g.replace(",", ".")) if g else 0.0 for g in match.groups())
    if years or months:
        raise ValueError(f"{text!r}: years and months have no fixed length; use days (P30D)")
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def backoff_delay(policy: str, delay: float, attempt: int, maximum: float | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry), as Knative:
    linear `delay * attempt`, exponential `delay * 2**attempt`, capped by `maximum` (the
    `backoffMax` field) when given.

    >>> [backoff_delay("linear", 0.25, n) for n in (1, 2, 3)]
    [0.25, 0.5, 0.75]
    >>> [backoff_delay("exponential", 0.25, n) for n in (1, 2, 3)]
    [0.5, 1.0, 2.0]
    >>> backoff_delay("exponential", 1.0, 10, maximum=60.0)
    60.0
    """
    if attempt < 1:
        raise ValueError(f"retry attempts are numbered from 1, got {attempt}")
    if policy == "linear":
        wait = delay * attempt
    elif policy == "exponential":
        wait = delay * (2 ** attempt)
    else:
        raise ValueError(f"backoffPolicy must be 'linear' or 'exponential', got {policy!r}")
    return min(wait, maximum) if maximum is not None else wait



def total_backoff(policy: str, delay: float, retries: int, maximum: float | None = None) -> float:
    """Seconds a failing delivery spends waiting in all its retries (the sum of every wait).

    >>> total_backoff("linear", 1.0, 3), total_backoff("exponential", 0.2, 5)
    (6.0, 12.4)
    """
    return round(sum(backoff_delay(policy, delay, n, maximum) for n in range(1, retries + 1)), 9)
