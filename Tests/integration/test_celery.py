"""Celery, a client that knows nothing of Redis Cluster, through the proxy:
kombu's Redis transport as the broker (`LPUSH`, `BRPOP` over a queue's
priority lists, transactions, Lua scripts, `PUBLISH` for remote control)
and Celery's Redis result backend (`SET`, `GET`, a subscription per task).
A real worker process runs the tasks."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from harness import is_status

HERE = Path(__file__).resolve().parent


@pytest.fixture
def celery_worker(tmp_path):
    """`start(proxy, queue)` runs a Celery worker (solo pool) on `queue`
    through `proxy`; stopped by pid after the test. Returns its log path."""
    workers: list[subprocess.Popen] = []

    def start(proxy, queue: str) -> Path:
        log = tmp_path / f"celery-{queue}.log"
        env = dict(os.environ, SLOTPROXY_CELERY_URL=f"redis://127.0.0.1:{proxy.port}/0")
        with open(log, "wb") as out:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--pool=solo", "-Q", queue,
                 "-n", f"{queue}@%h", "-l", "info"],
                cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT))
        return log

    yield start
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)


def _app(proxy):
    import celery_app  # celery is installed by scripts/install-deps: missing is a failure, not a skip

    return celery_app.make_app(f"redis://127.0.0.1:{proxy.port}/0")


def _let_go(app, results: list) -> None:
    """Drops the results while the proxy still runs (the backend would
    unsubscribe from their channels later, from finalizers), then closes the
    app's connections."""
    for result in results:
        app.backend.remove_pending_result(result)
    results.clear()
    gc.collect()
    app.close()


def test_celery_runs_tasks_through_the_proxy(proxy, celery_worker):
    """The default (refuse) mode: with Celery's keys under one hash tag,
    every command it sends stays in one slot."""
    app = _app(proxy)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    log = celery_worker(proxy, queue)
    results = [app.send_task("celery_app.add", (i, 1000), queue=queue) for i in range(100)]
    try:
        assert [r.get(timeout=60) for r in results] == [i + 1000 for i in range(100)]
        # A group's results, read together.
        from celery.result import GroupResult

        # (Values, not results, in the assertions: pytest keeps what an
        # assertion names until the test returns, after the proxy is gone.)
        joined = GroupResult(str(uuid.uuid4()), results[:10], app=app).join(timeout=30)
        assert joined == [i + 1000 for i in range(10)]
        text = log.read_text()
        assert "Traceback" not in text and "ERROR" not in text, text[-4000:]
    finally:
        _let_go(app, results)


def test_celery_tasks_survive_a_planned_failover(cluster, proxy_factory, celery_worker):
    """Tasks are sent while CLUSTER FAILOVER moves Celery's slot to the
    replica: the worker's BRPOP is unblocked by the demoted master (retried
    by the proxy on the new one), and every task runs and reports its
    result, with no error on either side."""
    from cluster import key_hash_slot

    proxy = proxy_factory("--topology-refresh-ms", "200")
    app = _app(proxy)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    log = celery_worker(proxy, queue)
    master = cluster.node_for_slot(key_hash_slot("{celery}"))
    replica = cluster.replica_of(master)[0]
    results: list = []
    errors: list = []

    def produce():
        try:
            for i in range(200):
                results.append(app.send_task("celery_app.add", (i, 1000), queue=queue))
                time.sleep(0.02)
        except Exception as error:  # (the assertion below shows it)
            errors.append(error)

    first = app.send_task("celery_app.add", (1, 1), queue=queue).get(timeout=60)
    assert first == 2  # (the worker is up)
    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(1.0)
    assert is_status(cluster.call(replica, "CLUSTER", "FAILOVER"))
    try:
        producer.join(60)
        assert errors == []
        assert replica in cluster.masters
        assert [r.get(timeout=60) for r in results] == [i + 1000 for i in range(200)]
        text = log.read_text()
        assert "Traceback" not in text and "ERROR" not in text, text[-4000:]
    finally:
        producer.join(60)
        _let_go(app, results)
        if master not in cluster.masters:
            cluster.call(master, "CLUSTER", "FAILOVER")
        cluster.wait_healthy(timeout=60)
