"""Protocol peers that stand for Azure in the tests: a Key Vault and a managed-identity endpoint.

``FakeKeyVault`` is an HTTPS server (stdlib ``http.server`` + ``ssl``, with a certificate made
here by ``cryptography``) answering the Key Vault REST calls that azure-keyvault-secrets makes:
the 401 bearer challenge first, then set, get, delete, get-deleted and recover. It stands for
Azure Key Vault.

``FakeManagedIdentity`` is a plain-HTTP server answering the App Service managed-identity token
call (``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``): with those variables set, the production
``DefaultAzureCredential`` signs in through it, as it would on Azure.

About the challenge: Azure answers ``resource="https://vault.azure.net"`` for a vault at
``https://<name>.vault.azure.net``, and the SDK accepts a resource only if its host is a parent
domain of the vault's. For a vault at ``127.0.0.1:<port>`` the fake names ``0.0.1:<port>``,
which passes that same check, so the SDK runs unmodified (``verify_challenge_resource`` stays on).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TENANT_ID = "72f988bf-0000-4000-8000-000000000001"


@dataclass
class TlsFiles:
    ca: Path  #: the CA certificate to trust (``JOBPLANE_KEYVAULT_CA_BUNDLE``)
    cert: Path  #: the server's certificate, for 127.0.0.1 and localhost
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA and a server certificate it signs, as PEM files in ``directory``."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Jobplane test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


@dataclass
class Seen:
    """One request as a peer received it (never with a body: bodies hold values)."""

    method: str
    path: str
    query: dict
    headers: dict


class _Server:
    """A threaded HTTP(S) server on 127.0.0.1 with a random port, run in a daemon thread."""

    def __init__(self, handler_class, tls: TlsFiles | None = None):
        self.requests: list[Seen] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self.httpd.daemon_threads = True
        self.httpd.peer = self  # the handler reaches its peer through its server
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *_args):  # quiet: pytest shows failures, not access logs
        pass

    @property
    def peer(self):
        return self.server.peer

    def _record(self) -> tuple[str, dict]:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.peer.requests.append(Seen(self.command, parts.path, query, dict(self.headers)))
        return parts.path, query

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: dict | None = None, headers: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeManagedIdentity(_Server):
    """The App Service managed-identity endpoint: ``GET /msi/token?api-version=2019-08-01&resource=…``."""

    def __init__(self):
        self.header_secret = secrets.token_hex(8)
        self.token = "mi-token-" + secrets.token_hex(8)
        super().__init__(_IdentityHandler)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/msi/token"


class _IdentityHandler(_Handler):
    def do_GET(self):
        path, query = self._record()
        if path != "/msi/token" or self.headers.get("X-IDENTITY-HEADER") != self.peer.header_secret:
            self._send(400, {"statusCode": 400, "message": "bad managed identity request"})
            return
        if query.get("api-version") != "2019-08-01" or not query.get("resource"):
            self._send(400, {"statusCode": 400, "message": "api-version and resource are required"})
            return
        self._send(200, {"access_token": self.peer.token, "expires_on": str(int(time.time()) + 3600),
                         "resource": query["resource"], "token_type": "Bearer"})


@dataclass
class _Secret:
    versions: list[tuple[str, str]] = field(default_factory=list)  #: (version, value), latest last
    created: int = field(default_factory=lambda: int(time.time()))


class FakeKeyVault(_Server):
    """Azure Key Vault's secrets REST API, as far as Jobplane uses it.

    Parameters:
      tls: the server's certificate.
      accepted_token: the bearer token it accepts (the managed identity's).
    """

    def __init__(self, tls: TlsFiles, accepted_token: str):
        self.accepted_token = accepted_token
        self.secrets: dict[str, _Secret] = {}
        self.deleted: dict[str, _Secret] = {}
        self.lock = threading.Lock()
        super().__init__(_VaultHandler, tls=tls)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def challenge(self) -> str:
        return (f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", '
                f'resource="https://0.0.1:{self.port}"')

    def value(self, name: str) -> str | None:
        """The latest value of the vault secret ``name`` (not a deleted one)."""
        with self.lock:
            secret = self.secrets.get(name)
            return secret.versions[-1][1] if secret else None


_SECRET = re.compile(r"^/secrets/(?P<name>[0-9A-Za-z-]{1,127})(?:/(?P<version>[0-9a-f]*))?$")
_DELETED = re.compile(r"^/deletedsecrets/(?P<name>[0-9A-Za-z-]{1,127})(?P<recover>/recover)?$")


class _VaultHandler(_Handler):
    def do_GET(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def _handle(self):
        path, query = self._record()
        body = self._body()
        vault: FakeKeyVault = self.peer
        if self.headers.get("Authorization") != f"Bearer {vault.accepted_token}":
            self._send(401, {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a "
                                       "Bearer or PoP token."}}, {"WWW-Authenticate": vault.challenge})
            return
        if not query.get("api-version"):
            self._send(400, {"error": {"code": "BadParameter", "message": "api-version is required"}})
            return
        secret_match, deleted_match = _SECRET.match(path), _DELETED.match(path)
        with vault.lock:
            if secret_match and self.command == "PUT":
                self._set(vault, secret_match["name"], json.loads(body))
            elif secret_match and self.command == "GET":
                self._get(vault, secret_match["name"], secret_match["version"] or None)
            elif secret_match and self.command == "DELETE":
                self._delete(vault, secret_match["name"])
            elif deleted_match and self.command == "GET" and not deleted_match["recover"]:
                self._get_deleted(vault, deleted_match["name"])
            elif deleted_match and self.command == "POST" and deleted_match["recover"]:
                self._recover(vault, deleted_match["name"])
            else:
                self._send(404, {"error": {"code": "NotFound", "message": f"no route {self.command} {path}"}})

    def _set(self, vault: FakeKeyVault, name: str, payload: dict) -> None:
        key = name.lower()  # Key Vault names ignore case
        if key in vault.deleted:
            self._send(409, {"error": {
                "code": "Conflict",
                "message": f"Secret {name} is currently in a deleted but recoverable state, and its name cannot "
                           "be reused; in this state, the secret can only be recovered or purged.",
                "innererror": {"code": "ObjectIsDeletedButRecoverable"}}})
            return
        secret = vault.secrets.setdefault(key, _Secret())
        secret.versions.append((secrets.token_hex(16), payload["value"]))
        self._send(200, self._bundle(vault, key, secret))

    def _get(self, vault: FakeKeyVault, name: str, version: str | None) -> None:
        secret = vault.secrets.get(name.lower())
        found = secret and (version is None or any(v == version for v, _ in secret.versions))
        if not found:
            self._send(404, {"error": {"code": "SecretNotFound", "message": f"A secret with (name/id) {name} "
                                       "was not found in this key vault."}})
            return
        self._send(200, self._bundle(vault, name.lower(), secret, version))

    def _delete(self, vault: FakeKeyVault, name: str) -> None:
        secret = vault.secrets.pop(name.lower(), None)
        if secret is None:
            self._send(404, {"error": {"code": "SecretNotFound", "message": f"A secret with (name/id) {name} "
                                       "was not found in this key vault."}})
            return
        vault.deleted[name.lower()] = secret
        self._send(200, self._deleted_bundle(vault, name.lower(), secret))

    def _get_deleted(self, vault: FakeKeyVault, name: str) -> None:
        secret = vault.deleted.get(name.lower())
        if secret is None:
            self._send(404, {"error": {"code": "SecretNotFound", "message": f"Deleted Secret not found: {name}"}})
            return
        self._send(200, self._deleted_bundle(vault, name.lower(), secret))

    def _recover(self, vault: FakeKeyVault, name: str) -> None:
        secret = vault.deleted.pop(name.lower(), None)
        if secret is None:
            self._send(404, {"error": {"code": "SecretNotFound", "message": f"Deleted Secret not found: {name}"}})
            return
        vault.secrets[name.lower()] = secret
        self._send(200, self._bundle(vault, name.lower(), secret, with_value=False))

    @staticmethod
    def _bundle(vault: FakeKeyVault, name: str, secret: _Secret, version: str | None = None,
                with_value: bool = True) -> dict:
        version, value = next((v for v in secret.versions if v[0] == version), secret.versions[-1])
        bundle = {"id": f"{vault.url}/secrets/{name}/{version}",
                  "attributes": {"enabled": True, "created": secret.created, "updated": int(time.time()),
                                 "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}}
        if with_value:
            bundle["value"] = value
        return bundle

    def _deleted_bundle(self, vault: FakeKeyVault, name: str, secret: _Secret) -> dict:
        now = int(time.time())
        return {**self._bundle(vault, name, secret), "recoveryId": f"{vault.url}/deletedsecrets/{name}",
                "deletedDate": now, "scheduledPurgeDate": now + 90 * 86400}
