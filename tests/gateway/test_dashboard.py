"""The web dashboard in a real browser against a running gateway and Redis.

Headless Chromium (Debian's ``chromium``) is driven by the Playwright Python
package with the system browser. The posters are crops of real photos; their
arm statistics, exposures, retirement and review state are written where the
learner, the gateway and the poster workers write them.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition
from PIL import Image

from bandits.state import ArmStats
from gateway.placements import PLACEMENTS
from gateway.state import EXPOSURE_BUCKET_MS, exposure_field
from keyart.keys import Keys, arm_field, escape
from keyart.settings import Settings
from keyart.stack import free_port

ADMIN_TOKEN = "dashboard-admin-token"
CHROMIUM = "/usr/bin/chromium"
VIDEO = "film:42 (director's cut)"  # an id that needs escaping in keys
PHOTOS = {"p-astronaut": "astronaut.png", "p-chelsea": "chelsea.png"}
PHOTOS |= {"p-kafka": "franz-kafka.jpg", "p-old": "astronaut.png"}
STATS = {
    "p-astronaut": ArmStats(5200, 260, 1200, 66),
    "p-chelsea": ArmStats(4100, 150, 900, 27),
    "p-kafka": ArmStats(800, 40, 300, 18),
    "p-old": ArmStats(3000, 30, 600, 4),
}
PLACEMENT_SPLIT = ArmStats(100, 10, 100, 10)  # a second arm of p-kafka


class Uvicorn:
    def __init__(self, app: Any) -> None:
        import uvicorn

        self.url = f"http://127.0.0.1:{free_port(0)}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=int(self.url.rsplit(":", 1)[1]),
            log_config=None,
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def crop_to_poster(source: Path, target: Path) -> None:
    with Image.open(source) as image:
        image = image.convert("RGB")
        width, height = image.size
        side = min(width, height * 2 // 3)
        left = (width - side) // 2
        box = (left, 0, left + side, side * 3 // 2)
        image.crop(box).resize((240, 360)).save(target, quality=88)


def seed_catalog(
    settings: Settings, video: str, poster_id: str, image_url: str
) -> None:
    from workers.catalog import CandidateRow, Catalog, JobRow, VideoRow

    catalog = Catalog(settings.database_url)
    with catalog.session() as session:
        session.add(VideoRow(video_id=video, title="Film 42"))
        session.flush()
        job = JobRow(video_id=video, event_id="e1", status="done")
        session.add(job)
        session.flush()
        session.add(
            CandidateRow(
                poster_id=poster_id,
                video_id=video,
                job_id=job.job_id,
                aspect="2:3",
                width=240,
                height=360,
                frame_index=0,
                frame_time_s=0.0,
                shot=0,
                score=0.87,
                image_path=image_url,
                image_url=image_url,
            )
        )
        session.commit()
    catalog.close()


def put_experiments(url: str) -> None:
    httpx.put(
        url + "/admin/experiments",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        json={
            "document": {
                "salt": "s",
                "variants": [
                    {"name": "control", "policy": "random", "weight": 0.2},
                    {"name": "ts", "policy": "thompson", "weight": 0.5},
                    {"name": "contextual", "policy": "linucb", "weight": 0.3},
                ],
            }
        },
        timeout=10,
    ).raise_for_status()


@pytest.fixture(scope="module")
def dashboard(
    make_settings: Callable[..., Settings], media: Callable[[str], Path]
) -> Iterator[tuple[str, Settings, Any]]:
    from gateway.app import create_app

    settings = make_settings(
        topics=True,
        admin_token=ADMIN_TOKEN,
        token_secret="dashboard-secret",
        streams_app_id="dash-learner-" + uuid.uuid4().hex[:6],
    )
    keys = Keys(settings.redis_prefix)
    client = redis.Redis.from_url(settings.redis_url)
    now_ms = int(time.time() * 1000)

    # Posters: real photos cropped to 2:3 in the poster store.
    for poster_id, photo in PHOTOS.items():
        crop_to_poster(media(photo), settings.poster_store / f"{poster_id}.jpg")
        client.hset(
            keys.poster(poster_id),
            mapping={
                "video_id": VIDEO,
                "image_url": f"/posters/{poster_id}.jpg",
                "aspect": "2:3",
                "status": "approved",
            },
        )
        client.hset(keys.arms(VIDEO), arm_field(poster_id), STATS[poster_id].pack())
    client.hset(keys.arms(VIDEO), arm_field("p-kafka", "hero"), PLACEMENT_SPLIT.pack())
    client.hset(keys.arms(VIDEO), "_updated_ms", now_ms - 1500)
    client.sadd(keys.posters(VIDEO), "p-astronaut", "p-chelsea", "p-kafka")
    client.hset(keys.retired(VIDEO), "p-old", "CTR below the best with 99% certainty")
    for back, shares in enumerate([(50, 30, 20), (40, 35, 25), (30, 40, 30)]):
        bucket_ms = now_ms - back * EXPOSURE_BUCKET_MS
        for poster_id, count in zip(
            ["p-astronaut", "p-chelsea", "p-kafka"], shares, strict=True
        ):
            client.hincrby(
                keys.exposure(VIDEO),
                exposure_field(escape(poster_id), bucket_ms),
                count,
            )
    client.hset(f"{settings.redis_prefix}:learner:0", "updated_ms", now_ms - 2000)

    # A pending candidate in the catalog, its image in the store.
    crop_to_poster(media("chelsea.png"), settings.poster_store / "p-new.jpg")
    seed_catalog(settings, VIDEO, "p-new", "/posters/p-new.jpg")

    # The learner's group stands 3 records behind on partition 0.
    topic = settings.topic("impressions")
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i in range(5):
        producer.produce(topic, b"x%d" % i, partition=0)
    assert producer.flush(10) == 0
    committer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": settings.streams_app_id,
        }
    )
    committer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    committer.close()

    server = Uvicorn(create_app(settings))
    put_experiments(server.url)
    try:
        yield server.url, settings, client
    finally:
        server.stop()
        client.close()


def expected(poster_id: str) -> ArmStats:
    s = STATS[poster_id]
    if poster_id == "p-kafka":
        p = PLACEMENT_SPLIT
        return ArmStats(
            s.impressions + p.impressions,
            s.clicks + p.clicks,
            s.window_impressions + p.window_impressions,
            s.window_clicks + p.window_clicks,
        )
    return s


def test_video_api_reads_redis_and_the_catalog(dashboard) -> None:
    url, settings, _ = dashboard
    from urllib.parse import quote

    data = httpx.get(f"{url}/dashboard/api/videos/{quote(VIDEO)}", timeout=10).json()
    posters = {p["poster_id"]: p for p in data["posters"]}
    assert set(posters) == set(PHOTOS)
    for poster_id in PHOTOS:
        s, shown = expected(poster_id), posters[poster_id]
        assert shown["window_ctr"] == s.window_clicks / s.window_impressions
        assert shown["ctr"] == s.clicks / s.impressions
        low, high = shown["interval"]
        assert low < shown["window_ctr"] < high
    assert posters["p-old"]["status"] == "retired"
    assert "99%" in posters["p-old"]["retired_reason"]
    assert [p["poster_id"] for p in data["pending"]] == ["p-new"]
    assert 1.0 < data["state_age_s"] < 60
    counts = data["history"]["counts"]
    assert counts["p-astronaut"][-3:] == [30, 40, 50]
    variants = {v["name"]: v for v in data["variants"]}
    assert variants["control"]["share"] == pytest.approx(
        {"p-astronaut": 1 / 3, "p-chelsea": 1 / 3, "p-kafka": 1 / 3}
    )
    assert sum(variants["ts"]["share"].values()) == pytest.approx(1.0)
    assert "p-old" not in variants["ts"]["share"]
    assert variants["contextual"]["share"] is None

    listed = httpx.get(f"{url}/dashboard/api/videos", timeout=10).json()["videos"]
    assert [v["video_id"] for v in listed] == [VIDEO]
    ops = httpx.get(f"{url}/dashboard/api/ops", timeout=30).json()
    rows = [r for r in ops["lag"]["rows"] if r["partition"] == 0]
    assert rows[0]["lag_messages"] == 3
    assert ops["freshness"][0]["age_s"] > 1.0


MIXED = "film:mixed-aspects"
MIXED_POSTERS = {  # poster -> (aspect, the placements it lists)
    "m-tall-best": ("2:3", []),
    "m-tall": ("2:3", []),
    "m-phone-only": ("2:3", ["phone_row"]),
    "m-tall-retired": ("2:3", []),
    "m-wide": ("16:9", []),
    "m-wide-new": ("16:9", []),
    "m-square": ("1:1", []),
}
BEST = ArmStats(2000, 200, 1000, 100)
WEAK = ArmStats(2000, 40, 1000, 20)


@pytest.fixture(scope="module")
def mixed(make_settings: Callable[..., Settings]) -> Iterator[tuple[str, Settings]]:
    """A gateway of its own (Redis prefix, topics) with one video of posters of
    three aspects. Unsplit arms make m-tall-best clearly best; arms split by
    placement make it best on home_row only and m-tall best on phone_row."""
    from gateway.app import create_app

    settings = make_settings(
        topics=True, admin_token=ADMIN_TOKEN, token_secret="dashboard-secret"
    )
    client = redis.Redis.from_url(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    for poster_id, (aspect, placements) in MIXED_POSTERS.items():
        client.hset(
            keys.poster(poster_id),
            mapping={
                "video_id": MIXED,
                "aspect": aspect,
                "placements": json.dumps(placements),
                "status": "approved",
            },
        )
    client.sadd(keys.posters(MIXED), *MIXED_POSTERS)
    client.hset(keys.retired(MIXED), "m-tall-retired", "CTR below the best")
    arms = {
        arm_field("m-tall-best"): BEST,
        arm_field("m-tall"): WEAK,
        arm_field("m-phone-only"): WEAK,
        arm_field("m-tall-retired"): ArmStats(2000, 600, 1000, 300),
        arm_field("m-wide"): ArmStats(10, 0, 10, 0),
        arm_field("m-tall-best", "home_row"): BEST,
        arm_field("m-tall", "home_row"): WEAK,
        arm_field("m-tall-best", "phone_row"): WEAK,
        arm_field("m-tall", "phone_row"): BEST,
        arm_field("m-phone-only", "phone_row"): WEAK,
    }
    client.hset(keys.arms(MIXED), mapping={f: s.pack() for f, s in arms.items()})
    client.close()
    server = Uvicorn(create_app(settings))
    put_experiments(server.url)
    try:
        yield server.url, settings
    finally:
        server.stop()


@pytest.mark.parametrize("split_by_placement", [False, True])
def test_shares_are_among_the_posters_a_placement_can_serve(
    mixed, split_by_placement: bool
) -> None:
    from urllib.parse import quote

    from gateway.app import create_app

    url, settings = mixed
    server = None
    if split_by_placement:  # a second gateway on the same Redis, arms split
        split = settings.model_copy(update={"split_by_placement": True})
        server = Uvicorn(create_app(split))
        url = server.url
    try:
        answer = httpx.get(f"{url}/dashboard/api/videos/{quote(MIXED)}", timeout=10)
    finally:
        if server is not None:
            server.stop()
    data = answer.json()
    variants = {v["name"]: v for v in data["variants"]}
    tall, wide = {"m-tall-best", "m-tall"}, {"m-wide", "m-wide-new"}
    # share: the first placement's, home_row (2:3, no retired poster).
    home_row = variants["ts"]["share"]
    assert set(home_row) == tall
    assert sum(home_row.values()) == pytest.approx(1.0)
    assert home_row["m-tall-best"] > 0.99

    recall = {p["name"]: set(p["candidates"]) for p in data["placements"]}
    assert recall == {
        "home_row": tall,
        "phone_row": tall | {"m-phone-only"},
        "search": wide,
        "detail": wide,
        "tv_grid": wide,
        "continue": {"m-square"},
    }
    ts = variants["ts"]["shares"]
    assert set(ts) == set(recall)
    for placement, posters in recall.items():
        assert set(ts[placement]) == posters
        assert sum(ts[placement].values()) == pytest.approx(1.0)
    assert ts["home_row"] == home_row
    best_on_phone = "m-tall" if split_by_placement else "m-tall-best"
    assert ts["phone_row"][best_on_phone] > 0.99
    assert ts["continue"] == {"m-square": 1.0}
    control = variants["control"]["shares"]
    assert control["home_row"] == pytest.approx({p: 1 / 2 for p in tall})
    assert control["search"] == pytest.approx({p: 1 / 2 for p in wide})
    assert variants["contextual"]["shares"] is None


@pytest.mark.browser
@pytest.mark.slow
def test_dashboard_in_chromium(dashboard, mixed, artifacts: Path) -> None:
    from playwright.sync_api import sync_playwright

    url, settings, client = dashboard
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    args = ["--headless", "--no-sandbox", "--disable-gpu"]
    args += ["--disable-background-networking", "--disable-component-update"]
    args += ["--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1440, "height": 1350})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{url}/dashboard?interval=1000")
        page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
        page.wait_for_function(
            "Array.from(document.querySelectorAll('#posters img'))"
            ".every(i => i.complete && i.naturalWidth > 0)",
            timeout=15_000,
        )

        # Posters as images, with the CTRs Redis holds.
        cards = page.locator("#posters .card")
        assert cards.count() == 4
        for poster_id in PHOTOS:
            card = page.locator(f"#posters .card[data-poster-id='{poster_id}']")
            s = expected(poster_id)
            ctr = s.window_clicks / s.window_impressions
            assert float(card.get_attribute("data-ctr")) == pytest.approx(ctr)
            shown = card.locator("[data-field='ctr']").inner_text()
            assert shown.startswith(f"{100 * ctr:.2f}%")
            alltime = card.locator("[data-field='alltime-ctr']").inner_text()
            assert alltime == f"{100 * s.clicks / s.impressions:.2f}%"
            width = card.locator("img").evaluate("i => i.naturalWidth")
            assert width == 240
        retired = page.locator("#posters .card[data-poster-id='p-old']")
        assert retired.get_attribute("data-status") == "retired"
        assert "99% certainty" in retired.inner_text()
        pending = page.locator("#pending .card[data-poster-id='p-new']")
        assert "pending review" in pending.inner_text().lower()
        assert pending.locator("button").count() == 0  # read-only without a token

        # Variants side by side, the traffic chart, lag and freshness.
        assert page.locator("#variants .variant").count() == 3
        control = page.locator(
            "#variants .variant[data-variant='control']"
        ).inner_text()
        assert control.count("33%") == 3
        assert "decisions, all videos" in control
        assert "features" in page.locator("[data-variant='contextual']").inner_text()
        assert page.locator("#history svg rect").count() == 9  # 3 buckets x 3
        lag_text = page.locator("#lag-table").inner_text()
        assert settings.streams_app_id in lag_text
        assert settings.topic("impressions") in lag_text
        assert "ago" in page.locator("#fresh-table").inner_text()

        # A live change in Redis shows up at the next poll.
        client.hset(
            Keys(settings.redis_prefix).arms(VIDEO),
            arm_field("p-chelsea"),
            ArmStats(4100, 150, 1000, 50).pack(),
        )
        page.wait_for_function(
            "document.querySelector(\"#posters .card[data-poster-id='p-chelsea']\")"
            ".dataset.ctr === '0.05'",
            timeout=10_000,
        )
        page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)

        # With the admin token, review is unlocked and approving works.
        page.fill("#token", ADMIN_TOKEN)
        page.click("#unlock")
        page.wait_for_selector("#mode:has-text('review unlocked')")
        page.locator("#pending .card[data-poster-id='p-new'] button").first.click()
        page.wait_for_selector(
            "#pending .card[data-poster-id='p-new']", state="detached", timeout=15_000
        )

        # Shares per placement: the page shows those of the placement picked.
        mixed_url = mixed[0]
        page.goto(f"{mixed_url}/dashboard?interval=1000&placement=search")
        ts = "#variants .variant[data-variant='ts']"
        page.wait_for_selector(f"{ts}[data-placement='search'] .share")
        options = page.locator("#placement option").evaluate_all(
            "options => options.map(o => o.value)"
        )
        assert options == list(PLACEMENTS)  # the video has posters for each
        shown = page.locator(f"{ts} .share").evaluate_all(
            "rows => rows.map(r => r.dataset.posterId)"
        )
        assert sorted(shown) == ["m-wide", "m-wide-new"]
        page.select_option("#placement", "continue")
        square = page.locator(f"{ts}[data-placement='continue'] .share")
        assert square.count() == 1 and "100%" in square.inner_text()
        assert "placement=continue" in page.url
        browser.close()
    assert errors == []
    from workers.catalog import Catalog

    catalog = Catalog(settings.database_url, migrate=False)
    with catalog.engine.connect() as conn:
        import sqlalchemy as sa

        status = conn.execute(
            sa.text("SELECT status FROM candidates WHERE poster_id = 'p-new'")
        ).scalar()
    catalog.close()
    assert status == "approved"
