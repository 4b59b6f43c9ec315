"""The small HTTP server of the scheduler and the worker: ``/metrics``, ``/health`` and ``/ready``
on ``JOBPLANE_METRICS_HOST`` and ``JOBPLANE_SCHEDULER_METRICS_PORT`` / ``JOBPLANE_WORKER_METRICS_PORT``,
for Prometheus and Kubernetes probes (docs/operations.md)."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST

from app.observability.collector import exposition
from app.observability.health import readiness

logger = logging.getLogger(__name__)


class ProbeServer:
    """Serves the probes on a daemon thread.

    Parameters:
      config: the settings (the database and Redis that ``/ready`` checks).
      port: the TCP port.
      details: what ``/health`` adds to ``{"status": "ok"}`` (e.g. whether the scheduler leads).
    """

    def __init__(self, config: Mapping[str, Any], port: int,
                 details: Callable[[], dict[str, Any]] = dict):
        self.config = config
        self.extensions: dict = {}
        self.details = details
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                status, content_type, body = server.answer(self.path.split("?", 1)[0])
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):  # probes every few seconds would drown the log
                pass

        self.httpd = ThreadingHTTPServer((config["METRICS_HOST"], port), Handler)
        self.httpd.daemon_threads = True

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, exposition()
        if path == "/health":
            return 200, "application/json", json.dumps({"status": "ok", **self.details()}).encode()
        if path == "/ready":
            ready, checks = readiness(self.extensions, self.config)
            body = {"status": "ready" if ready else "unready", "checks": checks}
            return (200 if ready else 503), "application/json", json.dumps(body).encode()
        return 404, "application/json", json.dumps({"message": "try /metrics, /health or /ready"}).encode()

    def start(self) -> "ProbeServer":
        threading.Thread(target=self.httpd.serve_forever, name="jobplane-probes", daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_probe_server(config: Mapping[str, Any], port: int,
                       details: Callable[[], dict[str, Any]] = dict) -> ProbeServer | None:
    """Start the probe server on ``port`` (0: none). A port already taken is logged, not fatal:
    a scheduler must keep firing even if its metrics cannot be served."""
    if not port:
        return None
    try:
        server = ProbeServer(config, port, details).start()
    except OSError as exc:
        logger.error("could not serve /metrics, /health and /ready on %s:%d: %s; set another port",
                     config["METRICS_HOST"], port, exc)
        return None
    logger.info("serving /metrics, /health and /ready on %s:%d", config["METRICS_HOST"], server.port)
    return server
