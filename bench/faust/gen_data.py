"""Write the contract's test data (bench/BASELINES.md, "Data") with aiokafka, for trying the
Faust baseline by hand (the suite writes its own). Run with the baseline's virtualenv:

    ~/.cache/rill/faust-venv/bin/python bench/faust/gen_data.py \
        --bootstrap 127.0.0.1:19592 --events 100000 --partitions 8 [--keys 100000]

Creates bench-views and bench-clicks (P partitions, retention.ms=-1) if missing, then appends
the events. retention.ms=-1 because the data's timestamps start at 2025-11-24 and a broker's
default retention (7 days, judged by record timestamps) deletes older data within
log.retention.check.interval.ms (5 min) once the clock is past 2025-12-01.
"""

import argparse
import asyncio
import json
import sys
import time

START_MS = 1_764_000_000_000


def view(i, keys):
    url = f"/health/{i % 100}" if i % 10 == 9 else f"/p/{i % keys}"
    return {"user_id": f"u{i % 1000}", "url": url, "view_time": (START_MS + i) / 1000.0}


async def main(a):
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=a.bootstrap)
    await admin.start()
    for t in ("bench-views", "bench-clicks"):
        try:
            await admin.create_topics(
                [NewTopic(t, a.partitions, 1, topic_configs={"retention.ms": "-1"})]
            )
        except TopicAlreadyExistsError:
            pass
    await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=a.bootstrap,
        linger_ms=5,
        compression_type="lz4",
        acks="all",
        enable_idempotence=True,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    t0 = time.time()
    try:
        for i in range(a.events):
            v = view(i, a.keys)
            key = v["url"].encode()
            ts = START_MS + i
            await producer.send("bench-views", json.dumps(v).encode(), key=key, timestamp_ms=ts)
            if i % 2 == 0:
                c = {"user_id": v["user_id"], "url": v["url"], "click_time": v["view_time"] + 2.0}
                await producer.send(
                    "bench-clicks", json.dumps(c).encode(), key=key, timestamp_ms=ts + 2000
                )
            if i and i % 50_000 == 0:
                print(f"{i} views ({i / (time.time() - t0):.0f}/s)", file=sys.stderr)
        await producer.flush()
    finally:
        await producer.stop()
    print(f"wrote {a.events} views in {time.time() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--keys", type=int, default=100_000)
    asyncio.run(main(p.parse_args()))
