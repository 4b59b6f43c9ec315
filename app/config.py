"""All of Jobplane's settings, read from ``JOBPLANE_*`` environment variables.

Every setting has a default and a one-line comment here; the README's settings table is
generated from the same list (``jobplane settings``).  A malformed value stops start-up with
a message naming the variable.  Tests override settings through ``create_app({...})``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable and the fix."""


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _parse_count(name: str, raw: str) -> int:
    value = _parse_int(name, raw)
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more, got {raw!r}")
    return value


def _parse_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _parse_str(name: str, raw: str) -> str:
    return raw


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
        return raw

    return parse


@dataclass(frozen=True)
class Setting:
    key: str  #: key in ``app.config`` (the variable is ``JOBPLANE_<key>``)
    default: Any  #: used when the variable is unset
    parse: Callable[[str, str], Any]
    doc: str

    @property
    def env_name(self) -> str:
        return f"JOBPLANE_{self.key}"


def _default_python() -> str:
    # A pyenv shim costs ~100 ms per spawn; prefer the real interpreter binary.
    for candidate in ("/usr/bin/python3", shutil.which("python3") or ""):
        if candidate and os.path.exists(candidate) and "shims" not in candidate:
            return candidate
    return os.path.realpath(sys.executable)


#: Every setting Jobplane reads, in the order the README documents them.
SETTINGS: tuple[Setting, ...] = (
    Setting("DATABASE_URL", None, _parse_str,
            "SQLAlchemy URL of the database, e.g. postgresql+psycopg2://user:pw@host/jobplane; "
            "standalone defaults to SQLite in JOBPLANE_DATA_DIR"),
    Setting("REDIS_URL", "redis://127.0.0.1:6379/0", _parse_str,
            "Redis for the Dramatiq queue and live log channels (unused in standalone)"),
    Setting("PORT", 8080, _parse_int, "TCP port of the web server"),
    Setting("HOST", "127.0.0.1", _parse_str, "address the web server binds to"),
    Setting("DATA_DIR", "./var", _parse_str,
            "standalone: where the SQLite database and run directories live"),
    Setting("SECRET_KEY", None, _parse_str,
            "signs sessions and encrypts stored secrets; required outside standalone"),
    Setting("BOOTSTRAP_ADMIN_TOKEN", None, _parse_str,
            "when set and no admin exists, the first start creates user 'admin' with this API token"),
    Setting("ENV", "production", _choice("production", "development", "test", "standalone"),
            "production refuses to start without JOBPLANE_SECRET_KEY"),
    Setting("LOG_LEVEL", "INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "log level"),
    Setting("WEB_WORKERS", 2, _parse_int, "gunicorn worker processes for `jobplane web`"),
    Setting("WEB_WORKER_CLASS", "gevent", _choice("gevent", "gthread"),
            "gunicorn worker class of `jobplane web`: gevent holds hundreds of live log viewers per process; "
            "gthread needs a thread per open websocket"),
    Setting("WEB_CONNECTIONS", 1000, _parse_int,
            "gevent: open connections (websockets and requests) one web worker process holds at once"),
    Setting("WEB_THREADS", 16, _parse_int, "gthread only: threads per web worker process, one per open websocket"),
    Setting("WORKER_PROCESSES", 2, _parse_int, "Dramatiq worker processes for `jobplane worker`"),
    Setting("WORKER_THREADS", 8, _parse_int,
            "Dramatiq threads per worker process: how many jobs one process runs at once (a burst's group "
            "runs get half as many threads more, of their own)"),
    Setting("WORKER_POLL_MS", 10, _parse_int,
            "longest pause of an idle Dramatiq consumer between queue polls, in ms, while its Redis doorbell "
            "is not connected (connected, a message wakes it at once, and it polls once a second as a safety "
            "net). In standalone mode (no Redis), how often the idle queue threads look for work"),
    Setting("BACKGROUND_POLL_MS", 100, _parse_int,
            "the same for the queues whose messages can wait that long: the bulk lane (bursts), its delayed "
            "messages and notifications"),
    Setting("QUEUE_NAMESPACE", "jobplane", _parse_str, "prefix of Jobplane's keys in Redis"),
    Setting("SCHEDULER_LOCK_ID", 7_402_118, _parse_int,
            "PostgreSQL advisory lock key the scheduler replicas compete for"),
    Setting("SCHEDULER_LOCK_CHECK_SECONDS", 1.0, _parse_float,
            "how often the leader checks that it still holds the lock"),
    Setting("SCHEDULER_STANDBY_POLL_SECONDS", 0.25, _parse_float,
            "how often a standby replica tries to take the lock"),
    Setting("SCHEDULER_RECONCILE_SECONDS", 60.0, _parse_float,
            "full re-sync of APScheduler's store from the jobs table, every this many seconds"),
    Setting("MISFIRE_THRESHOLD_SECONDS", 10, _parse_int,
            "a fire time found later than this (scheduler down, failover) is a misfire: the job's "
            "misfire policy decides whether it runs"),
    Setting("MISFIRE_RUN_ALL_CAP", 100, _parse_int,
            "misfire policy run_all: at most this many missed fire times are run; the rest are recorded missed"),
    Setting("STAGE_AHEAD_SECONDS", 0.6, _parse_float,
            "the leader records the fires of 'allow' jobs without max_concurrent this long before their time "
            "and a worker starts each at its time exactly (0: off); a worker thread holds a staged run from "
            "0.35 s before its time"),
    Setting("BULK_FIRE_THRESHOLD", 50, _parse_count,
            "runs sent together in a batch larger than this (a burst of jobs due at one instant) go to the "
            "bulk lane, which workers serve after the ordinary one: a burst never holds up other jobs' runs"),
    Setting("CONCURRENCY_RETRY_SECONDS", 1.0, _parse_float,
            "a run held back by its job's max_concurrent is offered to the workers again after this long"),
    Setting("RUN_GROUP_SIZE", 50, _parse_int,
            "the runs of a batch larger than JOBPLANE_BULK_FIRE_THRESHOLD travel in messages of this many "
            "executions, which one worker thread claims in one statement, supervises in one loop and records "
            "in batches (docs/execution.md)"),
    Setting("RUN_GROUP_WINDOW", 2, _parse_int,
            "a group starts its runs this many at a time: the next waits until one has exited or has run "
            "for 50 ms (a few sandboxes starting at once start faster than fifty; docs/execution.md)"),
    Setting("STORE_FAILURE_EXIT_SECONDS", 15.0, _parse_float,
            "the leader exits when its database has been unreachable this long (a standby takes over)"),
    Setting("FAULT_INJECTION", None, _parse_str,
            "tests only: '<point>:<marker file>' crashes the scheduler once at a point of the fire path"),
    Setting("SWEEP_INTERVAL_SECONDS", 5.0, _parse_float, "how often the leader's sweeper runs"),
    Setting("REQUEUE_AFTER_SECONDS", 30.0, _parse_float,
            "an execution still queued this long, its message gone from Redis, is sent again"),
    Setting("HEARTBEAT_SECONDS", 2.0, _parse_float,
            "how often a worker heartbeats a running execution (and notices a cancel)"),
    Setting("HEARTBEAT_STALE_SECONDS", 30.0, _parse_float,
            "a running execution whose heartbeat is older than this is declared lost by the sweeper"),
    Setting("SANDBOX", "auto", _choice("auto", "bubblewrap", "none"),
            "auto: bubblewrap when installed; bubblewrap: refuse to run without it; none: plain process"),
    Setting("PYTHON", None, _parse_str, "Python 3 interpreter for python jobs (a real binary, not a shim)"),
    Setting("BASH", "/bin/bash", _parse_str, "Bash for bash jobs"),
    Setting("RUN_DIR", None, _parse_str,
            "a directory on this machine for the runs' working directories (for jobs writing large files). "
            "Default: a sandboxed run's is a tmpfs of its sandbox (in memory, like its /tmp); an unsandboxed "
            "run's, or a Git script's, a directory in the system's temp dir"),
    Setting("GIT_TIMEOUT_SECONDS", 120.0, _parse_float, "longest a Git fetch of a job's script may take"),
    Setting("GIT_ALLOW_LOCAL", False, _parse_bool,
            "allow script_url to be a path or file:// URL on the worker (off: it could read any repository there)"),
    Setting("KILL_GRACE_SECONDS", 10.0, _parse_float,
            "after a timeout, SIGTERM then this long before SIGKILL of the whole process group"),
    Setting("EXECUTOR_DEFAULT", "local", _choice("local", "kubernetes"),
            "executor of jobs that do not choose one: local (a sandboxed process on the worker) or kubernetes "
            "(a Kubernetes Job per run; docs/execution.md)"),
    Setting("K8S_KUBECONFIG", None, _parse_str,
            "kubernetes executor: kubeconfig file of the cluster (unset = the in-cluster config of the "
            "worker's pod and its service account)"),
    Setting("K8S_NAMESPACE", "jobplane-jobs", _parse_str, "kubernetes executor: namespace the runs' Jobs are created in"),
    Setting("K8S_SERVICE_ACCOUNT", None, _parse_str,
            "kubernetes executor: service account of the runs' pods (unset = the namespace's default; its "
            "token is never mounted)"),
    Setting("K8S_IMAGE", "ghcr.io/jobplane/runner:latest", _parse_str,
            "kubernetes executor: container image of runs whose job names none (must have python3 and bash)"),
    Setting("K8S_GIT_IMAGE", "alpine/git:2.47.2", _parse_str,
            "kubernetes executor: image of the init container that clones a job's Git script (needs git, sh)"),
    Setting("K8S_IMAGE_PULL_SECRETS", None, _parse_str,
            "kubernetes executor: comma-separated Secret names in the namespace used to pull images"),
    Setting("K8S_NODE_SELECTOR", None, _parse_str,
            'kubernetes executor: node selector of every run\'s pod, as JSON, e.g. {"pool": "jobs"}'),
    Setting("K8S_TOLERATIONS", None, _parse_str,
            'kubernetes executor: tolerations of every run\'s pod, as a JSON list, e.g. '
            '[{"key": "jobs", "operator": "Exists", "effect": "NoSchedule"}]'),
    Setting("K8S_TTL_SECONDS", 3600, _parse_int,
            "kubernetes executor: a finished Job (and its pod, ConfigMap, Secret) is deleted by Kubernetes this "
            "long after it ends (ttlSecondsAfterFinished)"),
    Setting("K8S_PENDING_TIMEOUT_SECONDS", 300.0, _parse_float,
            "kubernetes executor: a pod still unschedulable (or unable to start its container) this long "
            "fails the run, and its Job is deleted"),
    Setting("K8S_WATCH_SECONDS", 5.0, _parse_float,
            "kubernetes executor: length of each pod watch request (the watch is renewed from its last "
            "resourceVersion)"),
    Setting("K8S_REATTACH_LIMIT", 3, _parse_int,
            "kubernetes executor: a run whose worker died is handed to another worker (which follows its pod) "
            "at most this many times; then it is declared lost"),
    Setting("LOG_CAP_BYTES", 50 * 1024 * 1024, _parse_int,
            "largest stored log per execution; the rest is replaced by a truncation marker"),
    Setting("LOG_FLUSH_SECONDS", 0.2, _parse_float, "how often buffered output is appended to the log"),
    Setting("MAX_BODY_BYTES", 1024 * 1024, _parse_int, "largest accepted request body"),
    Setting("BASE_URL", None, _parse_str,
            "public URL of Jobplane, e.g. https://jobs.example.com: the sign-in redirect URI, links, "
            "allowed websocket origins and secure cookies follow it (default: the request's own host)"),
    Setting("BEHIND_PROXY", False, _parse_bool,
            "trust one reverse proxy's X-Forwarded-For/-Proto/-Host (client IP in the audit log, HTTPS)"),
    Setting("OIDC_ISSUER", None, _parse_str,
            "single sign-on: the OIDC issuer URL, e.g. https://login.microsoftonline.com/<tenant>/v2.0; "
            "unset = sign-in with an API token"),
    Setting("OIDC_CLIENT_ID", None, _parse_str, "single sign-on: the client (application) id"),
    Setting("OIDC_CLIENT_SECRET", None, _parse_str, "single sign-on: the client secret"),
    Setting("OIDC_SCOPES", "openid profile email", _parse_str, "single sign-on: scopes asked for at sign-in"),
    Setting("OIDC_API_AUDIENCE", None, _parse_str,
            "the `aud` that OIDC access tokens sent to the API must carry (default: the client id)"),
    Setting("OIDC_DEFAULT_ROLE", "team_viewer", _choice("admin", "job_creator", "team_viewer"),
            "role of a user created at their first single sign-on"),
    Setting("OIDC_JWKS_CACHE_SECONDS", 3600, _parse_int,
            "how long the issuer's signing keys are cached (an unknown key id refetches them sooner)"),
    Setting("OIDC_LEEWAY_SECONDS", 30, _parse_int, "clock skew allowed when checking a token's exp and nbf"),
    Setting("SESSION_LIFETIME_MINUTES", 60, _parse_int,
            "a web session ends this long after sign-in (spec: 60 minutes)"),
    Setting("LOGIN_RATE_LIMIT", "10 per minute", _parse_str,
            "sign-in attempts allowed per client address (Flask-Limiter syntax)"),
    Setting("API_RATE_LIMIT", "100 per minute", _parse_str,
            "API requests allowed per user, all routes together (spec: 100 per minute; Flask-Limiter syntax, "
            "e.g. '1000 per hour'); a request with no valid token counts against its client address"),
    Setting("AUDIT_RETENTION_DAYS", 90, _parse_int,
            "audit rows older than this are pruned by the scheduler leader (the chain stays verifiable)"),
    Setting("RETENTION_DAYS", 90, _parse_int,
            "finished executions older than this, with their logs and notifications, are deleted hourly by "
            "the scheduler leader and by `jobplane purge` (spec: 90 days)"),
    Setting("RETENTION_BATCH_SIZE", 500, _parse_int,
            "executions the leader's purge deletes per transaction: small, so no batch holds its locks long"),
    Setting("IDEMPOTENCY_TTL_HOURS", 24, _parse_int,
            "an Idempotency-Key is remembered this long after its request (then pruned by the scheduler "
            "leader)"),
    Setting("SMTP_HOST", None, _parse_str, "notifications: SMTP relay host (unset = no email notifications)"),
    Setting("SMTP_PORT", 587, _parse_int, "notifications: SMTP port"),
    Setting("SMTP_USERNAME", None, _parse_str, "notifications: SMTP user name (unset = no authentication)"),
    Setting("SMTP_PASSWORD", None, _parse_str, "notifications: SMTP password"),
    Setting("SMTP_STARTTLS", True, _parse_bool, "notifications: upgrade the SMTP connection with STARTTLS"),
    Setting("SMTP_FROM", "jobplane@localhost", _parse_str, "notifications: the From address of emails"),
    Setting("SMTP_TIMEOUT_SECONDS", 10.0, _parse_float, "notifications: connect and send timeout of SMTP"),
    Setting("NOTIFY_THREADS", 4, _parse_int,
            "notifications: threads of each worker's own notification process (never busy with job runs)"),
    Setting("NOTIFY_ATTEMPTS", 3, _parse_int,
            "notifications: attempts of a Slack or webhook delivery before it fails over to email (spec: 3)"),
    Setting("NOTIFY_RETRY_SECONDS", 120.0, _parse_float,
            "notifications: delay between delivery attempts (spec: 2 minutes)"),
    Setting("NOTIFY_EMAIL_KEEP_HOURS", 24.0, _parse_float,
            "notifications: an email whose relay is down is retried this long before it fails (spec: 24 h)"),
    Setting("NOTIFY_BREAKER_FAILURES", 5, _parse_int,
            "notifications: consecutive failures of a channel that open its circuit breaker"),
    Setting("NOTIFY_BREAKER_SECONDS", 60.0, _parse_float,
            "notifications: how long an open breaker holds deliveries of its channel back"),
    Setting("WEBHOOK_ALLOW_HTTP", False, _parse_bool, "notifications: accept http:// webhook URLs (https only by default)"),
    Setting("WEBHOOK_ALLOWED_HOSTS", None, _parse_str,
            "notifications: comma-separated hosts webhooks may call (unset = any public host)"),
    Setting("WEBHOOK_ALLOW_PRIVATE", False, _parse_bool,
            "notifications: allow webhooks to loopback, private, link-local and metadata addresses"),
    Setting("SECRETS_BACKEND", "database", _choice("database", "azure-keyvault"),
            "where job secret values are kept: database (encrypted with JOBPLANE_SECRET_KEY) or "
            "azure-keyvault (docs/secrets.md)"),
    Setting("SECRET_KEY_PREVIOUS", None, _parse_str,
            "comma-separated former JOBPLANE_SECRET_KEY values that still decrypt stored secrets, "
            "while rotating keys"),
    Setting("KEYVAULT_URL", None, _parse_str,
            "azure-keyvault: the vault's URL, e.g. https://myvault.vault.azure.net"),
    Setting("KEYVAULT_CA_BUNDLE", None, _parse_str,
            "azure-keyvault: PEM file of the CAs trusted for the vault's TLS certificate "
            "(default: the system's; for a TLS-inspecting proxy or a test vault)"),
    Setting("KEYVAULT_TIMEOUT_SECONDS", 10.0, _parse_float,
            "azure-keyvault: connect and read timeout of each request to the vault"),
    Setting("KEYVAULT_RETRIES", 2, _parse_int,
            "azure-keyvault: retries of a failed request to the vault before a run fails"),
    Setting("LOG_FORMAT", None, _choice("json", "text"),
            "json: one JSON object per log line, with request_id, job_id and execution_id (default for web, "
            "scheduler and worker); text: for people (default for standalone)"),
    Setting("METRICS_HOST", "127.0.0.1", _parse_str,
            "address the scheduler's and worker's /metrics, /health and /ready bind to (0.0.0.0 in Kubernetes)"),
    Setting("SCHEDULER_METRICS_PORT", 9101, _parse_int,
            "port of the scheduler's /metrics, /health and /ready (0: none); docs/operations.md"),
    Setting("WORKER_METRICS_PORT", 9102, _parse_int,
            "port of the worker's /metrics, /health and /ready (0: none); docs/operations.md"),
    Setting("METRICS_DIR", None, _parse_str,
            "where the processes of `jobplane web` and `jobplane worker` share their metrics (a subdirectory "
            "per kind, emptied at start; default: a new temporary directory)"),
    Setting("READY_TIMEOUT_SECONDS", 2.0, _parse_float,
            "/ready: how long each check (database, Redis) may take before it counts as down"),
    Setting("SENTRY_DSN", None, _parse_str,
            "send unhandled errors to Sentry at this DSN (unset = off); secrets and personal data are scrubbed"),
)

_BY_KEY = {s.key: s for s in SETTINGS}


def load_settings(environ: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read every setting from the environment, then apply ``overrides``.

    Parameters:
      environ: the variables to read (default ``os.environ``).
      overrides: values by key (``"DATABASE_URL"``), already typed, e.g. from tests.

    Raises:
      ConfigError: an unknown ``JOBPLANE_*`` variable or key, or a malformed value.
    """
    environ = os.environ if environ is None else environ
    known = {s.env_name for s in SETTINGS}
    unknown = sorted(k for k in environ if k.startswith("JOBPLANE_") and k not in known)
    if unknown:
        raise ConfigError(
            f"unknown setting {', '.join(unknown)}; the settings are listed in the README "
            "(check the spelling)")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env_name)
        values[setting.key] = setting.default if raw is None else setting.parse(setting.env_name, raw)
    for key, value in (overrides or {}).items():
        if key not in _BY_KEY and not key.isupper():
            raise ConfigError(f"unknown setting override {key!r}")
        values[key] = value
    return _finish(values)


def _finish(values: dict[str, Any]) -> dict[str, Any]:
    data_dir = Path(values["DATA_DIR"]).expanduser().resolve()
    values["DATA_DIR"] = str(data_dir)
    if values["ENV"] == "standalone" and not values["DATABASE_URL"]:
        values["DATABASE_URL"] = f"sqlite:///{data_dir / 'jobplane.db'}"
    if not values["DATABASE_URL"]:
        raise ConfigError("JOBPLANE_DATABASE_URL is not set; set it to your database, e.g. "
                          "postgresql+psycopg2://jobplane:secret@127.0.0.1:5432/jobplane "
                          "(or run `jobplane standalone`, which uses SQLite)")
    if values["DATABASE_URL"].startswith("postgresql://"):
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed.
        values["DATABASE_URL"] = "postgresql+psycopg2://" + values["DATABASE_URL"][len("postgresql://"):]
    if not values["SECRET_KEY"]:
        if values["ENV"] == "production":
            raise ConfigError("JOBPLANE_SECRET_KEY is not set; set it to a long random string, e.g. "
                              "the output of `python3 -c 'import secrets; print(secrets.token_hex(32))'`")
        values["SECRET_KEY"] = _standalone_secret(data_dir) if values["ENV"] == "standalone" \
            else secrets.token_hex(32)
    if values.get("SECRETS_BACKEND") == "azure-keyvault" and not values.get("KEYVAULT_URL"):
        raise ConfigError("JOBPLANE_SECRETS_BACKEND is azure-keyvault but JOBPLANE_KEYVAULT_URL is not set; set "
                          "it to your vault, e.g. https://myvault.vault.azure.net")
    for key in ("LOGIN_RATE_LIMIT", "API_RATE_LIMIT"):
        _check_rate_limit(key, values.get(key))
    _check_oidc(values)
    if not values["PYTHON"]:
        values["PYTHON"] = _default_python()
    if values["RETENTION_BATCH_SIZE"] > 100_000:
        raise ConfigError(f"JOBPLANE_RETENTION_BATCH_SIZE must be at most 100000, got {values['RETENTION_BATCH_SIZE']}")
    for key in ("PORT", "WORKER_THREADS", "WORKER_PROCESSES", "WEB_WORKERS", "WEB_THREADS", "WEB_CONNECTIONS",
                "SESSION_LIFETIME_MINUTES", "AUDIT_RETENTION_DAYS", "RETENTION_DAYS", "RETENTION_BATCH_SIZE",
                "IDEMPOTENCY_TTL_HOURS", "RUN_GROUP_SIZE", "RUN_GROUP_WINDOW", "WORKER_POLL_MS", "BACKGROUND_POLL_MS",
                "NOTIFY_ATTEMPTS", "NOTIFY_BREAKER_FAILURES", "NOTIFY_THREADS"):
        if values[key] < 1:
            raise ConfigError(f"JOBPLANE_{key} must be at least 1, got {values[key]}")
    for key in ("SCHEDULER_METRICS_PORT", "WORKER_METRICS_PORT"):
        if not 0 <= values[key] <= 65535:
            raise ConfigError(f"JOBPLANE_{key} must be a TCP port (1-65535), or 0 for none; got {values[key]}")
    if values["READY_TIMEOUT_SECONDS"] <= 0:
        raise ConfigError(f"JOBPLANE_READY_TIMEOUT_SECONDS must be more than 0, got {values['READY_TIMEOUT_SECONDS']}")
    _check_kubernetes(values)
    values["SQLALCHEMY_IS_SQLITE"] = values["DATABASE_URL"].startswith("sqlite")
    return values


def _check_rate_limit(key: str, value: Any) -> None:
    """A malformed limit stops start-up here, not at the first request it would have limited."""
    from limits import parse_many

    try:
        parse_many(value)
    except (ValueError, TypeError):
        raise ConfigError(f"JOBPLANE_{key} must be a rate limit such as '100 per minute' or '10/second', "
                          f"got {value!r}") from None


def _check_oidc(values: dict[str, Any]) -> None:
    """Single sign-on needs its issuer, client id and secret together; the base URL must be a URL."""
    given = [k for k in ("OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET") if values.get(k)]
    if given and len(given) < 3:
        missing = sorted({"OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET"} - set(given))
        raise ConfigError(f"single sign-on needs {', '.join('JOBPLANE_' + k for k in missing)} as well as "
                          f"{', '.join('JOBPLANE_' + k for k in given)}; set all three, or none")
    for key in ("OIDC_ISSUER", "BASE_URL"):
        if values.get(key) and not values[key].startswith(("https://", "http://")):
            raise ConfigError(f"JOBPLANE_{key} must be an http(s) URL, got {values[key]!r}")
    if values.get("BASE_URL"):
        values["BASE_URL"] = values["BASE_URL"].rstrip("/")
    values["OIDC_ENABLED"] = len(given) == 3
    if not values.get("OIDC_API_AUDIENCE"):
        values["OIDC_API_AUDIENCE"] = values.get("OIDC_CLIENT_ID")


def _check_kubernetes(values: dict[str, Any]) -> None:
    """The executor's node selector and tolerations are JSON: parsed here, so a typo stops start-up."""
    shapes = {"K8S_NODE_SELECTOR": (dict, "an object of label: value, e.g. {\"pool\": \"jobs\"}"),
              "K8S_TOLERATIONS": (list, "a list of tolerations, e.g. [{\"key\": \"jobs\", \"operator\": \"Exists\"}]")}
    for key, (kind, example) in shapes.items():
        raw = values.get(key)
        if raw is None or not isinstance(raw, str):
            continue  # unset, or already parsed (a test override)
        try:
            parsed = json.loads(raw) if raw.strip() else kind()
        except ValueError:
            parsed = None
        if not isinstance(parsed, kind):
            raise ConfigError(f"JOBPLANE_{key} must be JSON: {example}; got {raw!r}")
        values[key] = parsed
    raw = values.get("K8S_IMAGE_PULL_SECRETS")
    if isinstance(raw, str):
        values["K8S_IMAGE_PULL_SECRETS"] = [name.strip() for name in raw.split(",") if name.strip()]
    for key in ("K8S_TTL_SECONDS", "K8S_REATTACH_LIMIT"):
        if values[key] < 0:
            raise ConfigError(f"JOBPLANE_{key} must be 0 or more, got {values[key]}")
    for key in ("K8S_PENDING_TIMEOUT_SECONDS", "K8S_WATCH_SECONDS"):
        if values[key] <= 0:
            raise ConfigError(f"JOBPLANE_{key} must be more than 0, got {values[key]}")


def _standalone_secret(data_dir: Path) -> str:
    """Keep one generated key per data directory so sessions and secrets survive restarts."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_hex(32))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


def settings_table() -> str:
    """The settings as a Markdown table, for the README."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = "" if s.default is None else f"`{s.default}`"
        lines.append(f"| `{s.env_name}` | {default} | {s.doc} |")
    return "\n".join(lines)
