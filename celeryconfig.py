"""Queues, routes, reliability and limits: the one place both sides of the grid read.

The coordinator (``app``) and the volunteer workers (``workers``) load this module with
``config_from_object``. Only the broker and result-backend URLs and the time limits come from
the environment; everything else is decided here.

Environment:
  GRID_BROKER_URL         the Redis broker: redis://, rediss:// or redis+socket://; default: the
                          embedded default's private Redis, on a Unix socket under GRID_DATA_DIR
  GRID_RESULT_BACKEND     where progress is published; default: the broker
  GRID_DATA_DIR           the embedded default's folder (its servers, logs, key); default ./var
  GRID_SOFT_TIME_LIMIT    seconds before a task is asked to stop (default 900)
  GRID_HARD_TIME_LIMIT    seconds before its process is killed (default soft + 60)
  GRID_VISIBILITY_TIMEOUT seconds after which a dead worker's task goes to another (hard + 300)
  GRID_RESTORE_INTERVAL   seconds between live workers' sweeps for such tasks (default 10)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from celery.schedules import crontab
from kombu import Exchange, Queue

# --- queues -------------------------------------------------------------------------------

OCR_QUEUE = "ocr"
LLM_QUEUE = "llm"
LEDGER_QUEUE = "ledger"
#: The coordinator's own tasks (settlement): consumed by the ledger worker's Celery consumer,
#: while the ``ledger`` queue of records is taken in batches (app.ledger.intake).
COORDINATOR_QUEUE = "coordinator"

#: Queues a volunteer may serve. ``ledger`` is the coordinator's alone.
VOLUNTEER_QUEUES = (OCR_QUEUE, LLM_QUEUE)
ALL_QUEUES = (*VOLUNTEER_QUEUES, LEDGER_QUEUE, COORDINATOR_QUEUE)

#: Task names. The coordinator sends tasks by name and never imports engine code.
TASK_OCR = "grid.ocr.extract"
TASK_SUMMARISE = "grid.llm.summarise"
TASK_TRANSLATE = "grid.llm.translate"
TASK_INVOICE_FIELDS = "grid.llm.invoice_fields"
#: The OpenAI-compatible API's work (app.api.openai_compat, docs/decisions/0018).
TASK_CHAT = "grid.llm.chat"
TASK_EMBEDDINGS = "grid.llm.embeddings"
#: A job that does nothing but go through the grid (dispatch, the node's input fetch, metering,
#: the ledger's entry and grant): the throughput benchmark's; the coordinator sends it only when
#: GRID_NOOP_JOBS is on (app.config).
TASK_NOOP = "grid.llm.noop"
TASK_LEDGER_STARTED = "grid.ledger.started"
TASK_LEDGER_RECORD = "grid.ledger.record"
TASK_LEDGER_REGISTER = "grid.ledger.register"
TASK_LEDGER_HEARTBEAT = "grid.ledger.heartbeat"
TASK_LEDGER_STOPPING = "grid.ledger.stopping"
TASK_LEDGER_SETTLE_DUE = "grid.ledger.settle_due"
TASK_SWEEP_STALLED = "grid.coordinator.sweep_stalled"
TASK_ERASE_EXPIRED = "grid.coordinator.erase_expired"
#: One attempt at delivering a job's event to its callback URL (app.webhooks).
TASK_WEBHOOK = "grid.coordinator.webhook"

#: Which capability (and so queue) each volunteer task needs.
CAPABILITY_OF_TASK = {
    TASK_OCR: OCR_QUEUE,
    TASK_SUMMARISE: LLM_QUEUE,
    TASK_TRANSLATE: LLM_QUEUE,
    TASK_INVOICE_FIELDS: LLM_QUEUE,
    TASK_CHAT: LLM_QUEUE,
    TASK_EMBEDDINGS: LLM_QUEUE,
    TASK_NOOP: LLM_QUEUE,
}


def queue(name: str, declare: bool = True) -> Queue:
    """The grid's queue ``name``; volunteers use them undeclared (``declare=False``): their
    broker users may not change routing, which the coordinator sets (app.broker_upkeep)."""
    return Queue(
        name,
        Exchange(name, type="direct", no_declare=not declare),
        routing_key=name,
        no_declare=not declare,
    )


task_queues = tuple(queue(name) for name in ALL_QUEUES)
task_default_queue = COORDINATOR_QUEUE  # anything unrouted stays on the coordinator's side
task_routes = {
    "grid.ocr.*": {"queue": OCR_QUEUE, "routing_key": OCR_QUEUE},
    "grid.llm.*": {"queue": LLM_QUEUE, "routing_key": LLM_QUEUE},
    TASK_LEDGER_SETTLE_DUE: {"queue": COORDINATOR_QUEUE, "routing_key": COORDINATOR_QUEUE},
    "grid.coordinator.*": {"queue": COORDINATOR_QUEUE, "routing_key": COORDINATOR_QUEUE},
    "grid.ledger.*": {"queue": LEDGER_QUEUE, "routing_key": LEDGER_QUEUE},
}
task_create_missing_queues = False
#: Priorities of volunteer task messages (kombu's Redis transport serves 0 first, then 3, 6,
#: 9): a replica, which checks a result its job is waiting for, goes ahead of new steps.
REPLICA_PRIORITY = 0
TASK_PRIORITY = 3
#: kombu's Redis transport keeps a queue's messages of priority p > 0 in a list of their own,
#: named ``queue + PRIORITY_SEP + p`` (``ocr\x06\x163``).
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def queue_lists(name: str) -> list[str]:
    """The Redis lists that hold queue ``name``'s messages, highest priority first."""
    return [name, *(f"{name}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS[1:])]


# --- limits on work (checked by the API at submission and again by the worker) ---------------

#: Tesseract language packs a job may ask for, and the default.
OCR_LANGUAGES = ("fra", "eng", "nld")
OCR_DEFAULT_LANGUAGES = "fra+eng"
#: How hard a scanned page is worked on: ``standard`` keeps each page within 1.2× raw Tesseract's
#: time; ``best`` also enlarges small print (72–90-dpi scans), for up to 2.5× the time.
OCR_QUALITIES = ("standard", "best")
#: Languages for summaries and translations.
TEXT_LANGUAGES = {"fr": "French", "en": "English", "nl": "Dutch"}

MAX_DOCUMENT_BYTES = int(os.environ.get("GRID_MAX_DOCUMENT_MB", "20")) * 1024 * 1024
OCR_MAX_PAGES = int(os.environ.get("GRID_OCR_MAX_PAGES", "100"))
OCR_DPI = int(os.environ.get("GRID_OCR_DPI", "300"))
#: Below this resolution Tesseract stops reading body text reliably.
OCR_MIN_DPI = 150
#: Pixel budget for one rendered page: an A3 page at 300 dpi is 17.4 Mpx.
OCR_MAX_PAGE_PIXELS = int(os.environ.get("GRID_OCR_MAX_PAGE_PIXELS", str(40_000_000)))

MAX_TEXT_CHARS = int(os.environ.get("GRID_MAX_TEXT_CHARS", "200000"))
SUMMARY_DEFAULT_WORDS = 150
SUMMARY_MAX_WORDS = 600

#: Chat completions (``/v1/chat/completions``): messages per request, characters in all of
#: them, tokens an answer may ask for, stop sequences and their length.
CHAT_MAX_MESSAGES = 64
CHAT_MAX_CHARS = int(os.environ.get("GRID_CHAT_MAX_CHARS", "100000"))
CHAT_MAX_TOKENS = int(os.environ.get("GRID_CHAT_MAX_TOKENS", "4096"))
CHAT_DEFAULT_MAX_TOKENS = 256
CHAT_MAX_STOP = 4
CHAT_MAX_STOP_CHARS = 64
#: Embeddings (``/v1/embeddings``): inputs per request and characters per input.
EMBEDDINGS_MAX_INPUTS = 32
EMBEDDINGS_MAX_CHARS = 8000
#: A streamed answer's text deltas (``/api/v1/work/<task>/delta``): the most bytes a token may
#: stand for (a token is a few bytes; 64 leaves room), and the most characters in one post.
STREAM_BYTES_PER_TOKEN = 64
STREAM_MAX_DELTA_CHARS = 8192

# --- broker and results -------------------------------------------------------------------

PROJECT_DIR = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("GRID_DATA_DIR", PROJECT_DIR / "var")).resolve()

#: The kernel's limit on a Unix socket's path (``sun_path`` holds 108 bytes with the final NUL).
_MAX_SOCKET_PATH = 107


def unix_socket_path(directory: Path, name: str) -> Path:
    """Where a server kept in ``directory`` puts its socket ``name``.

    In ``directory`` itself when the path fits the kernel's limit; otherwise (a clone deep in a
    file tree) in a folder of the system's temporary directory named after ``directory``, so
    every process computes the same path.
    """
    path = Path(directory) / name
    if len(os.fsencode(str(path))) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(str(Path(directory).resolve()))).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"koprogo-grid-{digest}" / name


#: The embedded default's private Redis (``manage.py demo`` starts it; app.servers).
EMBEDDED_REDIS_DIR = DATA_DIR / "redis"
EMBEDDED_BROKER_URL = f"redis+socket://{unix_socket_path(EMBEDDED_REDIS_DIR, 'redis.sock')}"

#: Redis only: the grid gives every node a Redis ACL user of its own (app.broker_acl) and the
#: ledger takes its queue in batches straight from Redis lists (app.ledger.intake). RabbitMQ
#: has neither per-queue write-only users of that kind nor lists to move atomically.
BROKER_SCHEMES = ("redis", "rediss", "redis+socket")
broker_url = os.environ.get("GRID_BROKER_URL") or EMBEDDED_BROKER_URL
if broker_url.split("://", 1)[0] not in BROKER_SCHEMES:
    raise ValueError(
        f"GRID_BROKER_URL must be a Redis URL ({', '.join(s + '://' for s in BROKER_SCHEMES)}), "
        f"not {broker_url.split('://', 1)[0]}://: the grid's per-node broker users and its ledger "
        "intake are built on Redis (README, 'Brokers')"
    )

# --- time limits and reliability ----------------------------------------------------------

task_soft_time_limit = int(os.environ.get("GRID_SOFT_TIME_LIMIT", "900"))
task_time_limit = int(os.environ.get("GRID_HARD_TIME_LIMIT", str(task_soft_time_limit + 60)))
if task_time_limit <= task_soft_time_limit:
    raise ValueError("GRID_HARD_TIME_LIMIT must be greater than GRID_SOFT_TIME_LIMIT")

#: A message not acknowledged within this many seconds is handed to another worker. It must
#: exceed the hard limit, or a task still running legitimately would be run twice.
VISIBILITY_TIMEOUT = int(os.environ.get("GRID_VISIBILITY_TIMEOUT", str(task_time_limit + 300)))
if VISIBILITY_TIMEOUT <= task_time_limit:
    raise ValueError("GRID_VISIBILITY_TIMEOUT must be greater than GRID_HARD_TIME_LIMIT")

#: A worker sends a signed heartbeat this often; the registry counts a node offline after
#: NODE_OFFLINE_AFTER_SECONDS without one (docs/decisions/0007).
HEARTBEAT_SECONDS = int(os.environ.get("GRID_HEARTBEAT_SECONDS", "60"))
NODE_OFFLINE_AFTER_SECONDS = int(os.environ.get("GRID_NODE_OFFLINE_AFTER", str(3 * HEARTBEAT_SECONDS)))
#: How far ahead of the coordinator's clock a node's notice may be dated (workers.protocol).
CLOCK_SKEW_SECONDS = 300
#: The most tasks a node may say it runs at once (its worker's concurrency, registered): the
#: ledger pays a node for no more executions at a time than it registered.
NODE_MAX_CONCURRENCY = int(os.environ.get("GRID_NODE_MAX_CONCURRENCY", "16"))

#: Transient faults (out of memory, disk full, a lost engine process) are retried this often.
MAX_RETRIES = 3
RETRY_BACKOFF_SECONDS = int(os.environ.get("GRID_RETRY_BACKOFF", "10"))
RETRY_BACKOFF_MAX_SECONDS = 600

#: A step with no sign of life for this long can no longer succeed: every attempt it is
#: allowed would have run to its hard limit, waited out the visibility timeout and backed off.
#: The coordinator then fails its job (``stalled``) instead of leaving it running forever.
STALLED_AFTER_SECONDS = (MAX_RETRIES + 1) * (task_time_limit + VISIBILITY_TIMEOUT + RETRY_BACKOFF_MAX_SECONDS)

#: How often the coordinator looks for steps whose message vanished (app.watchdog) and for
#: stalled jobs; a step quiet for less than LOST_GRACE_SECONDS is not looked for (its message
#: may be between the queue and the in-flight hash, or about to be sent).
WATCHDOG_SECONDS = int(os.environ.get("GRID_WATCHDOG_SECONDS", "30"))
LOST_GRACE_SECONDS = int(os.environ.get("GRID_LOST_GRACE", "60"))

task_acks_late = True
task_reject_on_worker_lost = True
task_acks_on_failure = True  # a task that failed for good is not re-run
task_acks_on_timeout = True  # nor one stopped by its hard time limit
worker_prefetch_multiplier = 1
task_track_started = True
task_ignore_result = True  # outcomes travel to the ledger; the backend only carries progress
result_expires = 24 * 3600
result_extended = False
worker_send_task_events = True  # Flower
# No "task-sent" event per dispatch: a second publish (and a Redis client built for it) on every
# submission, about a third of ``send_task``'s time, that no panel, rule or page reads. Flower
# shows a task from its "task-received" (the worker's) on; jobs still queued are the API's and
# the operators' page's to show, and the queues' depths are metrics (docs/operations.md).
task_send_sent_event = False
broker_connection_retry_on_startup = True
#: A task goes on when the broker blinks: its record is kept on the node until the broker is
#: back (workers.spool), and its message, if its acknowledgement is lost with the connection,
#: comes back after the visibility timeout to a node the coordinator tells the step is over.
worker_cancel_long_running_tasks_on_connection_loss = False
worker_hijack_root_logger = False

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

broker_transport_options = {
    "visibility_timeout": VISIBILITY_TIMEOUT,
    # How often live workers look for messages a dead worker left unacknowledged. kombu's
    # default sweeps every 10 s but scans only every 10th sweep; scan on every sweep.
    "unacked_restore_interval": int(os.environ.get("GRID_RESTORE_INTERVAL", "10")),
    "unacked_restore_throttle": 1,
}
result_backend = os.environ.get("GRID_RESULT_BACKEND") or broker_url
result_backend_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}

# --- schedule (run by the coordinator's beat only: celery -A app.ledger_worker beat) ----------

beat_schedule = {
    "settle-ended-periods": {
        "task": TASK_LEDGER_SETTLE_DUE,
        "schedule": crontab(hour=2, minute=15),  # daily; a month is closed on its first night
        "options": {"queue": COORDINATOR_QUEUE, "routing_key": COORDINATOR_QUEUE},
    },
    # The content of jobs ended more than GRID_RETENTION_DAYS ago, in batches (app.gdpr).
    "erase-expired-content": {
        "task": TASK_ERASE_EXPIRED,
        "schedule": crontab(minute=40),  # hourly
        "options": {"queue": COORDINATOR_QUEUE, "routing_key": COORDINATOR_QUEUE},
    },
}
beat_schedule_filename = str(DATA_DIR / "celerybeat-schedule")
