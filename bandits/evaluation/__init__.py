"""Experiments and evaluation: click-through reports, A/B decisions, OPE.

* :mod:`~bandits.evaluation.intervals`: Wilson, Agresti-Coull, delta-method
  and bootstrap intervals; Newcombe differences and log-ratio lifts.
* :mod:`~bandits.evaluation.ab`: z-test, P(B better), mSPRT, SRM, guardrails.
* :mod:`~bandits.evaluation.ope`: replay, IPS, SNIPS, DM and doubly robust.
* :mod:`~bandits.evaluation.logs`: keyart's Kafka logs and the Open Bandit
  sample as DataFrames.
* :mod:`~bandits.evaluation.reports`: tables by slice and the A/B report.
"""

from bandits.evaluation.ab import Comparison, SrmResult, compare, srm_check
from bandits.evaluation.feedback import LoggedBandit, impressions_to_bandit
from bandits.evaluation.intervals import Interval, wilson
from bandits.evaluation.logs import EventLogs, load_kafka_logs, load_obd
from bandits.evaluation.ope import OpeEstimate, evaluate, observed_value
from bandits.evaluation.reports import AbReport, ab_report, slice_table, variant_table

__all__ = [
    "AbReport",
    "Comparison",
    "EventLogs",
    "Interval",
    "LoggedBandit",
    "OpeEstimate",
    "SrmResult",
    "ab_report",
    "compare",
    "evaluate",
    "impressions_to_bandit",
    "load_kafka_logs",
    "load_obd",
    "observed_value",
    "slice_table",
    "srm_check",
    "variant_table",
    "wilson",
]
