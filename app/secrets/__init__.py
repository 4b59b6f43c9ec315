"""Secret backends: where the values of job secrets are kept (``JOBPLANE_SECRETS_BACKEND``).

``database`` (the default) encrypts them into the ``job_secrets`` table; ``azure-keyvault``
keeps them in Azure Key Vault. Business rules live in ``app.services.secrets``.
"""

from __future__ import annotations

import threading

from flask import Flask, current_app

from app.secrets.base import SecretBackend, SecretBackendUnavailable, SecretUnreadable

__all__ = ["SecretBackend", "SecretBackendUnavailable", "SecretUnreadable", "secret_backend"]

_EXTENSION_KEY = "jobplane_secret_backend"
_lock = threading.Lock()


def secret_backend(app: Flask | None = None) -> SecretBackend:
    """The app's secret backend, made on first use (making it opens no connection).

    Raises:
      SecretBackendUnavailable: the backend's settings are incomplete.
    """
    app = app or current_app._get_current_object()
    backend = app.extensions.get(_EXTENSION_KEY)
    if backend is None:
        with _lock:
            backend = app.extensions.get(_EXTENSION_KEY)
            if backend is None:
                backend = app.extensions[_EXTENSION_KEY] = _make(app)
    return backend


def _make(app: Flask) -> SecretBackend:
    if app.config["SECRETS_BACKEND"] == "azure-keyvault":
        from app.secrets.keyvault import KeyVaultSecretBackend  # the Azure SDK only when used

        return KeyVaultSecretBackend.from_config(app.config)
    from app.secrets.database import DatabaseSecretBackend

    return DatabaseSecretBackend.from_config(app.config)
