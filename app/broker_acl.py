"""Per-node Redis ACL users: a volunteer reaches the broker with credentials of its own.

Enrolling a node creates the Redis user ``node-<node id>`` whose password is derived, like the
node's secret, from the coordinator's key (so it is never stored: the coordinator can always
re-create it); revoking the node deletes the user, and Redis then refuses its worker.

What the user may do is what a Celery worker on the volunteer queues needs, measured against
Redis 7 with celery/kombu 5.7 and redis-py 8 (see ``rules``), and no more:

- consume the queues it serves (``ocr``, ``llm``) and hand a message back to them; no LRANGE,
  so it sees a message only when the broker gives it one;
- push, never read, the ``ledger`` queue (Redis 7 write-only key permissions, ``%W~``); no
  other queue: the coordinator sends every step itself (docs/decisions/0009);
- kombu's bookkeeping of its messages in flight, write-only: the ``unacked`` hash and index
  are written on delivery and cleared on acknowledgement, never read (``workers.broker``);
  putting back what dead workers left is the coordinator's (``app.broker_upkeep``);
- read the routing tables, never change those of the grid's queues (the coordinator declares
  them); its own control mailbox (``<node name>@*.celery.pidbox``), the replies it sends, the
  event queues of its gossip, and the tables of those fanout exchanges, kept alive with kombu's
  scripts, which it may run by hash (EVALSHA) but not load: no endless script of its own;
- publish events (``/<db>.celeryev/*``) and listen to broadcasts (``/<db>.celery.pidbox``).

Every command is granted on the keys it is needed on only (Redis 7 selectors), so a node cannot
``DEL``, ``SET`` or ``EXPIRE`` the ledger queue, nor remove another queue's routing. It cannot
broadcast control commands (``shutdown``, ``revoke``) to other workers either: publishing on
``/<db>.celery.pidbox`` is refused, so its worker must run without mingle (which broadcasts a
"hello" at start-up); the worker configuration says so (``CELERY_WORKER_WITHOUT_MINGLE``).

What ACLs cannot stop, and what is done instead (docs/decisions/0005): a node can write forged
entries in the ``unacked`` hash (the coordinator puts them back on volunteer queues only, where
a task the coordinator never dispatched gets no input), publish fake events (Flower shows
them; nothing is decided from them), take a message and drop it, fill the lists and sets it
may write (Redis has no per-user memory quota), and reach keys matching these patterns in
every database of the server: give the grid a Redis server of its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import celeryconfig
from app.errors import Unavailable
from app.models import Node

#: kombu's separator in the names of a queue's priority lists (``ocr\x06\x163``).
SEP = celeryconfig.PRIORITY_SEP
USER_PREFIX = "node-"


#: kombu's keys for the coordinator's own messages in flight (its tasks on the ``coordinator``
#: queue), apart from the volunteers' ``unacked``: no node can read them, and no node's periodic
#: restore meets a message it may not put back (the refused push would stop its worker).
COORDINATOR_UNACKED = {
    "unacked_key": "grid:coordinator:unacked",
    "unacked_index_key": "grid:coordinator:unacked_index",
    "unacked_mutex_key": "grid:coordinator:unacked_mutex",
}


class BrokerAclError(Unavailable):
    """The broker could not create or delete a node's user (503 through the API)."""


def username(node: Node) -> str:
    return f"{USER_PREFIX}{node.id}"


def password(node: Node) -> str:
    """The node's broker password: an HMAC of the coordinator's key, like the node secret."""
    from app.nodes import secret_key

    label = f"grid-broker:{node.id}:{node.secret_generation}".encode()
    digest = hmac.new(secret_key(), label, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def node_url(node: Node, broker_url: str | None = None) -> str:
    """``broker_url`` (default: the configured one) with the node's user and password."""
    parts = urlsplit(broker_url or celeryconfig.broker_url)
    credentials = f"{quote(username(node), safe='')}:{quote(password(node), safe='')}"
    if _is_socket(parts.scheme):  # redis+socket://user:password@/path/to/redis.sock
        return urlunsplit((parts.scheme, f"{credentials}@", parts.path, parts.query, ""))
    host = parts.hostname or "localhost"
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{credentials}@{host}{port}", parts.path, parts.query, ""))


def _is_socket(scheme: str) -> bool:
    return scheme.endswith("socket")


def _db(url: str) -> int:
    """The database number of a broker URL (``/N`` over TCP, ``?virtual_host=N`` on a socket)."""
    parts = urlsplit(url)
    number = parse_qs(parts.query).get("virtual_host", ["0"])[0] if _is_socket(parts.scheme) else parts.path
    number = number.strip("/")
    return int(number) if number.isdigit() else 0


def client(url: str | None = None, db: int | None = None, **options: Any) -> redis.Redis:
    """A redis-py client for a broker URL (default: the configured one), kombu's
    ``redis+socket://`` form included; ``db`` chooses another database on that server;
    ``options`` are redis-py's (timeouts, retries)."""
    url = url or celeryconfig.broker_url
    parts = urlsplit(url)
    if not _is_socket(parts.scheme):
        return redis.Redis.from_url(url, **({} if db is None else {"db": db}), **options)
    return redis.Redis(
        unix_socket_path=parts.path,
        db=_db(url) if db is None else db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        **options,
    )


def quick_client(timeout: float) -> redis.Redis:
    """A client on the configured broker that gives up after ``timeout`` seconds, without
    retrying: for what is best effort (progress) or a check (readiness), so that a broker
    away slows no request down (redis-py's default retries took 4 s a request)."""
    return client(socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def _queue_keys(queue: str, access: str = "") -> list[str]:
    """A queue's list and its priority lists (``ocr``, ``ocr\\x06\\x16*``)."""
    return [f"{access}~{queue}", f"{access}~{queue}{SEP}*"]


def _selector(commands: Iterable[str], patterns: Iterable[str]) -> str:
    return "(" + " ".join([*(f"+{c}" for c in commands), *patterns]) + ")"


#: Exchanges whose routing tables a node's worker keeps alive for the queues it consumes there
#: (its control mailbox; the event queue of its gossip): fanout exchanges, which Redis serves
#: by PUBLISH, so these tables route nothing.
_CONSUMED_EXCHANGES = ("celery.pidbox", "celeryev")


def rules(node: Node, queues: Iterable[str] = celeryconfig.VOLUNTEER_QUEUES, db: int = 0) -> list[str]:
    """The ``ACL SETUSER`` arguments for a node serving ``queues`` on database ``db``."""
    served = list(dict.fromkeys(queues))
    unknown = set(served) - set(celeryconfig.VOLUNTEER_QUEUES)
    if unknown:
        raise ValueError(f"not volunteer queues: {', '.join(sorted(unknown))}")
    fanout = f"/{db}."
    tables = [f"~_kombu.{t}.{e}" for e in _CONSUMED_EXCHANGES for t in ("binding", "binding_permanent")]
    return [
        "reset",
        "on",
        f">{password(node)}",
        # Connection, transactions and listening to broadcasts: no keys. PSUBSCRIBE patterns
        # are matched literally against the ACL's, hence the exact worker.* pattern. No
        # SCRIPT LOAD, no EVAL: a node runs only the scripts the coordinator loaded (redis-py
        # asks SCRIPT EXISTS before a pipeline that runs one).
        *(
            f"+{c}"
            for c in (
                "hello auth ping select multi exec discard time script|exists".split()
                + ["psubscribe", "punsubscribe"]
            )
        ),
        f"&{fanout}celery.pidbox",
        f"&{fanout}celeryev/worker.*",
        # Events (but no control broadcasts).
        _selector(["publish"], [f"&{fanout}celeryev/*"]),
        # The served queues: consume, and hand a message back (workers.broker). No LRANGE: a
        # node sees a message only when the broker gives it one.
        _selector(["brpop", "rpop", "lpush", "rpush", "llen"], [k for q in served for k in _queue_keys(q)]),
        # Pushed, never read: the node's records.
        _selector(["lpush", "rpush", "llen"], _queue_keys(celeryconfig.LEDGER_QUEUE, "%W")),
        # Routing tables are read (kombu looks a message's queues up there); a node declares
        # none of the grid's queues (the coordinator does: app.broker_upkeep), so it cannot
        # add a route that copies a queue's messages to another.
        _selector(["smembers"], ["%R~_kombu.binding.*"]),
        # Its own control mailbox, the replies it sends, the event queue of its gossip (auto-
        # deleted, so DEL), and their tables, kept alive by kombu's scripts (run, not loaded).
        _selector(
            ["brpop", "rpop", "lpush", "rpush", "llen", "del", "pexpire"],
            [f"~{node.name}@*.celery.pidbox*", "~celeryev.*"],
        ),
        _selector(["lpush", "rpush"], ["%W~*.reply.celery.pidbox*"]),
        _selector(
            ["evalsha", "sadd", "srem", "smembers", "zadd", "zrangebyscore", "zrem", "exists", "del"],
            [*tables, "~_kombu.binding_deadlines"],
        ),
        # Messages in flight (acks_late): written when delivered, removed when acknowledged,
        # never read (workers.broker); the coordinator puts back what dead workers left.
        _selector(["hset", "hdel"], ["%W~unacked"]),
        _selector(["zadd", "zrem"], ["%W~unacked_index"]),
    ]


def _admin() -> redis.Redis:
    return client(celeryconfig.broker_url)


def _save(admin: redis.Redis) -> None:
    """Persist the users if the server keeps them in an ACL file (else they live in memory)."""
    try:
        admin.execute_command("ACL", "SAVE")
    except redis.ResponseError:
        pass  # no aclfile: the users last until the server restarts


def ensure_user(
    node: Node,
    queues: Iterable[str] = celeryconfig.VOLUNTEER_QUEUES,
    broker_url: str | None = None,
    disconnect: bool = False,
) -> None:
    """Create (or reset) the node's broker user.

    ``broker_url`` is the URL the node's worker will use (its database names the broadcast
    channels); the user is created through the coordinator's own broker connection. A new
    password does not end the connections opened with the old one: ``disconnect`` does.
    """
    from app import broker_upkeep

    db = _db(broker_url or celeryconfig.broker_url)
    arguments = rules(node, queues, db)
    try:
        with _admin() as admin:
            admin.execute_command("ACL", "SETUSER", username(node), *arguments)
            if disconnect:
                admin.execute_command("CLIENT", "KILL", "USER", username(node))
            _save(admin)
        with client(celeryconfig.broker_url, db) as admin:
            broker_upkeep.prepare(admin)  # the queues and scripts its worker needs, in place
    except redis.RedisError as exc:
        raise BrokerAclError(f"the broker refused to create user {username(node)}: {exc}") from exc


def delete_user(node: Node) -> None:
    """Delete the node's broker user (and so close its connections)."""
    try:
        with _admin() as admin:
            admin.execute_command("ACL", "DELUSER", username(node))
            _save(admin)
    except redis.RedisError as exc:
        raise BrokerAclError(f"the broker refused to delete user {username(node)}: {exc}") from exc
