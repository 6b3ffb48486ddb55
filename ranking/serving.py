"""Score the recalled candidates with an exported click model, never failing a request.

The gateway loads the model named by ``KEYART_RANKER_PATH`` once with
:meth:`Ranker.load`. A missing, unreadable or foreign file gives ``None``, a
WARNING log and ``keyart_ranker_unavailable`` = 1: the gateway then serves
with its bandits alone. A loaded ranker scores one request's candidates with
one onnxruntime run on one thread (the feature matrix is built with numpy from
the same :class:`ranking.features.FeatureSpec` the model was trained with).

Its scores serve twice: as a prior for arms with few impressions
(:func:`prior_pseudo_counts`, Beta pseudo-counts for Thompson sampling) and
as a re-ranking score. ``Ranker.version`` names the model on each decision
(``Ranker.version_number`` fits the decision's ``model_version`` long).

Examples
--------
>>> Ranker.load("/nonexistent/ranker.onnx") is None
True
>>> prior_pseudo_counts(0.1, 50.0)
(5.0, 45.0)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from prometheus_client import Counter, Gauge

from ranking.export import INPUT_NAME, OUTPUT_NAME, version_number
from ranking.features import FeatureSpec

__all__ = ["RANKER_ERRORS", "RANKER_UNAVAILABLE", "Ranker", "prior_pseudo_counts"]
__all__ += ["session_for"]

logger = logging.getLogger("ranking")

# Each gateway worker loads its own ranker. "livemax": the largest value among
# the running workers, so 1 while any of them serves without the ranker; a
# stopped worker's value is dropped.
RANKER_UNAVAILABLE = Gauge(
    "keyart_ranker_unavailable",
    "1 when the configured ranker could not be loaded and requests are served "
    "without it; 0 when a ranker is loaded.",
    multiprocess_mode="livemax",
)
RANKER_ERRORS = Counter(
    "keyart_ranker_errors",
    "Ranker predictions that failed; each request was served without the ranker.",
)


def session_for(model: bytes | str) -> ort.InferenceSession:
    """An onnxruntime session tuned for small batches: one thread, sequential."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(
        model, sess_options=options, providers=["CPUExecutionProvider"]
    )


def prior_pseudo_counts(probability: float, strength: float) -> tuple[float, float]:
    """Beta pseudo-counts ``(p m, (1 - p) m)`` worth ``m`` impressions at rate p."""
    p = min(max(float(probability), 1e-6), 1.0 - 1e-6)
    return p * strength, (1.0 - p) * strength


class Ranker:
    """An exported click model ready to score candidates.

    Build it with :meth:`load`. ``predict`` raises on malformed candidates;
    ``try_predict`` is the request-path form, which returns ``None`` instead
    and counts the failure in ``keyart_ranker_errors_total``.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        spec: FeatureSpec,
        version: str,
        kind: str,
        path: Path,
    ) -> None:
        self.session = session
        self.spec = spec
        self.version = version
        self.version_number = version_number(version)
        self.kind = kind
        self.path = path

    @classmethod
    def load(cls, path: Path | str | None) -> Ranker | None:
        """Load the model at ``path``; ``None`` (and a warning) when it cannot be.

        ``None`` for ``path`` means no ranker is configured: no warning, and
        ``keyart_ranker_unavailable`` stays 0.
        """
        if path is None:
            RANKER_UNAVAILABLE.set(0)
            return None
        path = Path(path)
        try:
            session = session_for(path.read_bytes())
            meta = session.get_modelmeta().custom_metadata_map
            spec = FeatureSpec.from_json(meta["keyart.spec"])
            version, kind = meta["keyart.version"], meta["keyart.model"]
            version_number(version)
            inputs = [i.name for i in session.get_inputs()]
            outputs = [o.name for o in session.get_outputs()]
            width = session.get_inputs()[0].shape[1]
            if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
                raise ValueError(f"graph takes {inputs} and gives {outputs}")
            if width != spec.n_features:
                raise ValueError(
                    f"graph wants {width} features, its spec names {spec.n_features}"
                )
        except Exception as error:  # any bad file means: serve without
            RANKER_UNAVAILABLE.set(1)
            logger.warning(
                "ranker unavailable, serving without it: %s: %s",
                path,
                error,
                extra={"ranker_path": str(path)},
            )
            return None
        RANKER_UNAVAILABLE.set(0)
        logger.info(
            "ranker %s loaded from %s", version, path, extra={"ranker_version": version}
        )
        return cls(session, spec, version, kind, path)

    def predict(
        self,
        context: Mapping[str, float],
        posters: Sequence[Mapping[str, object]],
        placement: str = "",
    ) -> np.ndarray:
        """Click probability of each candidate for this user, shape ``(n,)``.

        Each poster mapping may carry ``features`` (poster features),
        ``impressions`` and ``clicks`` (the arm's all-time counts), and
        ``video_id`` (see :meth:`FeatureSpec.serving_matrix`).

        Raises
        ------
        ValueError, TypeError
            When a feature value is not a number.
        """
        return self._run(self.spec.serving_matrix(context, posters, placement))

    def _run(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        return np.asarray(out, dtype=np.float64).reshape(len(x))

    def _failed(self, error: Exception) -> None:
        RANKER_ERRORS.inc()
        logger.warning(
            "ranker %s failed, serving without it: %s",
            self.version,
            error,
            extra={"ranker_version": self.version},
        )

    def prior(
        self,
        context: Mapping[str, float],
        posters: Sequence[Mapping[str, object]],
        placement: str = "",
        strength: float = 20.0,
        step: float = 0.5,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Beta pseudo-counts ``(p m, (1 - p) m)`` per candidate, or ``None``.

        ``p`` is the ranker's prediction with the arm's own impressions and
        clicks set to zero: the bandit's posterior adds those counts to the
        prior, and a prior that had seen them already would count every click
        twice. The video's counts stay (summed over the candidates of the
        same video unless given). Never raises, like :meth:`try_predict`.

        The pseudo-clicks are rounded to multiples of ``step`` (at least one
        step), and the pseudo-misses are the rest of ``strength``: the
        gateway's Beta sampler caches Gamma quantiles per shape, and shapes
        that differ in every request would rebuild them each time (seconds per
        request). ``step=0`` keeps them exact.

        Examples
        --------
        With a loaded ranker ``r``, Thompson sampling draws each candidate
        from ``Beta(alpha + clicks, beta + impressions - clicks)``, where
        ``alpha, beta = r.prior(context, candidates, "home", strength=20.0)``.
        """
        try:
            counts = self.spec.serving_counts(posters)
            counts[:, :2] = 0.0
            x = self.spec.serving_matrix(context, posters, placement, counts)
            p = self._run(x)
        except Exception as error:  # a request never fails on the ranker
            self._failed(error)
            return None
        alpha = np.clip(p, 1e-6, 1.0 - 1e-6) * strength
        if step > 0:
            alpha = np.clip(np.round(alpha / step) * step, step, strength - step)
        return alpha, strength - alpha

    def try_predict(
        self,
        context: Mapping[str, float],
        posters: Sequence[Mapping[str, object]],
        placement: str = "",
    ) -> np.ndarray | None:
        """:meth:`predict` for the request path: ``None`` instead of an error."""
        try:
            return self.predict(context, posters, placement)
        except Exception as error:  # a request never fails on the ranker
            self._failed(error)
            return None
