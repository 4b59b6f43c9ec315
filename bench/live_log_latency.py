"""Live log latency: a line printed by a running job -> received by websocket viewers of
``jobplane web`` (gevent), for one viewer and for 500 viewers on one web process.

Issue 7: "(a) a line printed by a running job -> received by a websocket viewer, p50/p99 over
>= 200 lines (goal p99 <= 100 ms) -- timestamp inside the line, real worker + real `jobplane
web`; (b) 500 concurrent viewers on ONE web process (gevent): the RSS of the web process, and
fan-out latency p50/p99 of a line to all 500".

What it measures
    Bash jobs print ``L <n> <$EPOCHREALTIME>`` lines: the timestamp is taken inside the job, when
    the line is printed.  A viewer notes the time each line arrives over its websocket
    (``/ws/executions/<id>/log``); the latency is the difference (one machine, one clock).  The
    path measured: the job's pipe -> the worker's read loop -> the log append (a transaction) ->
    Redis PUBLISH -> the web process's one shared subscriber -> each viewer's queue -> its socket.

    (b) first: a run is queued with no worker yet; ``--viewers`` (500) viewers connect to it from
    a separate client process (gevent, so the client is not the bottleneck); then the worker
    starts and the run prints ``--fanout-lines`` lines every 0.5 s.  Reported: per line, the time
    until ALL viewers had it (p50/p99 over lines), and every single delivery (p50/p99); the RSS of
    the gunicorn worker process idle and with every viewer connected; the pub/sub connections the
    web process holds in Redis (CLIENT LIST); how long connecting took; and ``GET /api/v1/jobs``
    latency while every viewer is connected.  (a) then: one viewer, ``--lines`` (200) lines every
    ``--interval`` s (0.25 s by default: above the worker's 0.2 s log flush interval, so each line
    is its own flush; closer lines are batched and wait up to JOBPLANE_LOG_FLUSH_SECONDS).

    ``--no-psycogreen`` runs the web worker without psycogreen's wait callback (gunicorn started
    directly with the same arguments but no config file), to see what the patch is worth.

How it runs
    On the bench database ``jobplane_bench`` (reset and migrated) and Redis database 14 under a
    unique namespace: one ``jobplane web`` (WEB_WORKERS=1, gevent) and, once the viewers are
    connected, one ``jobplane worker`` (1 process x 4 threads, SANDBOX=bubblewrap).  Every process
    is stopped at the end (SIGTERM, then SIGKILL of its process group), also on errors and Ctrl-C.

Running it (from the repository root; services from scripts/ensure-test-services.sh)
    . ./.test-services.env && .venv/bin/python bench/live_log_latency.py
    # options: --viewers N (500)  --fanout-lines N (40)  --lines N (200)  --interval S (0.25)
    #          --no-psycogreen  --wait-db S (900)  --json
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--viewers-client" in sys.argv:  # the client process: patch before anything
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import redis  # noqa: E402
import requests  # noqa: E402
from simple_websocket import Client  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import ADMIN_HEADERS, ADMIN_TOKEN, log  # noqa: E402

FINAL = ("success", "failed", "timed_out", "cancelled", "lost")
LINE = re.compile(r"^L (\d+) (\d+\.\d+)$", re.MULTILINE)


def script(lines: int, interval: float, first_sleep: float) -> str:
    return (f"sleep {first_sleep}\nfor i in $(seq 1 {lines}); do echo \"L $i $EPOCHREALTIME\"; "
            f"sleep {interval}; done\n")


# --- viewers ----------------------------------------------------------------------------------

def follow(ws) -> list[tuple[int, float]]:
    """(line number, latency ms) of every line until the run's final status."""
    got = []
    while True:
        event = json.loads(ws.receive(timeout=120))
        now = time.time()
        if event["type"] == "status" and event["status"] in FINAL:
            return got
        if event["type"] == "log":
            got.extend((int(n), (now - float(ts)) * 1000) for n, ts in LINE.findall(event["data"]))


def viewers_client(argv: list[str]) -> int:
    """The client process of (b): connect N viewers (greenlets), say so, follow, print JSON."""
    import gevent
    from gevent.pool import Pool

    url, origin, cookie, count = argv[0], argv[1], argv[2], int(argv[3])
    started = time.monotonic()
    sockets = Pool(50).map(lambda _: Client.connect(url, headers={"Origin": origin, "Cookie": cookie}), range(count))
    print(f"CONNECTED {len(sockets)} {time.monotonic() - started:.2f}", flush=True)
    jobs = gevent.joinall([gevent.spawn(follow, ws) for ws in sockets])
    errors = sorted({repr(job.exception) for job in jobs if job.exception is not None})
    print(json.dumps({"viewers": [job.value for job in jobs if job.exception is None],
                      "failed": len([job for job in jobs if job.exception is not None]), "errors": errors}),
          flush=True)
    return 0


# --- the bench --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_web(env, processes, port: int, psycogreen: bool):
    base = f"http://127.0.0.1:{port}"
    extra = {"PORT": port, "WEB_WORKERS": 1, "BASE_URL": base}
    if psycogreen:
        web, path = processes.start("web", **extra)
    else:  # what `jobplane web` runs, without the config file that installs psycogreen
        web, path = processes.start_argv(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class",
             "gevent", "--worker-connections", "1000", "--no-control-socket", "wsgi:create_web_app()"],
            log_name="web-no-psycogreen", env=common.process_env({**env.settings, **extra}))
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or web.poll() is not None:
            raise RuntimeError("jobplane web did not answer:\n" + path.read_text(errors="replace")[-3000:])
        time.sleep(0.2)
    children = [int(p) for p in Path(f"/proc/{web.pid}/task/{web.pid}/children").read_text().split()]
    return base, children[0]


def sign_in(base: str) -> str:
    with requests.Session() as browser:
        page = browser.get(f"{base}/login", timeout=10)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        browser.post(f"{base}/login/token", data={"token": ADMIN_TOKEN, "csrf_token": csrf}, timeout=10)
        return f"jobplane_session={browser.cookies['jobplane_session']}"


def queue_run(base: str, name: str, body: str) -> str:
    job = requests.post(f"{base}/api/v1/jobs", headers=ADMIN_HEADERS, timeout=10,
                        json={"name": name, "job_type": "bash", "script": body, "timeout_seconds": 600})
    job.raise_for_status()
    run = requests.post(f"{base}/api/v1/jobs/{job.json()['id']}/run", headers=ADMIN_HEADERS, timeout=10)
    run.raise_for_status()
    return run.json()["id"]


def hub_connections(redis_url: str, web_pid: int) -> int:
    """The web worker's pub/sub connections, by the name its live log hub gives them."""
    return len([c for c in redis.Redis.from_url(redis_url).client_list()
                if c.get("name") == f"jobplane-live-hub-{web_pid}"])


def fanout(env, processes, base: str, web_pid: int, cookie: str, args) -> dict:
    execution_id = queue_run(base, "fanout", script(args.fanout_lines, 0.5, 1))
    idle_kb = rss_kb(web_pid)
    ws_url = base.replace("http", "ws", 1) + f"/ws/executions/{execution_id}/log"
    client = subprocess.Popen([sys.executable, __file__, "--viewers-client", ws_url, base, cookie, str(args.viewers)],
                              stdout=subprocess.PIPE, text=True)
    try:
        first = client.stdout.readline().split()
        if not first or first[0] != "CONNECTED":
            raise RuntimeError("the viewers' client failed to connect them; see its error above")
        log(f"{first[1]} viewers connected in {first[2]} s")
        connected_kb = rss_kb(web_pid)
        subscribers = hub_connections(env.redis_url, web_pid)
        api_ms = []
        for _ in range(20):
            started = time.perf_counter()
            requests.get(f"{base}/api/v1/jobs", headers=ADMIN_HEADERS, timeout=10).raise_for_status()
            api_ms.append((time.perf_counter() - started) * 1000)
        web_cpu, client_cpu = cpu_seconds(web_pid), cpu_seconds(client.pid)
        common.start_worker(processes, worker_processes=1, worker_threads=4)
        outcome = json.loads(client.stdout.readline())
        web_cpu, client_cpu = cpu_seconds(web_pid) - web_cpu, cpu_seconds(client.pid) - client_cpu
        viewers = outcome["viewers"]
        client.wait(timeout=60)
    finally:
        if client.poll() is None:
            client.kill()
    per_line: dict[int, list[float]] = {}
    for got in viewers:
        for number, ms in got:
            per_line.setdefault(number, []).append(ms)
    complete = [n for n, values in per_line.items() if len(values) == len(viewers)]
    return {"viewers": len(viewers), "viewers_failed": outcome["failed"], "viewer_errors": outcome["errors"],
            "connect_seconds": float(first[2]), "lines": args.fanout_lines,
            "lines_reaching_every_viewer": len(complete),
            "to_all_viewers": common.summary([max(per_line[n]) for n in complete]),
            "every_delivery": common.summary([ms for got in viewers for _, ms in got]),
            "web_worker_rss_mb": {"idle": round(idle_kb / 1024, 1), "viewers_connected": round(connected_kb / 1024, 1),
                                  "after": round(rss_kb(web_pid) / 1024, 1)},
            "redis_pubsub_connections_of_web": subscribers,
            # CPU the web worker and the viewers' client used while the run printed: what a line's
            # fan-out costs, whatever share of the cores other programs left them
            "cpu_ms_per_line": {"web_worker": round(web_cpu * 1000 / args.fanout_lines, 1),
                                "viewers_client": round(client_cpu * 1000 / args.fanout_lines, 1)},
            "api_jobs_while_connected": common.summary(api_ms)}


def single_viewer(base: str, cookie: str, args) -> dict:
    execution_id = queue_run(base, "single", script(args.lines, args.interval, 2))
    ws = Client.connect(base.replace("http", "ws", 1) + f"/ws/executions/{execution_id}/log",
                        headers={"Origin": base, "Cookie": cookie})
    got = follow(ws)
    return {"lines": args.lines, "received": len(got), "interval_s": args.interval,
            "latency": common.summary([ms for _, ms in got])}


def main(argv: list[str] | None = None) -> int:
    parser = common.argument_parser(__doc__)
    parser.add_argument("--viewers", type=int, default=500)
    parser.add_argument("--fanout-lines", type=int, default=40)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--no-psycogreen", action="store_true")
    common.add_wait_db_option(parser)
    common.add_json_option(parser)
    args = parser.parse_args(argv)
    loadavg_at_start = common.loadavg()
    env = common.JobplaneBench(name="livelog")
    processes = None
    try:
        env.reset(wait_db=args.wait_db)
        busy = common.busy_cores()
        processes = env.processes()
        base, web_pid = start_web(env, processes, free_port(), psycogreen=not args.no_psycogreen)
        cookie = sign_in(base)
        log(f"(b) {args.viewers} viewers of one run on one web process")
        fan = fanout(env, processes, base, web_pid, cookie, args)
        log(f"(a) one viewer, {args.lines} lines")
        single = single_viewer(base, cookie, args)
    except Exception:
        if processes is not None:  # the logs go with the work directory: show their ends first
            log("failed; the ends of the processes' logs:\n" + processes.tails())
        raise
    finally:
        if processes is not None:
            processes.stop_all()
        env.close()
    result = {**common.result_head("live_log_latency", "a line printed by a job ($EPOCHREALTIME) -> received "
                                                       "by websocket viewers of jobplane web"),
              "psycogreen": not args.no_psycogreen, "busy_cores_before": busy, "single_viewer": single, "fanout": fan,
              **common.result_tail(loadavg_at_start)}
    common.print_result(result, as_json=args.json, report=report)
    complete = fan["viewers_failed"] == 0 and fan["lines_reaching_every_viewer"] == args.fanout_lines
    return 0 if single["received"] == args.lines and complete else 1


def report(result: dict) -> None:
    common.print_report_head("Live log latency (jobplane web, gevent)", result, width=10)
    single, fan = result["single_viewer"], result["fanout"]
    print(f"  psycogreen {result['psycogreen']}   busy cores just before the start {result['busy_cores_before']}")
    print(f"(a) one viewer: {single['received']}/{single['lines']} lines, one every {single['interval_s']} s")
    print(f"  print -> received   {common.fmt_summary(single['latency'])}")
    common.print_goal("p99 <= 100 ms", single["latency"].get("p99_ms", 1e9) <= 100)
    print(f"(b) {fan['viewers']} viewers on one web process, {fan['lines']} lines "
          f"({fan['lines_reaching_every_viewer']} reached every viewer); viewers failed: {fan['viewers_failed']} "
          f"{' '.join(fan['viewer_errors'])}")
    print(f"  print -> all viewers {common.fmt_summary(fan['to_all_viewers'])}")
    print(f"  every delivery       {common.fmt_summary(fan['every_delivery'])}")
    rss = fan["web_worker_rss_mb"]
    print(f"  web worker RSS       idle {rss['idle']} MB, {fan['viewers']} viewers {rss['viewers_connected']} MB, "
          f"after {rss['after']} MB")
    print(f"  Redis pub/sub connections of the web process: {fan['redis_pubsub_connections_of_web']}")
    print(f"  CPU per line, while the run printed: web worker {fan['cpu_ms_per_line']['web_worker']} ms, "
          f"viewers' client {fan['cpu_ms_per_line']['viewers_client']} ms")
    print(f"  connecting every viewer took {fan['connect_seconds']} s")
    print(f"  GET /api/v1/jobs while connected {common.fmt_summary(fan['api_jobs_while_connected'])}")
    common.print_code(result)


if __name__ == "__main__":
    if "--viewers-client" in sys.argv:
        sys.exit(viewers_client(sys.argv[sys.argv.index("--viewers-client") + 1:]))
    common.run_main(main)
