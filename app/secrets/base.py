"""What every secret backend offers, and the errors a run gets when its secrets cannot be had.

A backend keeps secret *values*; the ``job_secrets`` table always keeps the *names* (so listing
names never needs the backend). Backends are used only through ``app.services.secrets``.
"""

from __future__ import annotations

import abc
import re
from uuid import UUID

from app.errors import JobplaneError

#: A secret's name is an environment variable name (the run reads it); use ``fullmatch``.
SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class SecretBackendUnavailable(JobplaneError):
    """The secret backend could not give or take a value: unreachable, refused, or failing.

    A run that gets this error fails with its message (spec §7.2: no degraded mode); an API
    request gets a 503 and changes nothing. Catch this class to catch every secret failure,
    ``SecretUnreadable`` included.
    """

    status_code = 503


class SecretUnreadable(SecretBackendUnavailable):
    """The backend answered, but a secret's value cannot be had: missing from the vault, or
    encrypted with a key Jobplane no longer has. Retrying will not help; the message says what will."""

    status_code = 500


class SecretBackend(abc.ABC):
    """Keeps the values of job secrets. Methods take keyword arguments only."""

    #: the ``JOBPLANE_SECRETS_BACKEND`` value that selects this backend
    name: str
    #: the largest value, in UTF-8 bytes, this backend can store
    max_value_bytes: int

    def name_problem(self, *, job_id: UUID, name: str) -> str | None:
        """What is wrong with ``name`` for this backend beyond the common rule, or None."""
        return None

    @abc.abstractmethod
    def put(self, *, job_id: UUID, name: str, value: str) -> None:
        """Store ``value`` as the secret ``name`` of the job, replacing any earlier value.

        The ``job_secrets`` row of the secret exists (flushed) when this is called.

        Raises:
          SecretBackendUnavailable: the value could not be stored.
        """

    @abc.abstractmethod
    def get_many(self, *, job_id: UUID, names: list[str]) -> dict[str, str]:
        """The values of the job's secrets ``names``, by name.

        Raises:
          SecretBackendUnavailable: the backend cannot be reached or refused.
          SecretUnreadable: a value is missing or cannot be decrypted.
        """

    @abc.abstractmethod
    def delete(self, *, job_id: UUID, name: str) -> None:
        """Forget the value of the secret ``name`` of the job (nothing happens if there is none).

        Raises:
          SecretBackendUnavailable: the value could not be deleted.
        """
