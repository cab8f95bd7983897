"""The Faust baseline of the benchmark suite (see bench/BASELINES.md).

Started by bench/faust/run.sh (which owns the virtualenv) with the contract's command line:

    bench_app.py --scenario NAME --bootstrap HOST:PORT --events N --partitions P \
                 --prefix PREFIX [--state-dir DIR] [--threads T] [--rate R]

Scenarios, in Faust's idiom (`@app.agent(topic)`, `app.Table`, `.tumbling(60)`):

- stateless        decode PageView, drop /health URLs, send to <prefix>-out keyed by URL
- keyed-count      app.Table(default=int): counts[url] += 1 (store: rocksdb, changelog topic)
- tumbling-count   app.Table(...).tumbling(60, expires=...).relative_to_field(view_time);
                   each closed window is sent to <prefix>-out from on_window_close
- eos-keyed-count  keyed-count with processing_guarantee="exactly_once"
- join             Faust's joins raise NotImplementedError: prints {"unsupported": ...}

`--threads` is ignored: a Faust worker is one process with one event loop.
`--rate` needs no handling: the program consumes records as they come.

The result (one JSON line) goes to stdout; progress and Faust's logs go to stderr.
"""

import argparse
import json
import os
import signal
import sys
import time

SYSTEM = "faust"
VIEWS = "bench-views"
CLICKS = "bench-clicks"
SCENARIOS = ("stateless", "keyed-count", "tumbling-count", "eos-keyed-count", "join")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenario", required=True, choices=SCENARIOS)
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--prefix", required=True)
    p.add_argument("--state-dir", default=None)
    p.add_argument("--threads", type=int, default=1, help="ignored (one process, one event loop)")
    p.add_argument("--rate", type=float, default=None, help="ignored (records are consumed as they come)")
    p.add_argument("--keys", type=int, default=None, help="ignored (the data says how many)")
    # Not part of the contract; for experiments by hand.
    p.add_argument(
        "--store",
        default=os.environ.get("RILL_FAUST_STORE", "rocksdb://"),
        help="table store URL: rocksdb:// (default) or memory://",
    )
    p.add_argument(
        "--window-close",
        choices=("event-time", "wall-clock"),
        default="event-time",
        help="event-time (default): a window closes when the stream time of its partition "
        "(max view_time seen) reaches its end; wall-clock: Faust's stock expiry",
    )
    p.add_argument(
        "--cleanup-interval",
        type=float,
        default=1.0,
        help="table_cleanup_interval: how often closed windows are looked for (s)",
    )
    return p.parse_args(argv)


ARGS = parse_args(sys.argv[1:])

if ARGS.scenario == "join":
    # faust/streams.py: Stream.join/left_join/... and faust/joins.py: every Join.process
    # raise NotImplementedError.
    print(
        json.dumps(
            {
                "scenario": "join",
                "system": SYSTEM,
                "unsupported": "Faust has no stream-stream joins "
                "(Stream.join and faust.joins raise NotImplementedError)",
            }
        ),
        flush=True,
    )
    sys.exit(0)

import asyncio  # noqa: E402
import logging  # noqa: E402
from heapq import heappop  # noqa: E402

import faust  # noqa: E402
from faust.streams import current_event  # noqa: E402
from faust.transport.drivers import aiokafka as faust_aiokafka  # noqa: E402

# ------------------------------------------------------------------ client settings --
# The contract's producer settings: linger 5 ms, lz4, acks=all (Faust settings below) and
# idempotence on. Faust's aiokafka producer enables idempotence only inside transactions
# (exactly_once); turn it on for every producer.
_settings_extra = faust_aiokafka.Producer._settings_extra


def _idempotent_settings_extra(self):
    return {**_settings_extra(self), "acks": "all", "enable_idempotence": True}


faust_aiokafka.Producer._settings_extra = _idempotent_settings_extra

# ----------------------------------------------------------------------- the store --
STORE = ARGS.store
if STORE.startswith("rocksdb"):
    try:
        import rocksdb  # noqa: F401  (faust-streaming-rocksdb)
    except ImportError:
        try:
            import rocksdict  # noqa: F401
        except ImportError:
            print("bench_app: no rocksdb binding, falling back to memory://", file=sys.stderr)
            STORE = "memory://"

STATE_DIR = ARGS.state_dir or os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"rill-faust-{ARGS.prefix}"
)
os.makedirs(STATE_DIR, exist_ok=True)

OUT = f"{ARGS.prefix}-out"
N = ARGS.events
P = ARGS.partitions


# ------------------------------------------------------------------------ counters --
class Progress:
    processed = 0
    first = None  # wall time of the first record handed to the agent
    last = None  # wall time of the N-th
    stopping = False
    sent = 0  # records sent to <prefix>-out
    started = time.time()
    last_report = (0.0, 0)


PROGRESS = Progress()
# Stream time per partition (max view_time seen), for event-time window close.
STREAM_TIME = {}


def record(n=1):
    """Count processed views; at N record the time and ask the worker to stop."""
    now = time.time()
    if PROGRESS.first is None:
        PROGRESS.first = now
    PROGRESS.processed += n
    if PROGRESS.processed >= N and not PROGRESS.stopping:
        PROGRESS.last = now
        PROGRESS.stopping = True
        # The worker's SIGTERM handler stops the app cleanly: agents stop, offsets are
        # committed (transactions committed with exactly_once), producers flushed.
        os.kill(os.getpid(), signal.SIGTERM)


# --------------------------------------------------------------------------- tables --
WINDOW_END_SLACK = 0.1 - 1e-6  # faust.types.windows.WindowRange_from_start: end = start+size-0.1


class BenchTable(faust.Table):
    """faust.Table with two changes the contract needs (app.Table builds this class).

    - Changelog records carry the input record's timestamp (latency runs measure against
      it); stock Faust lets the producer stamp them with the send time.
    - Event-time window close (`--window-close event-time`): stock Faust expires a window
      when *wall-clock* time passes its end + expires (faust/tables/base.py _del_old_keys
      calls window.stale(ts, time.time())), so on replayed data every window is stale at
      the first cleanup pass and windows are emitted half-filled; later records of a
      window already closed are dropped (last_closed_window). Here a window closes when the
      stream time of its partition reaches its end (grace 0), like Kafka Streams; the close
      is still found by Faust's cleanup timer (table_cleanup_interval) and still reported
      through on_window_close.
    """

    def send_changelog(self, partition, key, value, key_serializer=None, value_serializer=None):
        event = current_event()
        timestamp = event.message.timestamp if event is not None else None
        return self.changelog_topic.send_soon(
            key=key,
            value=value,
            partition=partition,
            timestamp=timestamp,
            key_serializer=key_serializer if key_serializer is not None else self.key_serializer,
            value_serializer=(
                value_serializer if value_serializer is not None else self.value_serializer
            ),
            callback=self._on_changelog_sent,
            eager_partitioning=True,
        )

    async def _del_old_keys(self):
        if ARGS.window_close == "wall-clock":
            return await super()._del_old_keys()
        for partition, ends in list(self._partition_timestamps.items()):
            now = STREAM_TIME.get(partition)
            if now is None:
                continue
            # ends: heap of window ends (one push per update). Faust's window range is
            # (start, start + size - 0.1): close a window once the partition's stream time
            # reaches start + size.
            while ends and ends[0] + WINDOW_END_SLACK <= now:
                end = heappop(ends)
                keys = self._partition_timestamp_keys.pop((partition, end), None)
                if not keys:
                    continue
                for key in sorted(keys):
                    value = self.data.pop(key, None)
                    await self.on_window_close(key, value)


# ------------------------------------------------------------------------- the app --
guarantee = "exactly_once" if ARGS.scenario == "eos-keyed-count" else "at_least_once"
app = faust.App(
    ARGS.prefix,  # app id = consumer group: fresh per run
    broker=f"kafka://{ARGS.bootstrap}",
    store=STORE,
    datadir=STATE_DIR,
    processing_guarantee=guarantee,
    Table=BenchTable,
    topic_partitions=P,
    topic_replication_factor=1,
    topic_allow_declare=True,
    consumer_auto_offset_reset="earliest",
    # Commit every 100 ms (and, Faust's default, every 10,000 acked messages).
    broker_commit_interval=0.1,
    broker_commit_every=10_000,
    # Contract: max.partition.fetch.bytes = 1 MiB (aiokafka's fetch_max_bytes is 50 MiB,
    # not settable through Faust).
    consumer_max_fetch_size=1024 * 1024,
    producer_linger=0.005,
    producer_compression_type="lz4",
    producer_acks=-1,
    table_cleanup_interval=ARGS.cleanup_interval,
    web_enabled=False,
    # Recovery of the (empty) changelog of a fresh app id: do not wait for more.
    stream_recovery_delay=0.0,
)


class PageView(faust.Record, serializer="json", include_metadata=False):
    user_id: str
    url: str
    view_time: float


views_topic = app.topic(VIEWS, key_type=bytes, value_type=PageView, key_serializer="raw")
out_topic = app.topic(OUT, key_type=bytes, key_serializer="raw", partitions=P)

if ARGS.scenario == "stateless":

    @app.agent(views_topic)
    async def stateless(stream):
        async for event in stream.events():
            if PROGRESS.stopping:
                continue
            view = event.value
            if not view.url.startswith("/health"):
                await out_topic.send(
                    key=view.url.encode(),
                    value=view,
                    timestamp=event.message.timestamp,
                )
                PROGRESS.sent += 1
            record()

elif ARGS.scenario in ("keyed-count", "eos-keyed-count"):
    counts = app.Table("bench_counts", default=int, partitions=P)

    @app.agent(views_topic)
    async def keyed_count(stream):
        async for view in stream:
            if PROGRESS.stopping:
                continue
            counts[view.url] += 1
            record()

elif ARGS.scenario == "tumbling-count":

    async def window_closed(key, value):
        url, (start, end) = key
        start_ms = int(round(start * 1000))
        # Output timestamp: the window's last millisecond (its latest possible record).
        await out_topic.send(
            key=url.encode(),
            value={"url": url, "start": start_ms, "count": value},
            value_serializer="json",
            timestamp=(start_ms + 60_000 - 1) / 1000.0,
        )
        PROGRESS.sent += 1

    window_counts = (
        app.Table("bench_window_counts", default=int, partitions=P, on_window_close=window_closed)
        # expires: how long after its end a window is kept. Faust needs it (> 0) to close
        # windows at all; with --window-close event-time a window closes at its end (grace 0).
        .tumbling(60.0, expires=1.0)
        .relative_to_field(PageView.view_time)
    )

    @app.agent(views_topic)
    async def tumbling_count(stream):
        async for event in stream.events():
            if PROGRESS.stopping:
                continue
            view = event.value
            p = event.message.partition
            if view.view_time > STREAM_TIME.get(p, 0.0):
                STREAM_TIME[p] = view.view_time
            window_counts[view.url] += 1
            record()


@app.timer(1.0)
async def progress():
    now = time.time()
    t0, n0 = PROGRESS.last_report
    n = PROGRESS.processed
    rate = (n - n0) / (now - t0) if t0 else 0.0
    PROGRESS.last_report = (now, n)
    print(
        f"faust {ARGS.scenario}: {n}/{N} views, {rate:.0f}/s",
        file=sys.stderr,
        flush=True,
    )


async def create_output_topic():
    """Create <prefix>-out (P partitions) before the worker starts (Faust declares only the
    topics it consumes and the changelogs)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=ARGS.bootstrap)
    await admin.start()
    try:
        try:
            await admin.create_topics([NewTopic(OUT, P, 1)])
        except TopicAlreadyExistsError:
            pass
    finally:
        await admin.close()


def main():
    if ARGS.threads != 1:
        print(f"bench_app: --threads {ARGS.threads} ignored (Faust: one process)", file=sys.stderr)
    if ARGS.scenario in ("stateless", "tumbling-count"):
        loop = asyncio.new_event_loop()
        loop.run_until_complete(create_output_topic())
        loop.close()
    asyncio.set_event_loop(asyncio.new_event_loop())
    print(
        f"bench_app: {ARGS.scenario} on {ARGS.bootstrap}, {N} views, {P} partitions, "
        f"app id {ARGS.prefix}, store {STORE}, guarantee {guarantee}",
        file=sys.stderr,
        flush=True,
    )
    worker = faust.Worker(
        app,
        loglevel=os.environ.get("RILL_FAUST_LOGLEVEL", "WARNING"),
        quiet=True,
        redirect_stdouts=False,
        stdout=sys.stderr,
        stderr=sys.stderr,
    )
    worker.spinner = None  # no terminal spinner (it writes escape codes)
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if PROGRESS.last is None:
        print(
            f"bench_app: stopped after {PROGRESS.processed} of {N} views",
            file=sys.stderr,
            flush=True,
        )
        return code or 1
    seconds = PROGRESS.last - PROGRESS.first
    print(
        f"bench_app: {PROGRESS.processed} views processed, {PROGRESS.sent} records sent "
        f"to {OUT}, {seconds:.3f} s",
        file=sys.stderr,
        flush=True,
    )
    print(
        json.dumps(
            {
                "scenario": ARGS.scenario,
                "system": SYSTEM,
                "events": N,
                "first_record_ms": int(PROGRESS.first * 1000),
                "last_record_ms": int(PROGRESS.last * 1000),
                "seconds": round(seconds, 3),
                "events_per_s": round(N / max(seconds, 1e-9), 1),
                "store": STORE.split(":")[0],
            }
        ),
        flush=True,
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
