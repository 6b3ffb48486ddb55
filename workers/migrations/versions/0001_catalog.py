"""Catalog tables: videos, jobs and poster candidates.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "videos",
        sa.Column("video_id", sa.String(200), primary_key=True),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("cast", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "video_id",
            sa.String(200),
            sa.ForeignKey("videos.video_id"),
            nullable=False,
        ),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("events_sent", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=True),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.UniqueConstraint("video_id", "event_id", name="uq_job_event"),
    )
    op.create_index("ix_jobs_video_id", "jobs", ["video_id"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "candidates",
        sa.Column("poster_id", sa.String(64), primary_key=True),
        sa.Column(
            "video_id",
            sa.String(200),
            sa.ForeignKey("videos.video_id"),
            nullable=False,
        ),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.job_id"), nullable=False),
        sa.Column("aspect", sa.String(20), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("frame_index", sa.Integer, nullable=False),
        sa.Column("frame_time_s", sa.Float, nullable=False),
        sa.Column("shot", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("image_path", sa.Text, nullable=False),
        sa.Column("image_url", sa.Text, nullable=False),
        sa.Column("thumbnail_url", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("published", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("reviewed_at", sa.DateTime, nullable=True),
    )
    op.create_index("ix_candidates_video_id", "candidates", ["video_id"])
    op.create_index("ix_candidates_score", "candidates", ["score"])
    op.create_index("ix_candidates_status", "candidates", ["status"])


def downgrade() -> None:
    op.drop_table("candidates")
    op.drop_table("jobs")
    op.drop_table("videos")
