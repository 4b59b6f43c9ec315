"""Masking secret values in every form a script may print them."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from app.services.masking import MASK, SecretMasker

SECRET = "s3cr3t/p@ss w0rd+\"quoted\""


@pytest.mark.parametrize("form", [
    SECRET,
    base64.b64encode(SECRET.encode()).decode(),
    base64.b64encode((SECRET + "\n").encode()).decode(),      # echo "$SECRET" | base64
    base64.urlsafe_b64encode(SECRET.encode()).decode().rstrip("="),
    quote(SECRET, safe=""),
    json.dumps(SECRET)[1:-1],
])
def test_every_form_of_a_secret_is_masked(form):
    masked = SecretMasker([SECRET]).mask(f"before {form} after")
    assert masked == f"before {MASK} after"


def test_a_secret_split_across_pieces_is_still_masked():
    masker = SecretMasker(["hunter2-longer-secret"])
    pieces = ["user=admin password=hunter2-lon", "ger-secret done\n"]
    stored, carry = [], ""
    for piece in pieces:
        safe, carry = masker.split_safe(carry + piece)
        stored.append(safe)
    stored.append(masker.mask(carry))
    text = "".join(stored)
    assert "hunter2" not in text and text == f"user=admin password={MASK} done\n"


def test_tiny_values_are_not_masked_so_logs_stay_readable():
    assert SecretMasker(["ab"]).mask("tab grab") == "tab grab"


def test_without_secrets_nothing_changes():
    masker = SecretMasker([])
    assert masker.mask("plain") == "plain" and masker.split_safe("plain") == ("plain", "")
