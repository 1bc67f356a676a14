"""Coordinator settings: defaults here, overridden by ``GRID_*`` environment variables.

``GRID_DATABASE_URL`` (PostgreSQL; default: the embedded default's private cluster, on a Unix
socket under ``GRID_DATA_DIR``), ``GRID_SECRET_KEY`` (node secrets derive from
it), ``GRID_REVENUE_SPLIT`` (a JSON object of share name to decimal string)… Broker and queue settings live in
``celeryconfig.py``, shared with the volunteers.
"""

from __future__ import annotations

import celeryconfig

#: The embedded default's private PostgreSQL (``manage.py demo`` starts it; app.servers).
EMBEDDED_POSTGRES_DIR = celeryconfig.DATA_DIR / "postgres"
EMBEDDED_DATABASE = "grid"
_socket_dir = celeryconfig.unix_socket_path(EMBEDDED_POSTGRES_DIR, ".s.PGSQL.5432").parent
EMBEDDED_DATABASE_URL = f"postgresql+psycopg2://grid@/{EMBEDDED_DATABASE}?host={_socket_dir}&port=5432"


class Defaults:
    DATABASE_URL = EMBEDDED_DATABASE_URL
    #: How a job's cost is split (seed ADR-0001). Strings: money is never a float.
    REVENUE_SPLIT = {"cooperative": "0.80", "solidarity_fund": "0.20"}
    #: The coordinator's key; node secrets are derived from it. Unset: a key kept in var/.
    SECRET_KEY = None
    #: The largest LLM model file the cooperative runs: a node claiming a bigger one (for a
    #: higher reference cost per token) is capped as if it ran this one.
    LLM_MODEL_MAX_BYTES = 8 * 1024**3
    #: Uploads larger than this are refused with 413 before they are read.
    MAX_CONTENT_LENGTH = celeryconfig.MAX_DOCUMENT_BYTES + 1024 * 1024
    JOBS_PER_PAGE_MAX = 100
    #: Jobs one ``POST /api/v1/jobs/batch`` may hold (more: 400 ``too_many_jobs``), and the most
    #: bytes its JSON body may have (more: 413 ``batch_too_large``, read no further): each job
    #: counts against the token's submission limit (API_SUBMIT_LIMIT), its texts bounded as a
    #: single job's.
    JOBS_BATCH_MAX = 100
    JOBS_BATCH_MAX_BYTES = 4 * 1024 * 1024
    #: Nodes per page of ``GET /api/v1/nodes`` by default, and at most (``?per_page=``): a
    #: thousand nodes' descriptions are about a megabyte.
    NODES_PER_PAGE = 100
    NODES_PER_PAGE_MAX = 1000
    #: The API's address as volunteers reach it: their workers fetch task inputs there.
    PUBLIC_URL = "http://127.0.0.1:5000"
    #: Nodes a participant may enrol through the API (operators are not limited).
    NODES_PER_PARTICIPANT = 5
    JSON_SORT_KEYS = False
    #: Seconds a process of the API keeps the grid's figures it computed for ``/metrics``
    #: (app.metrics): each scrape within them is answered without a query.
    METRICS_CACHE_SECONDS = 5
    #: When set, ``/metrics`` answers only ``Authorization: Bearer <this>`` (Prometheus's
    #: ``authorization.credentials_file``): its figures name nodes and count euros.
    METRICS_TOKEN = None
    #: Records a ledger worker takes off the ``ledger`` queue at once and enters in one
    #: transaction (app.ledger.intake, docs/decisions/0006); several ledger workers share the queue
    #: batch by batch.
    LEDGER_BATCH = 1000
    #: Seconds a client is told to wait (``Retry-After``) when PostgreSQL or Redis is away (503).
    RETRY_AFTER_SECONDS = 5
    #: Seconds the API waits for PostgreSQL to accept a connection before it answers 503.
    DATABASE_CONNECT_TIMEOUT = 5
    #: Seconds the API waits for the next piece of a request body before it answers 408
    #: (``app.request_body``): a client that stops sending holds no thread for longer.
    REQUEST_BODY_TIMEOUT = 30
    # Results checked by re-running them on other nodes (app.validation, docs/decisions/0011).
    #: Off only for a grid of machines that are all the operator's own (one node cannot check
    #: another): every result is then taken as it comes and paid at once.
    VALIDATION = True
    #: Validated results in a row after which a node is trusted (every result re-run before).
    VALIDATION_PROBATION_RESULTS = 10
    #: A trusted node's result is re-run with probability max(1 / results in a row, floor).
    VALIDATION_SPOT_CHECK_FLOOR = 0.05
    #: Largest normalised character distance at which two OCR texts of a page agree. Measured
    #: (bench/agreement.py): honest re-runs with another SIMD path or thread count give the very
    #: same text; another renderer or resolution differs by up to 0.005 on born-digital pages;
    #: a node that replaces 10 % of the words is 0.07 away, an empty or invented text 0.62 and
    #: more (docs/decisions/0011).
    VALIDATION_OCR_MAX_DISTANCE = 0.02
    #: Once no more replicas are asked for, OCR texts this close still agree: honest re-runs of
    #: noisy scans with another renderer or resolution differ by up to 0.29; invented text,
    #: another page's or none is 0.62 and more away.
    VALIDATION_OCR_NOISE_DISTANCE = 0.45
    #: The same for summaries and translations: 0, the same text (greedy decoding of one model
    #: file gave byte-identical outputs across thread counts, batch sizes and processes) …
    VALIDATION_LLM_MAX_DISTANCE = 0.0
    #: … and, once no more replicas are asked for, 0.5: machines of other CPU families may
    #: break a near-tie differently (not measurable here); an invented text is 0.8 away.
    VALIDATION_LLM_NOISE_DISTANCE = 0.5
    #: Replicas asked for at most per result (two: three results give a majority).
    VALIDATION_MAX_REPLICAS = 2
    #: A node with this many invalid results within the window is paused until an operator
    #: resumes it.
    SUSPICION_INVALID_RESULTS = 3
    SUSPICION_WINDOW_HOURS = 24
    # CO₂ (app.carbon, docs/decisions/0013): a node's energy is its metered seconds at its
    # hardware class's power; grams are that energy at the electricity's carbon intensity.
    #: Watts a whole machine of each class draws while it works (a class a node claims is taken
    #: only if it is in this table; anything else counts at the table's highest figure).
    CO2_WATTS_BY_HARDWARE_CLASS = {"raspberry-pi": "8", "laptop": "30", "mac-mini": "40", "desktop": "120"}
    #: Grams of CO₂ per kWh of the volunteers' electricity (Belgium's grid: about 165 in 2022–23).
    CO2_GRID_G_PER_KWH = "170"
    #: What the seed counts for one request served by a cloud GPU, in grams of CO₂.
    CO2_CLOUD_G_PER_REQUEST = "500"
    #: A model file at most this large is ``edge_compatible`` (``GET /api/v1/models``): it fits,
    #: with the worker's overhead, in an 8 GB Raspberry Pi's share of RAM (workers.preflight).
    EDGE_MODEL_MAX_BYTES = 4 * 1024**3
    #: Accept ``noop`` jobs (``POST /api/v1/jobs/noop``): a step on the llm queue that only fetches
    #: its input and ends, entered and granted by the ledger like any other (the throughput
    #: benchmark's, bench/throughput.py). Off in production: any token could have nodes granted
    #: compute time for work nobody needs.
    NOOP_JOBS = False
    #: The longest span ``GET /api/v1/stats`` sums over (``from``/``to``).
    STATS_MAX_DAYS = 366
    # A job's events (``GET /api/v1/jobs/<id>/events``, app.job_events): each open stream holds
    # one of the API's threads and reads the job every EVENTS_POLL_SECONDS.
    #: Seconds a stream is served before it is closed with ``retry:`` advice (the client then
    #: reconnects with ``Last-Event-ID``): no thread is held by one client for longer.
    EVENTS_MAX_SECONDS = 300
    #: Seconds between two reads of the job (one of PostgreSQL and, while a step runs, Redis).
    EVENTS_POLL_SECONDS = 0.5
    #: Seconds of silence after which a ``: keep-alive`` comment is sent, so that proxies keep
    #: the connection open (and a client gone is noticed at the next write).
    EVENTS_HEARTBEAT_SECONDS = 15
    #: Milliseconds a client is told to wait (``retry:``) before it reconnects.
    EVENTS_RETRY_MILLISECONDS = 2000
    #: Event streams one client (a token's owner, a signed-in member) may hold open at once,
    #: counted across every API process in the broker's Redis; one more is 429 too_many_streams.
    EVENTS_STREAMS_PER_CLIENT = 4
    #: Event streams one API process serves at once: keep it below gunicorn's ``--threads`` so
    #: that streams never take every thread (health checks, volunteers, other clients wait).
    EVENTS_STREAMS_PER_PROCESS = 4
    # Sign-in for members and operators (app.accounts, app.web).
    #: Session cookies are sent over HTTPS only (``Secure``) unless this is false; None: Secure
    #: except when the app runs in debug or testing mode (plain http://127.0.0.1).
    COOKIE_SECURE = None
    #: Hours a signed-in session lasts.
    SESSION_HOURS = 12
    #: Days an invitation link (``manage.py participants invite``) may be used, once.
    INVITE_DAYS = 7
    #: Shortest password a member may set; and the longest (hashing a megabyte costs a worker).
    PASSWORD_MIN_LENGTH = 12
    PASSWORD_MAX_LENGTH = 1024
    #: Sign-in attempts allowed per client address and, apart, per email address (Flask-Limiter's
    #: syntax), counted in the broker's Redis so that every API process shares them.
    SIGN_IN_LIMIT = "5 per minute"
    #: Proxies in front of the API that set ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` (a TLS
    #: terminator: 1). 0 trusts none of these headers: a client could forge its address and
    #: escape the per-address sign-in limit. Behind a proxy, leave it at 0 and every client
    #: shares the proxy's address (and its limit).
    TRUSTED_PROXIES = 0
    # Limits on the JSON API (app.api.limits; Flask-Limiter's syntax, counted in the broker's Redis
    # so that every API process shares them; a request over one is 429 ``rate_limited`` with
    # ``Retry-After``). A bearer token's requests count for that token, whoever sends them.
    #: Requests that change something (POST: a submission, a cancellation, a node enrolled, a
    #: token made or revoked) per token.
    API_SUBMIT_LIMIT = "60 per minute"
    #: Reads (GET: a job's state, lists; an event stream counts once, when it opens) per token.
    API_READ_LIMIT = "600 per minute"
    #: Every request to the API from one client address, whatever token it carries (all the
    #: clients behind one address share it: see TRUSTED_PROXIES).
    API_ADDRESS_LIMIT = "1200 per minute"
    #: Answers 401 (a missing, unknown, revoked or expired token) one address may get; past
    #: it, every request from that address without a live token is 429 until the window ends:
    #: a client cycling made-up tokens is stopped by its address, its neighbours are not.
    API_AUTH_FAILURE_LIMIT = "30 per minute"
    #: Volunteers' workers on ``/api/v1/work`` (inputs, progress; signed by their node), per
    #: address, apart from the clients' limits: a client's flood never starves the workers.
    API_WORK_LIMIT = "3000 per minute"
    #: Tokens an owner may hold at once (neither revoked nor expired) to make another through
    #: ``POST /api/v1/tokens``: tokens made there do not multiply a client's limits without end.
    TOKENS_PER_OWNER = 20
    #: The longest life, in days, of a token made with an expiry.
    TOKEN_MAX_DAYS = 3650
    # The web pages' languages (app.web.i18n, Flask-Babel): French first, for the cooperative.
    #: Languages the pages are written in; the first is the default when the browser asks for
    #: none of them.
    LANGUAGES = ("fr", "nl", "en")
    # Data protection (app.gdpr, docs/decisions/0016).
    #: Days after a job ends before its content (document, text, results' texts, the file's name)
    #: is erased by the coordinator's hourly schedule; its metadata and cost stay.
    RETENTION_DAYS = 30
    #: Jobs whose content one run of the schedule erases at most (the rest wait for the next run).
    RETENTION_BATCH = 500
    # The OpenAI-compatible API (/v1, app.api.openai_compat, docs/decisions/0018).
    #: Seconds a request waits for its job (a non-streamed answer, or a stream's end) before it
    #: answers 504 ``timeout`` with the job's id (the job goes on; read it at /api/v1/jobs/<id>).
    OPENAI_WAIT_SECONDS = 300
    # Webhooks: a job's events POSTed to its callback_url, signed (app.webhooks, docs/decisions/0017).
    #: Accept http:// callback URLs (else https only). True in the test configuration only.
    WEBHOOK_ALLOW_HTTP = False
    #: Accept hosts that resolve to private, loopback, link-local, multicast, reserved or
    #: unspecified addresses (else public ones only). True in the test configuration only.
    WEBHOOK_ALLOW_PRIVATE = False
    #: Seconds after an event during which a failed delivery is tried again (then given up).
    WEBHOOK_RETRY_SECONDS = 3600
    #: Seconds before the first retry; each later one waits twice as long (with jitter, at most 10 min).
    WEBHOOK_RETRY_BASE_SECONDS = 10
    #: Seconds each network operation of an attempt may take (connect, send, read); twice that in all.
    WEBHOOK_TIMEOUT_SECONDS = 5
    #: Delivery attempts a job's API answer shows (``webhook_deliveries``), newest first.
    WEBHOOK_LOG_SHOWN = 20
