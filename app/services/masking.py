"""Masking secret values in a run's output before it is stored, published or shown.

Each secret is searched in the forms a script is likely to print it: plain, base64 (standard and
URL-safe, with and without padding, and of the value with the newline ``echo`` adds), URL-encoded
and JSON-escaped.  Output arrives in pieces, so the writer keeps back the last few characters of
a piece until the next one arrives (``holdback``), in case a secret straddles the two.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Iterable
from urllib.parse import quote, quote_plus

#: What a masked value is replaced with.
MASK = "********"
#: Values shorter than this are not masked: masking "ab" would shred every log line.
MIN_SECRET_LENGTH = 3


def secret_forms(value: str) -> set[str]:
    """The ways ``value`` may appear in output."""
    forms = {value, quote(value, safe=""), quote_plus(value),
             json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    for raw in (value.encode(), (value + "\n").encode()):
        for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
            forms.update({encoded, encoded.rstrip("=")})
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class SecretMasker:
    """Replaces every form of the given secret values with ``MASK``."""

    def __init__(self, values: Iterable[str]):
        forms: set[str] = set()
        for value in values:
            if value and len(value) >= MIN_SECRET_LENGTH:
                forms |= secret_forms(value)
        ordered = sorted(forms, key=len, reverse=True)  # longest first: no partial masks
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        #: characters to keep back at the end of a piece (a secret may continue in the next)
        self.holdback = max((len(f) for f in ordered), default=1) - 1

    def mask(self, text: str) -> str:
        return self.pattern.sub(MASK, text) if self.pattern else text

    def split_safe(self, text: str) -> tuple[str, str]:
        """Mask ``text`` but the last ``holdback`` characters, which may begin a secret.

        Returns:
          (masked text that is safe to store, raw tail to prepend to the next piece).
        """
        if not self.pattern or self.holdback == 0:
            return self.mask(text), ""
        masked_upto = len(text) - self.holdback
        if masked_upto <= 0:
            return "", text
        # A match that starts before the cut but ends after it must be masked whole.
        result, last = [], 0
        for match in self.pattern.finditer(text):
            if match.start() >= masked_upto:
                break
            result.append(text[last:match.start()] + MASK)
            last = match.end()
        cut = max(masked_upto, last)
        result.append(text[last:cut])
        return "".join(result), text[cut:]


#: job fields whose values are credentials (webhook URLs): shown, audited and exported masked
CREDENTIAL_FIELDS = ("notification_slack_webhook", "notification_webhook_url")


def masked_url(url: object) -> object:
    """A credential URL as it may be shown: scheme, host and its last 4 characters."""
    if not isinstance(url, str) or not url:
        return url
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/****{url[-4:]}"
