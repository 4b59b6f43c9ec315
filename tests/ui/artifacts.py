"""Screenshots of the UI's pages, kept as test artifacts in ``test-artifacts/`` at the repository
root (git-ignored), so a reviewer can look at what the browser tests saw."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def screenshot(page, name: str) -> Path:
    """Save the whole page as ``test-artifacts/<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
