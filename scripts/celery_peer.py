"""The bench_dispatch workload through Celery 5 with Redis, for comparison.

N no-op jobs are queued as fast as the producer can send them while two
prefork worker processes (acks_late) run them and store each result in the
Redis result backend (as sqlarena's graders report an outcome that the
coordinator records). A private redis-server on a free loopback port, with
an append-only file written before each reply (`appendfsync everysec`, the
counterpart of SQLite's WAL with synchronous=NORMAL: what was acknowledged
survives a crash of the process), is started and stopped here.

    .venv/bin/python scripts/celery_peer.py [--jobs 20000]

Prints throughput and CPU per job: redis-server, the worker (main process
and its children) and this producer, read from /proc before and after.
Used by `scripts/bench.sh peers`.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from celery import Celery

REDIS_URL = os.environ.get("CELERY_PEER_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("celery_peer", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_acks_late=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop(attempt_id):
    """A no-op job: returns an empty outcome, which the backend stores."""
    return {"attempt_id": attempt_id, "cases": [], "error": None}


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU of one process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid):
    """Direct children of a process."""
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as file:
        return [int(child) for child in file.read().split()]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"celery_peer: timed out waiting for {what}")
        time.sleep(0.01)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=500)
    options = parser.parse_args()

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        sys.exit("celery_peer: redis-server is missing (apt-get install redis-server)")
    workdir = tempfile.mkdtemp(prefix="sqlarena-celery-")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir,
         "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
         "--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )
    worker = None
    try:
        app.conf.broker_url = url
        # The producer sends and forgets, as sqlarena's enqueue does: with
        # the Redis backend, each send would subscribe to its result.
        app.conf.result_backend = "disabled://"
        client = app.broker_connection().default_channel.client

        def redis_up():
            try:
                return client.ping()
            except Exception:
                return False

        wait_for(redis_up, "redis-server")
        env = dict(os.environ, CELERY_PEER_REDIS_URL=url)
        worker_log = open(os.path.join(workdir, "worker.log"), "w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_peer", "worker",
             "--pool", "prefork", "--concurrency", "2", "--loglevel", "warning",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=worker_log,
        )
        wait_for(lambda: app.control.ping(timeout=0.2), "the celery worker", timeout=60)
        wait_for(lambda: len(children(worker.pid)) >= 2, "two prefork children")

        def drained():
            return client.llen("celery") == 0 and client.hlen("unacked") == 0

        # Warm up: the children import and connect on their first tasks.
        for index in range(options.warmup):
            noop.delay(-index - 1)
        wait_for(drained, "the warm-up jobs", timeout=120)

        processes = [redis.pid, worker.pid] + children(worker.pid)
        cpu_before = sum(cpu_seconds(pid) for pid in processes)
        own_before = os.times()
        started = time.monotonic()
        for index in range(options.jobs):
            last = noop.delay(index).id
        wait_for(drained, "the jobs", timeout=3600)
        elapsed = time.monotonic() - started
        own_after = os.times()
        cpu = sum(cpu_seconds(pid) for pid in processes) - cpu_before
        cpu += (own_after.user - own_before.user) + (own_after.system - own_before.system)

        stored = sum(1 for _ in client.scan_iter("celery-task-meta-*", count=10_000))
        if stored < options.jobs + options.warmup:
            sys.exit(f"celery_peer: only {stored} results stored for {options.jobs} jobs")
        if b'"attempt_id": %d' % (options.jobs - 1) not in client.get(f"celery-task-meta-{last}"):
            sys.exit("celery_peer: the last job's result is wrong")
        print(
            f"celery throughput: {options.jobs} jobs in {elapsed:.2f} s = "
            f"{options.jobs / elapsed:.0f} jobs/s; CPU {cpu * 1e6 / options.jobs:.1f} us/job "
            "(redis-server + 2 prefork workers + producer)"
        )
    finally:
        for process in (worker, redis):
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if sys.exc_info()[0] is not None and os.path.exists(os.path.join(workdir, "worker.log")):
            with open(os.path.join(workdir, "worker.log")) as log:
                sys.stderr.write(log.read()[-4000:])
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
