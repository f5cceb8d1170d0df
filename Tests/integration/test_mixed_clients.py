"""Two redis-py clients, RESP2 and RESP3, running a mixed workload through
the proxy at the same time (issue 4)."""

from __future__ import annotations

import threading
import uuid


def workload(proxy, protocol: int, errors: list) -> None:
    try:
        r = proxy.client(protocol=protocol)
        t = uuid.uuid4().hex[:8]
        keys = [f"mix:{t}:{i}" for i in range(40)]
        for round_ in range(5):
            assert r.mset({k: f"{round_}-{k}" for k in keys}) is True
            assert r.mget(keys) == [f"{round_}-{k}".encode() for k in keys]
            assert r.exists(*keys) == len(keys)
            with r.pipeline(transaction=False) as p:
                for k in keys[:10]:
                    p.incr(k + ":n")
                assert p.execute() == [round_ + 1] * 10
            with r.pipeline(transaction=True) as p:
                p.hset(f"{{{t}}}h", "f", round_).hget(f"{{{t}}}h", "f")
                assert p.execute()[-1] == str(round_).encode()
            r.rpush(f"{{{t}}}q", "job")
            assert tuple(r.blpop([f"{{{t}}}q"], timeout=1)) == (f"{{{t}}}q".encode(), b"job")
            assert r.blpop([f"{{{t}}}q"], timeout=0.05) is None
            assert set(r.scan_iter(match=f"mix:{t}:1*", count=100)) >= {k.encode() for k in keys if k.startswith(f"mix:{t}:1")}
            assert r.sunion(keys[0] + ":s", keys[1] + ":s") == set()
            ps = r.pubsub()
            ps.subscribe(f"mix:{t}:ch")
            assert ps.get_message(timeout=5)["type"] == "subscribe"
            r.publish(f"mix:{t}:ch", "hi")
            msg = None
            for _ in range(50):
                msg = ps.get_message(timeout=0.1, ignore_subscribe_messages=True)
                if msg:
                    break
            assert msg and msg["data"] == b"hi"
            ps.close()
        assert r.delete(*keys) == len(keys)
    except Exception as e:  # reported by the main thread
        errors.append(f"protocol {protocol}: {e!r}")


def test_resp2_and_resp3_clients_side_by_side(proxy):
    errors: list = []
    threads = [threading.Thread(target=workload, args=(proxy, protocol, errors)) for protocol in (2, 3, 2, 3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a client hung"
    assert not errors, errors
