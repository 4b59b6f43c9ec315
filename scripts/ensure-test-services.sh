#!/usr/bin/env bash
# Make sure the real services the tests need are here: PostgreSQL, Redis, bubblewrap, Node.js with
# the OIDC provider's packages (tests/oidc_provider, standing in for Azure AD), and Chromium.
# For each: use a running one; else start an installed one; else install it with apt (as root);
# else stop with a message that says what to do.  Writes .test-services.env for pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PGHOST="${TEST_PGHOST:-127.0.0.1}"
PGPORT="${TEST_PGPORT:-5432}"
REDIS_PORT="${TEST_REDIS_PORT:-6379}"
DB_USER=jobplane
DB_PASSWORD=jobplane
APT_UPDATED=0

say() { echo "[test services] $*" >&2; }
die() { echo "[test services] ERROR: $*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

apt_install() {
    is_root && command -v apt-get >/dev/null || die "$1 is missing and this is not a root Debian shell: install $* yourself"
    if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq; APT_UPDATED=1; fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- PostgreSQL -------------------------------------------------------------------------------
pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }
if ! command -v pg_isready >/dev/null; then apt_install postgresql postgresql-client; fi
if ! pg_up; then
    if command -v pg_ctlcluster >/dev/null && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
        version="$(ls /etc/postgresql | sort -V | tail -1)"
        say "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
            || pg_ctlcluster "$version" main start
    else
        apt_install postgresql
        version="$(ls /etc/postgresql | sort -V | tail -1)"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
            || pg_ctlcluster "$version" main start
    fi
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    pg_up || die "PostgreSQL did not start on $PGHOST:$PGPORT"
fi

# A role and database for the tests, made through whichever admin access this machine gives.
psql_admin() {
    if psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -tAc "SELECT 1" >/dev/null 2>&1 </dev/null; then
        psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -tAc "$1"
    elif is_root && command -v runuser >/dev/null; then
        runuser -u postgres -- psql -p "$PGPORT" -d postgres -v ON_ERROR_STOP=1 -tAc "$1"
    else
        die "cannot administer PostgreSQL as 'postgres' (no trust auth, not root): create role $DB_USER with password '$DB_PASSWORD', CREATEDB, yourself"
    fi
}
if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" != 1 ]; then
    psql_admin "CREATE ROLE $DB_USER LOGIN SUPERUSER PASSWORD '$DB_PASSWORD'" >/dev/null
fi
if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname = 'jobplane_test'")" != 1 ]; then
    psql_admin "CREATE DATABASE jobplane_test OWNER $DB_USER" >/dev/null
fi

# --- Redis ------------------------------------------------------------------------------------
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
if ! command -v redis-server >/dev/null; then apt_install redis-server; fi
if ! redis_up; then
    say "starting Redis on port $REDIS_PORT"
    mkdir -p /tmp/jobplane-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir /tmp/jobplane-redis --logfile /tmp/jobplane-redis/redis.log
    for _ in $(seq 1 20); do redis_up && break; sleep 0.5; done
    redis_up || die "Redis did not start on 127.0.0.1:$REDIS_PORT"
fi

# --- bubblewrap -------------------------------------------------------------------------------
if ! command -v bwrap >/dev/null; then apt_install bubblewrap; fi
bwrap --ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 /lib64 --symlink usr/bin /bin \
    --proc /proc --dev /dev --unshare-all --die-with-parent /bin/true \
    || die "bubblewrap is installed but cannot create namespaces here (user namespaces disabled?)"

# --- Node.js and the OIDC provider that stands in for Azure AD (tests/oidc_provider) -----------
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
node -e 'process.exit(typeof URL.parse === "function" ? 0 : 1)' \
    || die "Node.js $(node --version) is too old for oidc-provider: install Node.js 20.18 or newer"
provider_dir=tests/oidc_provider
if [ ! -f "$provider_dir/node_modules/.package-lock.json" ] \
    || [ "$provider_dir/package-lock.json" -nt "$provider_dir/node_modules/.package-lock.json" ]; then
    say "installing the OIDC provider's npm packages from $provider_dir/package-lock.json"
    (cd "$provider_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# --- Chromium for the browser tests (Playwright drives Debian's build; it cannot fetch its own) -
if [ ! -x /usr/bin/chromium ]; then apt_install chromium; fi

cat > .test-services.env <<ENV
export TEST_DATABASE_URL="postgresql+psycopg2://$DB_USER:$DB_PASSWORD@$PGHOST:$PGPORT/jobplane_test"
export TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/15"
ENV
say "PostgreSQL, Redis, bubblewrap, Node.js with the OIDC provider, and Chromium are ready"
