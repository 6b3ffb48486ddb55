"""`keyart report` and `keyart evaluate`: click-through reports and OPE.

Both read keyart's own logs from Kafka (`--source kafka`, the topics under
`KEYART_TOPIC_PREFIX` at `KEYART_KAFKA_BOOTSTRAP`) or the Open Bandit
Dataset sample (`--source obd`, fetched from the package registry).
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

__all__ = ["register"]

SLICE_ALIASES = {"video": "video_id", "poster": "poster_id", "user": "user_id"}
POLICY_NAMES = ("uniform", "logging", "greedy", "epsilon-greedy")


def register(app: typer.Typer) -> None:
    """Add `report` and `evaluate` to the keyart command."""

    @app.command("report")
    def report(
        source: str = typer.Option("kafka", help="kafka (keyart's topics) or obd."),
        obd: str = typer.Option(
            "random", help="Open Bandit file: random, bts or both."
        ),
        by: str = typer.Option(
            "variant",
            help="Slices, comma separated: variant, placement, video, poster, "
            "policy, segment.",
        ),
        since: str = typer.Option(
            None, help="Start (ISO 8601 or epoch ms), inclusive."
        ),
        until: str = typer.Option(None, help="End (ISO 8601 or epoch ms), exclusive."),
        ctr_interval: str = typer.Option(
            "wilson", help="CTR interval: wilson, delta or bootstrap (by user)."
        ),
        uctr_interval: str = typer.Option(
            "wilson", help="UCTR interval: wilson, delta or bootstrap."
        ),
        ab: bool = typer.Option(False, "--ab", help="Add the A/B comparison."),
        control: str = typer.Option(None, help="Control variant (else all pairs)."),
        metric: str = typer.Option("ctr", help="A/B metric: ctr or uctr."),
        split: str = typer.Option(
            None,
            help="Configured split for the SRM check, e.g. A=0.5,B=0.5; 'stored'"
            " reads the gateway's experiment document from Redis; default equal.",
        ),
        latency_p99: str = typer.Option(
            None, help="Measured p99 latency per variant in ms, e.g. A=12,B=15."
        ),
        csv: Path = typer.Option(None, help="Write the table as CSV ('-': stdout)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        seed: int = typer.Option(0, help="Seed of bootstraps and Monte Carlo."),
    ) -> None:
        """Impressions, clicks, CTR and UCTR with 95% intervals, by slice.

        Examples: `keyart report --by variant,placement --since 2026-01-01`,
        `keyart report --ab --control control --split control=0.1,ts=0.9`,
        `keyart report --source obd --by placement --json`.
        """
        from bandits.evaluation import _cli as io
        from bandits.evaluation.reports import ab_report, slice_table

        columns = [
            SLICE_ALIASES.get(c.strip(), c.strip()) for c in by.split(",") if c.strip()
        ]
        logs = io.load(source, obd, since, until)
        impressions = logs.impressions
        if not len(impressions):
            raise io.fail(
                f"no impressions in {logs.source} for the chosen time range", 1
            )
        try:
            table = slice_table(
                impressions,
                columns,
                ctr_method=ctr_interval,
                uctr_method=uctr_interval,
                seed=seed,
            )
            result = (
                ab_report(
                    impressions,
                    logs.decisions,
                    control,
                    metric,
                    io.split_shares(split),
                    io.parse_mapping(latency_p99, "--latency-p99"),
                    seed=seed,
                )
                if ab
                else None
            )
        except ValueError as error:
            raise io.fail(str(error)) from None
        if csv is not None:
            io.write_csv(table, csv)
        if as_json:
            payload = {
                "source": logs.source,
                "by": columns,
                "rows": table.to_dict("records"),
            }
            if result is not None:
                payload["ab"] = result.to_dict()
            typer.echo(io.dumps(payload))
            return
        if csv is not None and str(csv) == "-":
            return
        io.print_table(
            table, f"{logs.source}: clicks by {', '.join(columns)} (95% intervals)"
        )
        if result is not None:
            keep = [
                "a",
                "b",
                "rate_a",
                "rate_b",
                "difference",
                "difference_low",
                "difference_high",
                "lift",
                "lift_low",
                "lift_high",
                "p_value",
                "prob_b_better",
                "always_valid_p",
            ]
            if len(result.comparisons):
                io.print_table(
                    result.comparisons[keep], f"A/B on {metric}: b against a"
                )
            else:
                typer.echo("A/B: only one variant in the log, nothing to compare")
            if result.srm is not None:
                typer.echo(result.srm.message())
            for guard in result.guardrails:
                state = "ok" if guard.ok else "BREACHED"
                typer.echo(
                    f"guardrail {guard.variant} {guard.name} = {guard.value:.4g}"
                    f" (limit {guard.limit:.4g}) {state}"
                )
            for line in result.warnings:
                typer.secho("warning: " + line, fg="yellow")
            for line in result.notes:
                typer.echo("note: " + line)

    @app.command("evaluate")
    def evaluate(
        source: str = typer.Option("kafka", help="kafka (keyart's topics) or obd."),
        obd: str = typer.Option(
            "random", help="Open Bandit file: random, bts or both."
        ),
        policies: str = typer.Option(
            ",".join(POLICY_NAMES), help="Target policies, comma separated."
        ),
        estimators: str = typer.Option(
            "replay,ips,snips,dr",
            help="Estimators, comma separated: replay, ips, snips, dm, dr.",
        ),
        epsilon: float = typer.Option(0.1, help="Exploration of epsilon-greedy."),
        clip: float = typer.Option(math.inf, help="Largest importance weight."),
        reward_model: str = typer.Option(
            "action_mean", help="DR reward model: action_mean or logistic."
        ),
        folds: int = typer.Option(2, help="Cross-fitting folds of the reward model."),
        bootstrap: int = typer.Option(200, help="Bootstrap resamples (0: none)."),
        train_share: float = typer.Option(
            0.5, help="Earliest share of the log that fits greedy policies."
        ),
        since: str = typer.Option(None, help="Start (ISO 8601 or epoch ms)."),
        until: str = typer.Option(None, help="End (ISO 8601 or epoch ms)."),
        csv: Path = typer.Option(None, help="Write the table as CSV ('-': stdout)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        variant: str = typer.Option(
            None, help="Only these logged variants, comma separated."
        ),
        video: str = typer.Option(None, help="Only these videos, comma separated."),
        seed: int = typer.Option(0, help="Seed of folds, replay draws, bootstraps."),
    ) -> None:
        """Off-policy estimates of target policies' CTR from logged propensities.

        Greedy policies are fitted on the earliest `--train-share` of the log;
        every policy is evaluated on the rest. `--variant` and `--video`
        restrict the log (a variant's own propensities describe one logger).
        Examples: `keyart evaluate --source obd --clip 50`,
        `keyart evaluate --policies uniform,greedy --estimators ips,dr --json`.
        """
        import numpy as np

        from bandits.evaluation import _cli as io
        from bandits.evaluation.feedback import impressions_to_bandit
        from bandits.evaluation.ope import evaluate as run_ope
        from bandits.evaluation.ope import (
            few_clicks_warning,
            observed_value,
            support_warning,
        )
        from bandits.evaluation.targets import (
            EpsilonGreedyPolicy,
            GreedyPolicy,
            LoggingPolicy,
            TargetPolicy,
            UniformPolicy,
        )

        names = [p.strip() for p in policies.split(",") if p.strip()]
        unknown = set(names) - set(POLICY_NAMES)
        if unknown:
            raise io.fail(
                f"--policies: unknown {sorted(unknown)}; known {POLICY_NAMES}"
            )
        if not 0 < train_share < 1:
            raise io.fail(f"--train-share must lie in (0, 1), got {train_share}")
        logs = io.load(source, obd, since, until)
        impressions = logs.impressions.sort_values("event_time", kind="stable")
        for column, wanted in (("variant", variant), ("video_id", video)):
            if wanted:
                keep = {w.strip() for w in wanted.split(",")}
                impressions = impressions.loc[
                    impressions[column].astype(str).isin(keep)
                ]
        if len(impressions) < 4:
            raise io.fail(f"too few impressions in {logs.source} to evaluate", 1)
        candidates = [str(i) for i in range(80)] if source == "obd" else None
        try:
            log = impressions_to_bandit(
                impressions.reset_index(drop=True),
                logs.decisions,
                candidates,
                logs.source,
            )
        except ValueError as error:
            raise io.fail(f"{logs.source}: {error}", 1) from None
        cut = int(log.n * train_share)
        train = log.subset(np.arange(log.n) < cut)
        test = log.subset(np.arange(log.n) >= cut)
        greedy = GreedyPolicy.fit(train)
        catalogue: dict[str, TargetPolicy] = {
            "uniform": UniformPolicy(),
            "logging": LoggingPolicy(),
            "greedy": greedy,
            "epsilon-greedy": EpsilonGreedyPolicy(greedy, epsilon),
        }
        try:
            table = run_ope(
                test,
                [catalogue[n] for n in names],
                [e.strip() for e in estimators.split(",") if e.strip()],
                clip=clip,
                reward_model=reward_model,
                folds=folds,
                bootstrap=bootstrap,
                seed=seed,
            )
        except ValueError as error:
            raise io.fail(str(error)) from None
        seen = observed_value(test)
        cautions = []
        for row in table.loc[table["estimator"] == "ips"].itertuples():
            text = support_warning(
                str(row.policy),
                float(row.mean_weight),
                float(row.weight_se),
                float(row.clipped_share),
            )
            if text is not None:
                cautions.append(text)
            text = few_clicks_warning(str(row.policy), float(row.ess), seen.estimate)
            if text is not None:
                cautions.append(text)
        if csv is not None:
            io.write_csv(table, csv)
        if as_json:
            payload = {
                "source": logs.source,
                "train": train.n,
                "evaluated": test.n,
                "observed": seen.as_dict(),
                "warnings": cautions,
                "estimates": table.to_dict("records"),
            }
            typer.echo(io.dumps(payload))
            return
        if csv is not None and str(csv) == "-":
            return
        typer.echo(
            f"{logs.source}: fitted on {train.n} decisions, evaluated on {test.n};"
            f" observed CTR {seen.estimate:.5f} [{seen.low:.5f}, {seen.high:.5f}]"
        )
        io.print_table(table, "off-policy estimates (95% intervals)")
        for text in cautions:
            typer.secho("warning: " + text, fg="yellow")
