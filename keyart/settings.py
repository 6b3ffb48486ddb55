"""One validated, immutable settings object for every keyart process.

Every setting is read from an environment variable named ``KEYART_`` plus the
field name in upper case (``flush_interval_ms`` is ``KEYART_FLUSH_INTERVAL_MS``),
or from an optional ``KEY=value`` file named by ``KEYART_ENV_FILE`` (the
environment wins where both set one). A wrong value stops the process at start
with a message that names the variable; a variable that names no setting, in
the environment or in the file, is ignored with a warning that names the
closest setting (and the file).

Examples
--------
>>> from keyart.settings import Settings
>>> s = Settings(flush_interval_ms=250)
>>> s.flush_interval_ms
250
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from dotenv.parser import parse_stream
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

__all__ = [
    "SECRET_SETTINGS",
    "Settings",
    "SettingsError",
    "get_settings",
    "load_settings",
    "shown_url",
    "shown_value",
]

logger = logging.getLogger("keyart")

ENV_PREFIX = "KEYART_"
OTHER_VARIABLES = frozenset(
    {
        "KEYART_ENV_FILE",  # the settings file, read by load_settings
        "KEYART_LOG_LEVEL",  # options of the keyart command (keyart/cli.py)
        "KEYART_LOG_JSON",
        "KEYART_TEST_PG_URL",  # the PostgreSQL server of the tests
    }
)
"""``KEYART_`` environment variables keyart reads that are not settings."""
SECRET_SETTINGS = frozenset({"admin_token", "token_secret"})
"""Settings whose whole value is a secret; a URL setting's password is masked
wherever the URL is (:func:`shown_url`)."""
_SECRET_QUERY_WORDS = ("password", "secret", "token")
_MASK = "***"


class SettingsError(ValueError):
    """A setting has a value keyart cannot use; the message names the variable."""


class Settings(BaseSettings):
    """Settings shared by every keyart process.

    Each field's environment variable is ``KEYART_<FIELD NAME IN UPPER CASE>``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        allow_inf_nan=False,  # an infinite window or budget is always a typo
        extra="forbid",
        case_sensitive=False,
    )

    # Where things live ------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers, comma separated host:port.",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis URL for live arm state."
    )
    redis_prefix: str = Field(
        "ka", description="Prefix of every Redis key keyart writes."
    )
    database_url: str = Field(
        "sqlite:///var/catalog.db",
        description="SQLAlchemy URL of the poster catalog (SQLite or PostgreSQL).",
    )
    state_dir: Path = Field(
        Path(".keyart"),
        description="Folder for the local stack's state file, logs and tables.",
    )
    topic_prefix: str = Field("keyart", description="Prefix of every Kafka topic.")
    topic_partitions: int = Field(
        8, ge=1, le=256, description="Partitions of the event topics."
    )

    # Local stack ------------------------------------------------------------
    broker_port: int = Field(
        9092,
        ge=0,
        le=65535,
        description="Port of the local broker (0: any free). Once set, or once a "
        "stack listened there, `keyart up` fails rather than move the broker off "
        "it when another process holds it; only the unset default gives way.",
    )

    # Streaming learner --------------------------------------------------------
    streams_app_id: str = Field("keyart-learner", description="Faust app id.")
    flush_interval_ms: int = Field(
        500, ge=10, le=60_000, description="Interval of pipelined Redis writes."
    )
    attribution_window_s: float = Field(
        1800.0, gt=0, description="Clicks within this many seconds are credited."
    )
    dedupe_window_s: float = Field(
        86_400.0, gt=0, description="How long an event id is remembered."
    )
    window_kind: Literal["time", "impressions"] = Field(
        "time", description="Slide the bandit window by time or by impressions."
    )
    window_s: float = Field(
        86_400.0, gt=0, description="Sliding window length in seconds (time kind)."
    )
    window_impressions: int = Field(
        10_000, ge=1, description="Sliding window length in impressions."
    )
    window_buckets: int = Field(
        24, ge=1, le=1024, description="Buckets the sliding window is kept in."
    )
    prior_alpha: float = Field(1.0, gt=0, description="Beta prior clicks + 1.")
    prior_beta: float = Field(1.0, gt=0, description="Beta prior misses + 1.")
    split_by_placement: bool = Field(
        False, description="Keep separate arm statistics per placement."
    )
    split_by_segment: bool = Field(
        False, description="Keep separate arm statistics per user segment."
    )
    linucb_alpha: float = Field(1.0, ge=0, description="LinUCB exploration width.")
    epsilon: float = Field(0.1, ge=0, le=1, description="Epsilon-greedy rate.")
    ucb_c: float = Field(2.0, ge=0, description="UCB1 exploration constant.")
    fm_temperature: float = Field(
        0.1,
        ge=0,
        description="Softmax temperature of the FM policy on click log-odds "
        "(0 is greedy).",
    )
    fm_sample_rate: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Share of impressions (by id hash) the FM click model learns "
        "from; river's FM costs a few hundred microseconds an example.",
    )
    fm_max_context_features: int = Field(
        256,
        ge=0,
        le=100_000,
        description="Most distinct context features each FM shard learns, first "
        "come: every context key a client sends would otherwise become a weight "
        "and a latent vector kept for good in Redis. Later keys are left out of "
        "the examples (counted in keyart_streams_fm_context_refused_total) and "
        "the gateway ignores them too, as the model has none of them.",
    )
    fm_context_features: str = Field(
        "",
        description="Context features the FM may learn, comma separated (empty: "
        "any, up to KEYART_FM_MAX_CONTEXT_FEATURES); others are left out the same "
        "way.",
    )
    streams_session_timeout_s: float = Field(
        10.0,
        ge=1.0,
        le=300.0,
        description="Learner's consumer-group session timeout: how soon a dead "
        "worker's partitions move to the others.",
    )
    max_clock_skew_s: float = Field(
        300.0,
        gt=0,
        le=86_400.0,
        description="Events dated more than this many seconds after the learner's "
        "wall clock are dead-lettered; the partition clock leads the wall clock by "
        "at most 5 s.",
    )
    redis_outage_s: float = Field(
        300.0,
        gt=0,
        le=86_400.0,
        description="How long the learner keeps retrying Redis (consumption "
        "paused) before it stops with an error.",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus port of a process (0: any free)."
    )

    # Gateway ----------------------------------------------------------------
    gateway_host: str = Field("127.0.0.1", description="Gateway listen address.")
    gateway_port: int = Field(8000, ge=0, le=65535, description="Gateway port.")
    admin_token: str = Field(
        "", description="Token for administrative endpoints (empty: admin off)."
    )
    redis_budget_ms: float = Field(
        20.0, gt=0, description="Redis time budget of one select request."
    )
    max_row_length: int = Field(100, ge=1, description="Most videos in one row.")
    max_request_bytes: int = Field(
        1_000_000, ge=1024, description="Largest accepted request body."
    )
    max_events_per_batch: int = Field(
        1000, ge=1, description="Most events in one collector batch."
    )
    request_body_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Longest the gateway waits for a request body to arrive "
        "once its headers have; a slower client gets 408.",
    )
    collect_redis_budget_ms: float = Field(
        250.0,
        gt=0,
        description="Redis time budget of one collector batch (claims, then "
        "exposure); past it the batch is produced undeduplicated and Redis is "
        "skipped for a second after repeated failures.",
    )
    collect_pending_s: float = Field(
        30.0,
        gt=0,
        description="How long an event id stays claimed while its batch waits "
        "for the broker's acknowledgement (a resend meanwhile is told to retry); "
        "keep it above the producer's 10 s delivery timeout.",
    )
    collect_clock_skew_s: float = Field(
        60.0,
        gt=0,
        description="How far a client's clock may be off the gateway's: the "
        "collector refuses an event_time more than this after its own clock or "
        "before its token was issued; at most KEYART_MAX_CLOCK_SKEW_S, so the "
        "collector takes nothing the learner dead-letters (lowering only that "
        "one lowers this default with it).",
    )
    max_candidates_per_video: int = Field(
        50,
        ge=1,
        description="Most posters of one video a select request considers: the "
        "best by all-time posterior click rate (a poster without impressions "
        "counts as 0.5), ties by poster id.",
    )
    max_candidates_per_row: int = Field(
        1000,
        ge=1,
        description="Most posters a whole select request considers; a long row "
        "of titles with many posters each gets fewer per title (at least one).",
    )
    token_secret: str = Field(
        "",
        description="Secret that signs impression tokens; every gateway and "
        "collector of a deployment needs the same one (empty: a random secret "
        "per process, so tokens only verify in the process that issued them).",
    )
    token_ttl_s: float = Field(
        86_400.0, gt=0, description="How long the collector accepts a token."
    )
    propensity_samples: int = Field(
        256, ge=16, le=100_000, description="Monte Carlo draws per propensity."
    )
    gateway_cache_s: float = Field(
        1.0,
        gt=0,
        description="How long the gateway keeps models, rules, experiments and "
        "poster metadata in memory before checking Redis again.",
    )

    # Offline ranker ---------------------------------------------------------
    ranker_path: Path | None = Field(
        None,
        description="ONNX click model from `keyart train` that scores the "
        "recalled candidates (unset: no ranker; missing or broken file: served "
        "without it, keyart_ranker_unavailable=1).",
    )
    ranker_prior_strength: float = Field(
        20.0,
        gt=0,
        description="Impressions the ranker's click probability is worth as a "
        "Beta prior of an arm (pseudo-counts p*m and (1-p)*m).",
    )

    # Poster production --------------------------------------------------------
    video_roots: str = Field(
        "",
        description="Folders the poster workers may read videos from, comma "
        "separated (empty: any local file the process can read).",
    )
    poster_store: Path = Field(
        Path("var/posters"), description="Folder the poster images are written to."
    )
    poster_url_base: str = Field(
        "/posters", description="Public URL base of the poster store (a CDN)."
    )
    auto_approve_score: float | None = Field(
        None,
        description="Approve candidates scoring at least this (off when unset).",
    )
    auto_approve_top: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="With automatic approval, approve at most this many of a "
        "video's candidates per aspect ratio, the best scoring (all when unset).",
    )
    poster_aspects: str = Field(
        "2:3,16:9,1:1",
        pattern=r"^\d+:\d+(,\d+:\d+)*$",
        description="Placement aspect ratios posters are cropped to, comma separated.",
    )
    poster_max_frames: int = Field(
        12, ge=1, le=500, description="Most frames of one video taken to cropping."
    )
    poster_crops_per_aspect: int = Field(
        2, ge=1, le=10, description="Best crops kept per frame and aspect ratio."
    )
    poster_group_id: str = Field(
        "keyart-posters", description="Kafka consumer group of the poster workers."
    )
    poster_max_attempts: int = Field(
        3, ge=1, le=20, description="Tries of one video job before it is failed."
    )
    video_max_seconds: float = Field(
        14_400.0, gt=0, description="Longest video accepted (longer: job failed)."
    )
    video_max_pixels: int = Field(
        8192 * 4320, ge=1, description="Largest frame accepted, width x height."
    )
    video_min_side: int = Field(
        64, ge=1, description="Smallest frame side accepted, in pixels."
    )
    poster_session_timeout_s: float = Field(
        30.0,
        ge=6,
        le=300,
        description="Seconds before a silent poster worker's partitions move on.",
    )
    data_cache: Path = Field(
        Path(".cache/keyart"),
        description="Folder for real inputs fetched from the package registry.",
    )

    # Demo ---------------------------------------------------------------------
    demo_seconds: float = Field(
        180.0, gt=0, description="How long the demo's simulated traffic runs."
    )
    seed: int = Field(7, description="Seed of every random component in a run.")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected a redis:// URL, got {shown_url(value)!r}")
        if not value.startswith("unix://") and not _port_readable(value):
            # redis-py's own error quotes what it took for the port, which is
            # the start of a password holding "/", "?" or "#".
            raise ValueError(
                f"cannot read host and port of {shown_url(value)!r}; "
                "percent-encode / ? # [ ] @ in a password"
            )
        return value

    @field_validator("redis_prefix", "topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError("use letters, digits, '-', '_' or '.' only")
        return value

    @field_validator("fm_context_features")
    @classmethod
    def _check_context_names(cls, value: str) -> str:
        # The same names /v1/select accepts as context keys (gateway.models).
        for name in value.split(",") if value.strip() else ():
            name = name.strip()
            if not 1 <= len(name) <= 64 or any(ord(c) < 0x20 for c in name):
                raise ValueError(
                    f"context feature {name!r} must be 1-64 characters, none a "
                    "control character"
                )
        return value

    def fm_context_names(self) -> frozenset[str]:
        """The names listed in ``fm_context_features`` (empty: any name)."""
        return frozenset(
            n.strip() for n in self.fm_context_features.split(",") if n.strip()
        )

    @field_validator("poster_aspects")
    @classmethod
    def _check_aspects(cls, value: str) -> str:
        # The pattern checked the W:H form; a zero side has no crop, and a
        # ratio past 10:1 leaves a strip too thin to be a poster.
        for aspect in value.split(","):
            width, height = (int(side) for side in aspect.split(":"))
            if width == 0 or height == 0:
                raise ValueError(f"aspect {aspect!r} has a zero side")
            if not 0.1 <= width / height <= 10:
                raise ValueError(f"aspect {aspect!r} is beyond 10:1 either way")
        return value

    @model_validator(mode="after")
    def _check_collect_skew(self) -> Settings:
        learner = self.max_clock_skew_s
        if self.collect_clock_skew_s <= learner:
            return self
        if "collect_clock_skew_s" in self.model_fields_set:
            raise ValueError(
                f"KEYART_COLLECT_CLOCK_SKEW_S: {self.collect_clock_skew_s:g} s is "
                f"more than KEYART_MAX_CLOCK_SKEW_S ({learner:g} s): the learner "
                "would dead-letter events the collector took"
            )
        # Only the learner's bound was lowered: the collector's default follows
        # it rather than stopping every process at start.
        object.__setattr__(self, "collect_clock_skew_s", learner)
        return self

    def topic(self, name: str) -> str:
        """Return the full topic name for a short name such as ``impressions``."""
        return f"{self.topic_prefix}.{name}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[Any, ...]:
        """The usual sources, but the file gives only the settings it names.

        pydantic-settings hands every other line of the file to the model,
        which ``extra="forbid"`` then refuses under a garbled name (the
        prefix twice); they are left out here, and :func:`load_settings` warns
        about each as it does for the environment.
        """

        def dotenv_fields() -> dict[str, Any]:
            values = dotenv_settings()
            return {name: values[name] for name in values if name in cls.model_fields}

        return init_settings, env_settings, dotenv_fields, file_secret_settings


def shown_value(name: str, value: object) -> str:
    """A setting's value as keyart prints it, without its secrets.

    A secret setting shows only whether it is set and how long it is; a URL
    is shown by :func:`shown_url`. Values are written as the README's table
    and the variables take them: an unset optional setting is ``unset``, an
    empty one ``(empty)``, a flag ``true`` or ``false``.

    Examples
    --------
    >>> shown_value("admin_token", "s3cret-value")
    'set (12 chars)'
    >>> shown_value("admin_token", "")
    '(empty)'
    >>> shown_value("redis_url", "redis://:hunter2@cache:6379/0")
    'redis://:***@cache:6379/0'
    >>> shown_value("ranker_path", None), shown_value("split_by_segment", False)
    ('unset', 'false')
    """
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)
    if not text:
        return "(empty)"
    if name in SECRET_SETTINGS:
        return f"set ({len(text)} chars)"
    return shown_url(text)


def shown_url(url: str) -> str:
    """``url`` as keyart logs, prints or puts in an error: all but its password,
    in the user part or in the query. Text that is not a URL is unchanged.

    Every URL that reaches a log line, an error, an HTTP answer or the
    terminal goes through this function.

    A password holding ``/``, ``?``, ``#`` or ``[`` that was not
    percent-encoded ends the host part early for :func:`urllib.parse.urlsplit`
    (or makes it fail), yet SQLAlchemy reads such a URL as meant: its password
    runs from the user's ``:`` to the next ``@``. That reading is masked too,
    so no URL shows a password however it is written.

    Examples
    --------
    >>> shown_url("postgresql://ana:pw@db/keyart?password=pw")
    'postgresql://ana:***@db/keyart?password=***'
    >>> shown_url("redis://127.0.0.1:6379/0")
    'redis://127.0.0.1:6379/0'
    >>> shown_url("postgresql://ana:p/w#1@db/keyart")
    'postgresql://ana:***@db/keyart'
    >>> shown_url("sqlite:////var/lib/keyart/catalog.db")
    'sqlite:////var/lib/keyart/catalog.db'
    """
    if "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    # SQLAlchemy's reading: a user without ":" or "/", then the password up to
    # the first "@".
    user, colon, after = rest.partition(":")
    if colon and "/" not in user and "@" not in user and "@" in after:
        rest = f"{user}:***@{after.partition('@')[2]}"
        url = f"{scheme}://{rest}"
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a host urlsplit refuses ("[" without "]")
        return url
    netloc, query = parts.netloc, parts.query
    if password not in (None, _MASK):
        user_info, _, host = netloc.rpartition("@")
        netloc = f"{user_info.partition(':')[0]}:***@{host}"
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(map(_secret_key, (key for key, _ in pairs))):
        masked = [(k, "***" if _secret_key(k) else v) for k, v in pairs]
        query = urlencode(masked, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Not geturl(): it drops the "//" of an empty host, so sqlite:////abs/path
    # would show as sqlite://abs/path, another file.
    query = f"?{query}" if query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{scheme}://{netloc}{parts.path}{query}{fragment}"


def _port_readable(url: str) -> bool:
    """Whether urlsplit, as redis-py does, reads a host and a port (or none)."""
    try:
        _ = urlsplit(url).port
    except ValueError:
        return False
    return True


def _secret_key(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_QUERY_WORDS)


def _names_variables(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        lines.append(f"{ENV_PREFIX}{field.upper()}: {item['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, the optional file, and ``overrides``.

    Raises
    ------
    SettingsError
        When a value is wrong; the message names each variable at fault.
    """
    _warn_unknown_variables(os.environ, None)
    env_file = os.environ.get(f"{ENV_PREFIX}ENV_FILE")
    if env_file and not Path(env_file).is_file():
        raise SettingsError(f"{ENV_PREFIX}ENV_FILE: no such file {env_file!r}")
    try:
        if env_file:
            _warn_unknown_variables(_env_file_names(env_file), env_file)
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as error:
        raise SettingsError(_names_variables(error)) from None
    except (OSError, UnicodeDecodeError) as error:  # the file, read by both
        reason = (
            f"not UTF-8 ({error.reason} at byte {error.start})"
            if isinstance(error, UnicodeDecodeError)
            else error.strerror or str(error)
        )
        raise SettingsError(
            f"{ENV_PREFIX}ENV_FILE: cannot read {env_file!r}: {reason}"
        ) from None


def _env_file_names(env_file: str) -> list[str]:
    """The names the lines of ``env_file`` set.

    Read with python-dotenv's parser, which says nothing of a line it cannot
    parse: pydantic-settings reads the file again and warns about that line,
    and a second warning here would print it twice.
    """
    with open(env_file, encoding="utf-8") as stream:
        return [b.key for b in parse_stream(stream) if b.key is not None]


_reported: set[tuple[str, str | None]] = set()


def _warn_unknown_variables(variables: Iterable[str], env_file: str | None) -> None:
    """Warn about each variable that names no setting, once per process.

    pydantic reads only the variables of its fields, so a misspelled one would
    be ignored without a word. In the environment only ``KEYART_`` variables
    are looked at; in ``env_file`` every line is, since the whole file is
    keyart's, and the warning names the file. The command's own variables
    (:data:`OTHER_VARIABLES`) are read from the environment only.
    """
    settings = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    known = settings | OTHER_VARIABLES
    where = f" in {env_file}" if env_file else ""
    for variable in sorted(variables):
        name = variable.upper()  # Settings match names ignoring case
        if env_file is None and not name.startswith(ENV_PREFIX):
            continue
        if name in settings or (name in known and env_file is None):
            continue
        if (name, env_file) in _reported:
            continue
        _reported.add((name, env_file))
        if name in known:
            reason = "is read from the environment only and is ignored here"
            hint = "set it in the environment"
        else:
            reason = "is not a keyart setting and is ignored"
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]}?" if close else ""
            hint = hint or "`keyart settings` lists the settings"
        logger.warning(
            "%s%s %s (%s)",
            variable,
            where,
            reason,
            hint,
            extra={"variable": variable, "env_file": env_file},
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process's settings, read once."""
    return load_settings()
