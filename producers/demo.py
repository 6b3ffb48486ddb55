"""``keyart demo``: real logged clicks through the real broker into Redis.

Steps of :func:`run_demo`:

1. use the local stack that ``keyart up`` left running, or start one on free
   ports (and stop it at the end);
2. fetch the Open Bandit Dataset sample (real logged clicks) from the package
   registry;
3. stream its rounds as impression and click events through the broker;
4. read them back, count impressions and clicks per arm (deduplicated by event
   id) and write the counts into Redis in the layout the gateway reads;
5. print what arrived.

The counting consumer of step 4 is interim: the streaming learner
(``keyart streams``) replaces it once it lands, and the demo then also makes
posters from real video and runs simulated traffic through the gateway.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bandits.state import ArmStats
from keyart.keys import Keys, arm_field
from keyart.settings import Settings, load_settings
from producers.events import EventProducer
from producers.replay import OBD_VIDEO, LoggedRound, load_obd, round_events

__all__ = ["ArmTally", "DemoResult", "local_stack", "run_demo", "tally_events"]

logger = logging.getLogger("producers")

SHORT_ROUNDS = 2_000


@dataclass
class ArmTally:
    """Deduplicated impressions and clicks per (video, poster) read from Kafka."""

    impression_ids: set[str] = field(default_factory=set)
    click_ids: set[str] = field(default_factory=set)
    arm_to_impressions: dict[tuple[str, str], int] = field(default_factory=dict)
    arm_to_clicks: dict[tuple[str, str], int] = field(default_factory=dict)
    duplicates: int = 0
    undecodable: int = 0

    def add_impression(self, record: dict) -> None:
        if record["event_id"] in self.impression_ids:
            self.duplicates += 1
            return
        self.impression_ids.add(record["event_id"])
        arm = (record["video_id"], record["poster_id"])
        self.arm_to_impressions[arm] = self.arm_to_impressions.get(arm, 0) + 1

    def add_click(self, record: dict) -> None:
        if record["event_id"] in self.click_ids:
            self.duplicates += 1
            return
        self.click_ids.add(record["event_id"])
        arm = (record["video_id"], record["poster_id"])
        self.arm_to_clicks[arm] = self.arm_to_clicks.get(arm, 0) + 1


@dataclass
class DemoResult:
    """What one demo run sent and what arrived in Redis."""

    sent_impressions: int
    sent_clicks: int
    tally: ArmTally
    poster_to_stats: dict[str, ArmStats]
    seconds: float


@contextlib.contextmanager
def local_stack(settings: Settings, console: Console) -> Iterator[Settings]:
    """Settings pointed at a running local stack, started here when none is up.

    A stack started here is stopped on the way out, also on Ctrl-C or an error.
    """
    from keyart.stack import LocalStack, create_topics, read_state

    running = read_state(settings.state_dir)
    if running is not None:
        console.print(
            f"using the local stack that is up: broker {running.kafka_bootstrap}"
        )
        pointed = load_settings(
            **{
                **settings.model_dump(),
                "kafka_bootstrap": running.kafka_bootstrap,
                "redis_url": running.redis_url,
            }
        )
        create_topics(pointed)
        yield pointed
        return
    stack = LocalStack(settings, die_with_parent=True)
    with console.status("starting the local broker and Redis"):
        info = stack.start()
    console.print(
        f"local stack up: broker {info.kafka_bootstrap}, redis {info.redis_url}"
    )
    try:
        yield load_settings(
            **{
                **settings.model_dump(),
                "kafka_bootstrap": info.kafka_bootstrap,
                "redis_url": info.redis_url,
            }
        )
    finally:
        stack.stop()
        console.print("local stack stopped")


def tally_events(
    settings: Settings,
    expect_impressions: set[str],
    expect_clicks: set[str],
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> ArmTally:
    """Read the impression and click topics from the start until every expected
    event id arrived (or ``timeout`` passed); count per arm, deduplicated.

    The partitions are assigned directly, without a consumer group, so there is
    no group join to wait for.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from schemas.codec import DecodeError, get_codec

    codec = get_codec()
    topic_to_kind = {
        settings.topic("impressions"): "impression",
        settings.topic("clicks"): "click",
    }
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "keyart-demo-" + uuid.uuid4().hex[:8],
            "enable.auto.commit": False,
        }
    )
    tally = ArmTally()
    task = None
    if progress is not None:
        total = len(expect_impressions) + len(expect_clicks)
        task = progress.add_task("reading events back from Kafka", total=total)
    try:
        metadata = consumer.list_topics(timeout=10)
        assignment = [
            TopicPartition(topic, p, OFFSET_BEGINNING)
            for topic in topic_to_kind
            for p in metadata.topics[topic].partitions
        ]
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if expect_impressions <= tally.impression_ids and (
                expect_clicks <= tally.click_ids
            ):
                break
            messages = consumer.consume(num_messages=1000, timeout=0.5)
            for message in messages:
                if message.error():
                    continue
                kind = topic_to_kind[message.topic()]
                try:
                    record = codec.decode(kind, message.value())
                except DecodeError as error:
                    tally.undecodable += 1
                    logger.warning("undecodable %s record: %s", kind, error)
                    continue
                if kind == "impression":
                    tally.add_impression(record)
                else:
                    tally.add_click(record)
            if task is not None and progress is not None:
                done = len(tally.impression_ids & expect_impressions) + len(
                    tally.click_ids & expect_clicks
                )
                progress.update(task, completed=done)
        else:
            logger.warning(
                "not every event came back within %.0f s: %s of %s impressions",
                timeout,
                len(tally.impression_ids & expect_impressions),
                len(expect_impressions),
            )
    finally:
        consumer.close()
    return tally


def write_arm_counts(settings: Settings, tally: ArmTally) -> int:
    """Write every arm's counts to ``{p}:arms:{video}`` as packed ArmStats.

    The interim counter has no sliding window, so the window counts equal the
    all-time counts. Returns the number of arms written.
    """
    import redis

    keys = Keys(settings.redis_prefix)
    client = redis.Redis.from_url(settings.redis_url)
    arms = set(tally.arm_to_impressions) | set(tally.arm_to_clicks)
    now_ms = int(time.time() * 1000)
    try:
        pipe = client.pipeline(transaction=False)
        for video, poster in arms:
            n = tally.arm_to_impressions.get((video, poster), 0)
            c = tally.arm_to_clicks.get((video, poster), 0)
            pipe.hset(keys.arms(video), arm_field(poster), ArmStats(n, c, n, c).pack())
        for video in {video for video, _ in arms}:
            pipe.hset(keys.arms(video), "_updated_ms", now_ms)
        pipe.execute()
    finally:
        client.close()
    return len(arms)


def read_arm_counts(settings: Settings, video_id: str) -> dict[str, ArmStats]:
    """The arm statistics of one video as they are in Redis."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        raw = client.hgetall(Keys(settings.redis_prefix).arms(video_id))
    finally:
        client.close()
    return {
        name.decode(): ArmStats.unpack(value)
        for name, value in raw.items()
        if not name.startswith(b"_")
    }


def arms_table(poster_to_stats: dict[str, ArmStats], top: int = 15) -> Table:
    """The arms with the most clicks, then a line with the totals."""
    table = Table(title=f"arms of {OBD_VIDEO} in Redis (Open Bandit Dataset clicks)")
    for name in ("poster", "impressions", "clicks", "CTR"):
        table.add_column(name, justify="left" if name == "poster" else "right")
    ranked = sorted(
        poster_to_stats.items(),
        key=lambda kv: (-kv[1].clicks, -kv[1].impressions, kv[0]),
    )
    for poster, stats in ranked[:top]:
        ctr = stats.clicks / stats.impressions if stats.impressions else 0.0
        table.add_row(poster, str(stats.impressions), str(stats.clicks), f"{ctr:.2%}")
    n = sum(s.impressions for s in poster_to_stats.values())
    c = sum(s.clicks for s in poster_to_stats.values())
    if len(ranked) > top:
        table.add_row(f"... {len(ranked) - top} more arms", "", "", "")
    table.add_row(
        f"all {len(ranked)} arms", str(n), str(c), f"{c / n:.2%}" if n else "-"
    )
    return table


def stream_rounds(
    settings: Settings, rounds: list[LoggedRound], progress: Progress | None = None
) -> tuple[set[str], set[str]]:
    """Produce the events of logged rounds; return the impression and click ids.

    The producer is closed on return, before anyone stops the broker.
    """
    producer = EventProducer(settings)
    impression_ids: set[str] = set()
    click_ids: set[str] = set()
    task = None
    if progress is not None:
        task = progress.add_task("streaming logged rounds", total=len(rounds))
    for i, item in enumerate(rounds):
        for kind, record in round_events(item):
            producer.send(kind, record)
            (impression_ids if kind == "impression" else click_ids).add(
                record["event_id"]
            )
        if progress is not None and task is not None and i % 500 == 499:
            progress.update(task, completed=i + 1)
    producer.flush()
    if progress is not None and task is not None:
        progress.update(task, completed=len(rounds))
    return impression_ids, click_ids


def run_demo(
    settings: Settings,
    *,
    short: bool = False,
    console: Console | None = None,
    obd_path: Path | None = None,
) -> DemoResult:
    """Run the demo end to end; see the module's steps."""
    console = console or Console()
    started = time.monotonic()
    with local_stack(settings, console) as live:  # Step 1
        with console.status("fetching the Open Bandit Dataset sample"):  # Step 2
            log = load_obd(obd_path, limit=SHORT_ROUNDS if short else None)
        console.print(
            f"Open Bandit Dataset: {len(log.rounds)} logged rounds, "
            f"{log.clicks} real clicks, {log.n_items} items as arms of '{OBD_VIDEO}'"
        )

        with Progress(console=console, transient=False) as progress:
            impression_ids, click_ids = stream_rounds(  # Step 3
                live, log.rounds, progress
            )
            tally = tally_events(  # Step 4
                live, impression_ids, click_ids, progress=progress
            )
        written = write_arm_counts(live, tally)
        poster_to_stats = read_arm_counts(live, OBD_VIDEO)

        console.print(arms_table(poster_to_stats))  # Step 5
        console.print(
            f"sent {len(impression_ids)} impressions and {len(click_ids)} clicks; "
            f"read back {len(tally.impression_ids)} impressions and "
            f"{len(tally.click_ids)} clicks ({tally.duplicates} duplicates dropped); "
            f"{written} arms written to Redis under "
            f"{Keys(live.redis_prefix).arms(OBD_VIDEO)}"
        )
    return DemoResult(
        sent_impressions=len(impression_ids),
        sent_clicks=len(click_ids),
        tally=tally,
        poster_to_stats=poster_to_stats,
        seconds=time.monotonic() - started,
    )
