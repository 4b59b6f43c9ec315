"""The ``azure-keyvault`` secret backend: values in Azure Key Vault (spec §7.2).

A job's secret ``NAME`` is the vault secret ``job-{job_id}-secret-{name}``, with the name
lower-cased and ``_`` turned into ``-`` (Key Vault names allow only letters, digits and dashes,
and ignore case): ``DB_PASSWORD`` of job ``3f2c…`` is ``job-3f2c…-secret-db-password``. The
mapping is not reversible, and need not be: the ``job_secrets`` table keeps the real name. Two
names of a job that differ only by case would share a vault secret, so the service refuses them.

Jobplane signs in with ``DefaultAzureCredential``: a managed identity on Azure (set
``AZURE_CLIENT_ID`` for a user-assigned one), workload identity on AKS, or a service principal
from the ``AZURE_*`` variables. Every failure to reach or use the vault becomes
``SecretBackendUnavailable`` with a message that says what to check.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping
from uuid import UUID

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient

from app.secrets.base import SecretBackend, SecretBackendUnavailable, SecretUnreadable

#: Key Vault's longest secret name.
MAX_VAULT_NAME = 127
#: Key Vault's largest secret value (25 KiB; the database backend allows 32 KiB).
MAX_VAULT_VALUE_BYTES = 25 * 1024
#: An SDK message quoted in ours is cut to this length (DefaultAzureCredential's list every credential).
_MAX_QUOTED = 600


def vault_secret_name(job_id: UUID, name: str) -> str:
    """The Key Vault name of a job's secret: ``job-{job_id}-secret-{name}``, lower case, ``_`` → ``-``."""
    return f"job-{job_id}-secret-{name.lower().replace('_', '-')}"


class KeyVaultSecretBackend(SecretBackend):
    """Values in Azure Key Vault, one vault secret per job secret.

    Parameters:
      vault_url: ``https://<vault>.vault.azure.net``.
      credential: how Jobplane signs in (``DefaultAzureCredential`` unless given).
      ca_bundle: PEM file of the CAs that sign the vault's certificate (default: the system's).
      timeout: connect and read timeout of each request, in seconds.
      retries: how many times a failed request is retried before giving up.
    """

    name = "azure-keyvault"
    max_value_bytes = MAX_VAULT_VALUE_BYTES

    def __init__(self, *, vault_url: str, credential: TokenCredential | None = None,
                 ca_bundle: str | None = None, timeout: float = 10.0, retries: int = 2):
        self.vault_url = vault_url.rstrip("/")
        self._timeout = timeout
        self._client = SecretClient(
            self.vault_url, credential or DefaultAzureCredential(),
            connection_verify=ca_bundle or True, connection_timeout=timeout, read_timeout=timeout,
            retry_total=retries, retry_backoff_factor=0.5, retry_backoff_max=4)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "KeyVaultSecretBackend":
        """The backend the settings describe.

        Raises:
          SecretBackendUnavailable: ``JOBPLANE_KEYVAULT_URL`` is not an https URL.
        """
        url = (config.get("KEYVAULT_URL") or "").strip()
        if not url.startswith("https://"):
            raise SecretBackendUnavailable(
                "JOBPLANE_SECRETS_BACKEND is azure-keyvault but JOBPLANE_KEYVAULT_URL is "
                f"{'not set' if not url else repr(url)}; set it to the vault's https URL, "
                "e.g. https://myvault.vault.azure.net")
        return cls(vault_url=url, ca_bundle=config.get("KEYVAULT_CA_BUNDLE"),
                   timeout=config["KEYVAULT_TIMEOUT_SECONDS"], retries=config["KEYVAULT_RETRIES"])

    def name_problem(self, *, job_id: UUID, name: str) -> str | None:
        longest = MAX_VAULT_NAME - len(vault_secret_name(job_id, ""))
        if len(name) > longest:
            return f"must be at most {longest} characters with the azure-keyvault backend (Key Vault's limit)"
        return None

    def put(self, *, job_id: UUID, name: str, value: str) -> None:
        vault_name = vault_secret_name(job_id, name)
        with self._calling("store", name, job_id):
            try:
                self._client.set_secret(vault_name, value)
            except ResourceExistsError:
                # The name was deleted and sits in the vault's soft-delete bin: bring it back, then
                # overwrite it (purging would fail on vaults with purge protection).
                self._client.begin_recover_deleted_secret(vault_name).wait(self._timeout)
                self._client.set_secret(vault_name, value)

    def get_many(self, *, job_id: UUID, names: list[str]) -> dict[str, str]:
        values = {}
        for name in names:
            vault_name = vault_secret_name(job_id, name)
            with self._calling("read", name, job_id):
                try:
                    secret = self._client.get_secret(vault_name)
                except ResourceNotFoundError:
                    raise SecretUnreadable(
                        f"secret {name} of job {job_id} is missing from Azure Key Vault {self.vault_url} "
                        f"(vault secret {vault_name}); set it again through Jobplane") from None
            if secret.value is None:
                raise SecretUnreadable(f"Azure Key Vault {self.vault_url} returned no value for {vault_name}")
            values[name] = secret.value
        return values

    def delete(self, *, job_id: UUID, name: str) -> None:
        with self._calling("delete", name, job_id):
            try:
                poller = self._client.begin_delete_secret(vault_secret_name(job_id, name))
            except ResourceNotFoundError:
                return
            # Wait for the soft delete to finish, so that setting the name again at once works.
            poller.wait(self._timeout)

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def _calling(self, action: str, name: str, job_id: UUID) -> Iterator[None]:
        """Turn the SDK's errors into ``SecretBackendUnavailable`` saying what to check."""
        what = f"could not {action} secret {name} of job {job_id} in Azure Key Vault {self.vault_url}"
        try:
            yield
        except SecretBackendUnavailable:
            raise
        except (ServiceRequestError, ServiceResponseError) as error:
            raise SecretBackendUnavailable(
                f"{what}: the vault cannot be reached ({_quote(error)}). Check JOBPLANE_KEYVAULT_URL, "
                "the network path and firewall rules to the vault, and JOBPLANE_KEYVAULT_CA_BUNDLE if "
                "its certificate is signed by a private CA") from None
        except ClientAuthenticationError as error:
            raise SecretBackendUnavailable(
                f"{what}: Jobplane could not authenticate ({_quote(error)}). Check the managed identity "
                "(AZURE_CLIENT_ID for a user-assigned one) or the AZURE_* service principal variables, "
                "and that the vault's access policy or RBAC role grants get, set, delete and recover "
                "on secrets") from None
        except ValueError as error:
            # The SDK refuses a challenge whose resource does not match the vault's domain.
            raise SecretBackendUnavailable(
                f"{what}: {_quote(error)}. Check that JOBPLANE_KEYVAULT_URL is the vault's URL") from None
        except HttpResponseError as error:
            raise SecretBackendUnavailable(
                f"{what}: the vault answered {error.status_code} ({_quote(error)}). Check the vault's "
                "access policy or RBAC role (get, set, delete, recover on secrets) and its status") from None


def _quote(error: Exception) -> str:
    text = " ".join(str(getattr(error, "message", None) or error).split())
    return text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "…"
