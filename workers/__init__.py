"""keyart workers: poster candidates made from the video itself.

The steps, one module each:

- ``source``: open a video or photo, refuse bad input with a reason;
- ``frames``: shots (PySceneDetect), adaptive sampling, frame filters,
  near-duplicates (perceptual hash), the best frames per shot;
- ``detect``: faces (CenterFace ONNX, Haar fallback), smiles, people (HOG),
  text (PP-OCRv4 DB ONNX), spectral-residual saliency, letterbox bars;
- ``crop``: the crop search for each placement's aspect ratio;
- ``enhance``: conservative, measured enhancement;
- ``features`` and ``embed``: what the rankers and the bandits read;
- ``pipeline``: the steps above, from a file to scored candidates;
- ``store``, ``catalog``, ``jobs``: JPEG files, the SQL catalog (Alembic
  migrations in ``migrations/``) and once-in-effect job bookkeeping;
- ``validate``: the bounds a video-published event must meet before any
  database work (refused ones are dead-lettered with the reason);
- ``runner`` and ``worker``: one job end to end, and the Kafka consumer group
  (with ``/metrics``, ``/healthz``, ``/readyz``; the metrics in ``metrics``);
- ``review`` and ``review_api``: approval (which publishes a poster as an
  arm) from the CLI and over HTTP; ``cli``: ``keyart posters``.
"""
