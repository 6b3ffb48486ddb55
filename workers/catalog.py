"""The poster catalog: videos, jobs and candidates in one SQL database.

SQLite by default (``KEYART_DATABASE_URL=sqlite:///var/catalog.db``; the
folder is created), PostgreSQL in production. The schema is owned by Alembic
(``workers/migrations``): :func:`upgrade` brings a database to the newest
revision and :class:`Catalog` calls it at start.

Tables
------
``videos``      one row per video id: title, uri, kind, cast, tags.
``jobs``        one row per (video id, event id): ``status`` is ``running``,
                ``done`` or ``failed``; ``reason`` says why it failed;
                ``attempts`` counts the starts; ``events_sent`` records that
                its candidate events reached Kafka.
``candidates``  one row per poster: aspect, size, frame, score, ``features``
                (JSON numbers), ``tags``, ``details`` (JSON), ``embedding``
                (float32 bytes), image path, image and thumbnail URLs, ``status``
                (``pending_review``, ``approved``, ``rejected``), reviewer,
                reason, ``placements`` (empty: every placement of its aspect;
                else the only ones a reviewer allowed) and timestamps.

Examples
--------
>>> from workers.catalog import Catalog
>>> catalog = Catalog("sqlite:///:memory:")  # doctest: +SKIP
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = [
    "CANDIDATE_STATUSES",
    "Base",
    "CandidateRow",
    "Catalog",
    "JobRow",
    "VideoRow",
    "make_engine",
    "refused_by_database",
    "upgrade",
]

CANDIDATE_STATUSES = ("pending_review", "approved", "rejected")
MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of the catalog tables."""


class VideoRow(Base):
    __tablename__ = "videos"

    video_id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(500), default="")
    uri: Mapped[str] = mapped_column(sa.Text, default="")
    kind: Mapped[str] = mapped_column(sa.String(20), default="other")
    cast: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime, default=utcnow, onupdate=utcnow
    )


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (sa.UniqueConstraint("video_id", "event_id", name="uq_job_event"),)

    job_id: Mapped[int] = mapped_column(
        sa.Integer, primary_key=True, autoincrement=True
    )
    video_id: Mapped[str] = mapped_column(
        sa.String(200), sa.ForeignKey("videos.video_id"), index=True
    )
    event_id: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(20), default="running", index=True)
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    worker: Mapped[str] = mapped_column(sa.String(200), default="")
    events_sent: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(sa.DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime, nullable=True)


class CandidateRow(Base):
    __tablename__ = "candidates"

    poster_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    video_id: Mapped[str] = mapped_column(
        sa.String(200), sa.ForeignKey("videos.video_id"), index=True
    )
    job_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("jobs.job_id"))
    aspect: Mapped[str] = mapped_column(sa.String(20))
    width: Mapped[int] = mapped_column(sa.Integer)
    height: Mapped[int] = mapped_column(sa.Integer)
    frame_index: Mapped[int] = mapped_column(sa.Integer)
    frame_time_s: Mapped[float] = mapped_column(sa.Float)
    shot: Mapped[int] = mapped_column(sa.Integer)
    score: Mapped[float] = mapped_column(sa.Float, index=True)
    features: Mapped[dict[str, float]] = mapped_column(sa.JSON, default=dict)
    tags: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    embedding: Mapped[bytes] = mapped_column(sa.LargeBinary, default=b"")
    image_path: Mapped[str] = mapped_column(sa.Text)
    image_url: Mapped[str] = mapped_column(sa.Text)
    thumbnail_url: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[str] = mapped_column(
        sa.String(20), default="pending_review", index=True
    )
    reviewer: Mapped[str] = mapped_column(sa.String(200), default="")
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    placements: Mapped[list[str]] = mapped_column(
        sa.JSON, default=list, server_default="[]"
    )
    published: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime, default=utcnow)
    reviewed_at: Mapped[datetime | None] = mapped_column(sa.DateTime, nullable=True)

    def embedding_vector(self) -> list[float]:
        """The embedding as floats (empty when none was stored)."""
        return np.frombuffer(self.embedding or b"", dtype=np.float32).tolist()


def make_engine(database_url: str) -> sa.Engine:
    """An engine; for SQLite the folder is created and writers wait, not fail.

    SQLite gets WAL journaling and a 30 s busy timeout, so several worker
    processes and a reviewer can share one file.
    """
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection: Any, record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def refused_by_database(error: BaseException) -> str | None:
    """Why the database refused a record's values, or None for other errors.

    A value the database cannot store (``DataError``: too long, a NUL byte,
    out of range), a broken constraint (``IntegrityError``) or a value the
    driver could not even bind fails the same way on every retry: the job is
    failed and the message dead-lettered. Anything else (connection lost, a
    missing table while the database is being restored) may pass later and
    is retried.
    """
    if getattr(error, "connection_invalidated", False):
        return None
    data = (sa.exc.DataError, sa.exc.IntegrityError)
    binding = isinstance(error, sa.exc.StatementError) and not isinstance(
        error, sa.exc.DBAPIError
    )
    if not isinstance(error, data) and not binding:
        return None
    cause = getattr(error, "orig", None) or error
    text = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {text}"


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Run the Alembic migrations on ``engine`` up to ``revision``."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


class Catalog:
    """Sessions on the catalog database, migrated at start.

    Parameters
    ----------
    database_url
        SQLAlchemy URL (``settings.database_url``).
    migrate
        Run the migrations first (the default; a worker's start does).
    """

    def __init__(self, database_url: str, migrate: bool = True) -> None:
        self.engine = make_engine(database_url)
        if migrate:
            upgrade(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        """A new ORM session (use as a context manager)."""
        return self.sessions()

    def close(self) -> None:
        """Release the engine's connections."""
        self.engine.dispose()
