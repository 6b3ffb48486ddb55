"""`keyart train MODEL`: train the offline click models and compare them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import pandas as pd

    from keyart.settings import Settings

__all__ = ["register"]

SOURCE_HELP = (
    "Where the logs come from: 'kafka' (the impressions and clicks topics), "
    "'synthetic' (seeded logs of a hidden click model), or a folder holding "
    "impressions.parquet, clicks.parquet and optionally catalog.parquet."
)


def _load_logs(
    source: str, rows: int, seed: int, catalog: Path | None, settings: Settings
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    import pandas as pd

    catalog_frame = pd.read_parquet(catalog) if catalog is not None else None
    if source == "synthetic":
        from ranking.synthetic import simulate_logs

        logs = simulate_logs(rows, seed=seed)
        return logs.impressions, logs.clicks, logs.catalog
    if source == "kafka":
        from rich.progress import Progress

        from bandits.evaluation.logs import LogReadError, load_kafka_logs

        with Progress(transient=True) as progress:
            task = progress.add_task("reading the event topics", total=None)
            try:
                events = load_kafka_logs(
                    settings, on_progress=lambda n: progress.advance(task, n)
                )
            except LogReadError as error:
                typer.secho(f"keyart train: {error}", fg="red", err=True)
                raise typer.Exit(1) from None
        return events.impressions, events.clicks, catalog_frame
    folder = Path(source)
    if not folder.is_dir():
        typer.secho(
            f"keyart train: --source {source!r} is neither 'kafka', 'synthetic' "
            "nor a folder",
            fg="red",
            err=True,
        )
        raise typer.Exit(2)
    found = {}
    for name in ("impressions", "clicks", "catalog"):
        path = folder / f"{name}.parquet"
        if path.is_file():
            found[name] = pd.read_parquet(path)
        elif name != "catalog":
            typer.secho(f"keyart train: {path} is missing", fg="red", err=True)
            raise typer.Exit(2)
    return (
        found["impressions"],
        found["clicks"],
        found.get("catalog", catalog_frame),
    )


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        model: str = typer.Argument(..., help="lr, gbdt, fm, deepfm or all."),
        source: str = typer.Option("kafka", "--source", help=SOURCE_HELP),
        out: Path = typer.Option(
            Path("var/ranking"), "--out", help="Folder for <model>.onnx files."
        ),
        rows: int = typer.Option(
            20_000, "--rows", min=100, help="Impressions of --source synthetic."
        ),
        catalog: Path | None = typer.Option(
            None, "--catalog", help="Parquet poster catalog (poster_id, features)."
        ),
        valid_fraction: float = typer.Option(
            0.2, "--valid-fraction", help="Last share of impressions held out."
        ),
        seed: int | None = typer.Option(None, "--seed", help="Default: KEYART_SEED."),
        online: bool = typer.Option(
            True, "--online/--no-online", help="Compare with the online models."
        ),
    ) -> None:
        """Train offline click models, export them to ONNX and compare them.

        Example: `keyart train all --source synthetic --rows 20000` then
        `export KEYART_RANKER_PATH=var/ranking/gbdt.onnx`.
        """
        from rich.console import Console

        from keyart.cli import settings_for_cli
        from ranking.dataset import build_training_set
        from ranking.evaluate import comparison_table, reliability_rich
        from ranking.models import MODEL_KINDS, TorchMissingError, model_class
        from ranking.train import evaluate_online, train_model, write_outputs

        kinds = list(MODEL_KINDS) if model == "all" else [model]
        if any(k not in MODEL_KINDS for k in kinds):
            typer.secho(
                f"keyart train: unknown MODEL {model!r}; choose one of "
                f"{', '.join(MODEL_KINDS)} or all",
                fg="red",
                err=True,
            )
            raise typer.Exit(2)
        console = Console()
        settings = settings_for_cli()
        seed_value = seed if seed is not None else settings.seed
        impressions, clicks, catalog_frame = _load_logs(
            source, rows, seed_value, catalog, settings
        )
        try:
            ts = build_training_set(
                impressions,
                clicks,
                catalog_frame,
                attribution_window_s=settings.attribution_window_s,
                valid_fraction=valid_fraction,
            )
        except ValueError as error:
            typer.secho(f"keyart train: {error}", fg="red", err=True)
            raise typer.Exit(1) from None
        console.print(
            f"{len(ts.train)} training and {len(ts.valid)} held-out impressions, "
            f"{ts.spec.n_features} features"
        )
        trained, skipped = [], []
        with console.status("training") as status:
            for kind in kinds:
                status.update(f"training {kind}")
                try:
                    model_class(kind)
                except TorchMissingError as error:
                    if model != "all":
                        typer.secho(f"keyart train: {error}", fg="red", err=True)
                        raise typer.Exit(2) from None
                    skipped.append(f"{kind}: {error}")
                    continue
                trained.append(train_model(kind, ts, seed=seed_value))
            status.update("replaying the online models")
            online_evals = (
                evaluate_online(
                    ts, settings.prior_alpha, settings.prior_beta, seed=seed_value
                )
                if online
                else []
            )
        paths = write_outputs(out, trained, online_evals)
        console.print(
            comparison_table(
                [t.evaluation for t in trained] + online_evals,
                title=f"held-out period: last {valid_fraction:.0%} of impressions",
            )
        )
        for t in trained:
            console.print(
                f"{t.kind:7} {t.version}  {paths[t.kind]}  "
                f"ONNX vs in-process max error {t.onnx_max_error:.1e}"
            )
        for line in skipped:
            console.print(f"[yellow]skipped {line}[/yellow]")
        if trained:
            best = min(trained, key=lambda t: t.evaluation.log_loss)
            console.print(reliability_rich(best.evaluation))
            console.print(
                f"lowest log loss: {best.kind}; serve it with "
                f"KEYART_RANKER_PATH={paths[best.kind]}"
            )
        console.print(f"evaluation written to {paths['evaluation']}")
