"""Who is acting: the identity and request facts every audited change records."""

from __future__ import annotations

from dataclasses import dataclass

from app.models import User


@dataclass(frozen=True)
class Actor:
    """The user behind a change, and where the change came from."""

    user: User | None
    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.role == "admin"


#: Jobplane acting on its own (bootstrap, scheduler): audited with no user.
SYSTEM = Actor(user=None, user_agent="jobplane")
