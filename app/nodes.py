"""Participants and their nodes: enrolment, node secrets, worker configuration.

A node's secret is derived from the coordinator's secret key (HMAC of the node id and its
secret generation), so no secret is stored: the database alone cannot forge a record. Giving a
node a new secret bumps its generation; revoking it refuses everything it sends afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

import celeryconfig
from app import broker_acl
from app.errors import Conflict, InvalidParameter
from app.extensions import db
from app.models import Node, Participant, utcnow

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
#: A node's worker is named ``<node name>@<host>``, and the coordinator's control commands go to
#: that name only: no node may be named as the coordinator's own workers are.
RESERVED_NAMES = frozenset({"ledger", "coordinator", "celery", "flower", "beat", "worker"})


def secret_key() -> bytes:
    """The coordinator's key: GRID_SECRET_KEY, else (embedded default) a key kept in var/."""
    configured = current_app.config.get("SECRET_KEY")
    if configured:
        return str(configured).encode("utf-8")
    path = Path(celeryconfig.DATA_DIR) / "secret_key"
    if not path.exists():
        # Written whole under another name, then linked into place: a process starting at the
        # same moment sees either no key or the whole key, and the first one written wins.
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".secret_key.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    key = path.read_text().strip()
    if len(key) < 32:
        raise RuntimeError(f"{path} holds no usable key: remove it, or set GRID_SECRET_KEY")
    return key.encode("utf-8")


def node_secret(node: Node) -> str:
    digest = hmac.new(secret_key(), f"grid-node:{node.id}:{node.secret_generation}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")


#: The longest email address (RFC 5321's path limit), as ``participants.email`` holds it.
EMAIL_MAX_CHARS = 254


def check_email(email: str) -> str:
    """The email address as participants are known by (trimmed, lower case), or ValueError."""
    email = email.strip().lower()
    if "@" not in email or not email.isprintable() or any(char.isspace() for char in email):
        raise ValueError(f"{email[:100]!r} is not an email address")
    if len(email) > EMAIL_MAX_CHARS:
        raise ValueError(f"an email address is at most {EMAIL_MAX_CHARS} characters, not {len(email)}")
    return email


def check_name(name: str) -> str:
    """A node name as it may be enrolled, or ValueError (before any lookup: a name that cannot
    be enrolled cannot name a node either)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError("a node name is 2–63 lower-case letters, digits and dashes, e.g. alice-pi")
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} names the coordinator's own workers: choose another node name")
    return name


def participant(email: str, name: str | None = None) -> Participant:
    """The participant with this email, created if new (not committed)."""
    email = check_email(email)
    found = db.session.scalar(select(Participant).where(Participant.email == email))
    if found is None:  # created once, whoever asks at the same moment
        new = insert(Participant).values(email=email, name=name)
        db.session.execute(new.on_conflict_do_nothing(index_elements=["email"]))
        found = db.session.scalar(select(Participant).where(Participant.email == email))
    return found


def create(name: str, owner_email: str, broker_url: str | None = None, approved: bool = True) -> Node:
    """Enrol a node for a participant (not committed).

    Approved (an operator enrols it), it gets its broker user at once, for a worker reaching the
    broker at ``broker_url`` (default: the configured one). Otherwise it is pending: no broker
    user, and the ledger refuses what it sends, until an operator approves it.
    """
    check_name(name)
    if db.session.scalar(select(Node.id).where(Node.name == name)) is not None:
        raise ValueError(f"a node named {name!r} exists already")
    node = Node(name=name, participant=participant(owner_email))
    db.session.add(node)
    db.session.flush()
    if approved:
        approve(node, broker_url)
    return node


class NodeLimit(Conflict):
    """A participant holds as many nodes (not revoked) as they may enrol."""

    code = "node_limit"

    def __init__(self, held: int, limit: int) -> None:
        super().__init__(
            f"You have {held} nodes, the most a participant may enrol ({limit}): revoke one first."
        )
        self.held, self.limit = held, limit


def enrol(name: str, owner_email: str, by_operator: bool) -> Node:
    """Enrol a node as the API (``POST /api/v1/nodes``) and the member's dashboard do, committed.

    An operator's node is approved at once (``approve``); a participant's is pending until an
    operator approves it, and a participant holds at most ``NODES_PER_PARTICIPANT`` nodes not
    revoked. Raises ``InvalidParameter`` for a name (``check_name``) or an address that cannot be
    enrolled, ``Conflict`` ``node_exists`` for a name taken, ``NodeLimit`` (``node_limit``).
    """
    if not isinstance(name, str) or not isinstance(owner_email, str):
        raise InvalidParameter("A node's name and its owner are text.")
    try:  # before any lookup: the database refuses some of what a client may send
        check_name(name)
        check_email(owner_email)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None
    taken = Conflict(f"A node named {name!r} exists already.", code="node_exists")
    if db.session.scalar(select(Node.id).where(Node.name == name)) is not None:
        raise taken
    if not by_operator:
        limit = current_app.config["NODES_PER_PARTICIPANT"]
        member = participant(owner_email)
        # Locked while counting: two enrolments at once cannot both take the last place.
        db.session.execute(select(Participant.id).where(Participant.id == member.id).with_for_update())
        held = db.session.scalar(
            select(func.count(Node.id)).where(Node.participant_id == member.id, Node.revoked_at.is_(None))
        )
        if held >= limit:
            db.session.rollback()
            raise NodeLimit(held, limit)
    try:
        node = create(name, owner_email, approved=by_operator)
        db.session.commit()
    except ValueError as exc:
        db.session.rollback()
        raise InvalidParameter(str(exc)) from None
    except IntegrityError:  # another enrolment took the name between our look and our insert
        db.session.rollback()
        raise taken from None
    return node


def approve(node: Node, broker_url: str | None = None) -> None:
    """An operator accepts a pending node (not committed): its broker user is created."""
    node.approved_at = node.approved_at or utcnow()
    broker_acl.ensure_user(node, broker_url=broker_url)


def is_own_worker(node_name: str, worker: str) -> bool:
    """Whether ``worker`` (``name@host``) is a name the node ``node_name``'s worker may use."""
    return worker.partition("@")[0] == node_name


def revoke(node: Node) -> None:
    """Revoke a node (not committed); on Redis, delete its broker user, which ends its sessions.

    Raises ``broker_acl.BrokerAclError`` if the broker cannot (while it is unreachable, the node
    cannot send anything either): revoke again then."""
    node.revoked_at = node.revoked_at or utcnow()
    broker_acl.delete_user(node)


def _not_revoked(node: Node) -> None:
    if node.revoked_at is not None:
        raise Conflict("The node is revoked.", code="node_revoked")


def approve_by_operator(node: Node) -> None:
    """What an operator's approval does, through the API (``POST /api/v1/nodes/<id>/approve``) or
    the operators' page: its broker user created, then committed. ``Conflict`` (``node_revoked``)
    for a revoked node; ``broker_acl.BrokerAclError`` (nothing saved) while the broker is away."""
    _not_revoked(node)
    approve(node)
    db.session.commit()


def rotate_secret(node: Node) -> str:
    """A new secret (not committed); on Redis also a new broker password, the old sessions ended."""
    node.secret_generation += 1
    if node.approved_at is not None:
        broker_acl.ensure_user(node, disconnect=True)
    return node_secret(node)


def worker_environment(
    node: Node, broker_url: str | None = None, coordinator_url: str | None = None
) -> dict[str, str]:
    """What the node's worker needs, as environment variables.

    The node reaches the broker as its own user (``app.broker_acl``, created when it is
    enrolled), which may not broadcast: its worker starts without mingle.
    """
    return {
        "GRID_BROKER_URL": broker_acl.node_url(node, broker_url),
        "GRID_COORDINATOR_URL": coordinator_url or current_app.config["PUBLIC_URL"],
        "CELERY_WORKER_WITHOUT_MINGLE": "1",
        "GRID_NODE_ID": node.id,
        "GRID_NODE_NAME": node.name,
        "GRID_NODE_SECRET": node_secret(node),
    }


def worker_configuration(
    node: Node, broker_url: str | None = None, coordinator_url: str | None = None
) -> str:
    """A ready-to-use environment file for the node's worker."""
    lines = [
        f"# KoproGo Grid worker configuration for node {node.name} ({node.participant.email})",
        "# Keep this file private (chmod 600): the secret signs everything this node reports.",
    ]
    lines += [
        f"{key}={value}" for key, value in worker_environment(node, broker_url, coordinator_url).items()
    ]
    lines += [
        "# GRID_LLM_MODEL=/path/to/model.gguf   # to serve the llm queue",
        "# GRID_HARDWARE_CLASS=raspberry-pi     # or laptop, mac-mini, desktop: for the grid's CO₂ figures",
        f"# then: python -m workers start   (or: celery -A workers worker -Q llm,ocr -n {node.name}@%h)",
    ]
    return "\n".join(lines) + "\n"
