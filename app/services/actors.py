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
    #: who acted when there is no user: ``cli:<login>``, or the email a failed sign-in gave
    label: str | None = None
    #: Jobplane itself (bootstrap, scheduler, the admin CLI on the server): may do anything
    system: bool = False

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.role == "admin"


#: Jobplane acting on its own (bootstrap, scheduler): audited with no user.
SYSTEM = Actor(user=None, user_agent="jobplane", system=True)


def cli_actor() -> Actor:
    """The admin CLI, run on the server by someone with its configuration: audited by login name."""
    import getpass

    return Actor(user=None, user_agent="jobplane-cli", label=f"cli:{getpass.getuser()}", system=True)
