"""keyart gateway: pick each user's poster per title, and collect what was shown.

Where things live:

- ``app``: the FastAPI application (``create_app(settings)``) and its routes;
- ``service``: one select request end to end (Redis read, fallback, tokens,
  decision log);
- ``state``: the one-round-trip row read and the poster metadata cache;
- ``decide``: recall, rules, policy choice and propensity for a whole row;
- ``rules``, ``retirement``: the business rules;
- ``scoring``: the shared policies fed with the learner's models;
- ``experiments``, ``config``: the versioned traffic split and rule settings;
- ``token``: signed impression tokens;
- ``collector``: ``POST /v1/events`` into Kafka; ``broker``: its producer;
- ``decision_log``: the child process that produces every decision record;
- ``fallback``: answers without Redis; ``admin``: administrative routes;
- ``placements``, ``models``, ``metrics``: slots, HTTP bodies, Prometheus.
"""
