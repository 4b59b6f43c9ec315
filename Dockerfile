# The Jobplane image: one image, four entry points (`jobplane web`, `scheduler`, `worker`,
# `db upgrade`); k8s/ picks the command per Deployment or Job. docs/kubernetes.md builds it.
#
# The source tree is installed in place (pip -e) rather than as a wheel: the Alembic scripts
# (migrations/) and the UI's templates and static files are found next to the `app` package.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    JOBPLANE_HOST=0.0.0.0 \
    JOBPLANE_METRICS_HOST=0.0.0.0

# git: jobs whose script comes from a Git URL are fetched by the worker.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 jobplane \
    && useradd --system --uid 10001 --gid jobplane --home-dir /home/jobplane --create-home \
       --shell /usr/sbin/nologin jobplane

WORKDIR /opt/jobplane
COPY setup.cfg pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
COPY wsgi.py worker.py scheduler.py ./
RUN python -m venv /opt/venv \
    && pip install --no-compile -e . \
    && python -m compileall -q app migrations wsgi.py worker.py scheduler.py

USER 10001:10001
EXPOSE 8080 9101 9102
ENTRYPOINT ["jobplane"]
CMD ["web"]
