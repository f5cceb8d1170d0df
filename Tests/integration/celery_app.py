"""The Celery app of the Celery tests. Its worker imports this module by
name and finds the proxy's URL in `SLOTPROXY_CELERY_URL`; the test itself
calls `make_app`.

kombu's Redis transport runs Lua scripts over several of its keys, which a
cluster (and so the proxy) refuses across slots: a hash tag as the global
key prefix puts all of Celery's keys in one slot, as the README advises."""

from __future__ import annotations

import os

from celery import Celery

PREFIX = "{celery}:"


def make_app(url: str) -> Celery:
    app = Celery("slotproxy_test", broker=url, backend=url)
    app.conf.update(
        broker_transport_options={"global_keyprefix": PREFIX},
        result_backend_transport_options={"global_keyprefix": PREFIX},
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        result_expires=600,
    )

    @app.task(name="celery_app.add")
    def add(a: int, b: int) -> int:
        return a + b

    return app


app = make_app(os.environ["SLOTPROXY_CELERY_URL"]) if "SLOTPROXY_CELERY_URL" in os.environ else None
