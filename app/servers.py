"""Private Redis and PostgreSQL servers that this process starts, owns and stops.

Two uses, one mechanism:

* the test suite and the benchmarks start **throwaway** servers: a temporary directory, a free
  TCP port on 127.0.0.1, nothing made durable (no fsync, no persistence), all removed on stop;
* ``manage.py demo`` (the embedded default) starts **private** servers in a folder of its own
  under ``var/``: Unix sockets only (no TCP port), data kept from one run to the next (Redis
  with its append-only file and its ACL users in a file, PostgreSQL with fsync on).

Each server runs in the foreground as a child of this process, in its own session (a Ctrl-C in
the terminal reaches only this process, which then stops the servers in order). Clean-up, from
first to last resort: ``start()`` stops what it started if it fails halfway; ``stop()`` is
idempotent and escalates signals until the process is gone; an ``atexit`` hook stops every
server still running at a normal exit; on Linux the child is told by
``prctl(PR_SET_PDEATHSIG)`` to shut down if this process dies without running ``atexit``
(SIGKILL, a crash), so no server outlives its owner.

PostgreSQL refuses to run as root. When this process is root, ``initdb`` and ``postgres`` run
as the ``postgres`` system user (created by Debian's ``postgresql`` packages) through
``subprocess``'s ``user=``/``group=`` arguments, so the postmaster is still our direct child.

Self-check: ``python -m app.servers`` (from the repository root).
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Self

if TYPE_CHECKING:  # only for annotations; imported lazily at run time
    import psycopg2.extensions
    import redis

__all__ = [
    "PostgresServer",
    "RedisServer",
    "ServerStartError",
    "find_postgres_bin",
    "find_redis_server",
]

HOST = "127.0.0.1"

#: How many times ``start()`` retries with a new port when the port picked as
#: free was taken by someone else before the server could bind it.
_PORT_ATTEMPTS = 3

#: How much of a server log is quoted in error messages.
_LOG_TAIL_CHARS = 4000


class ServerStartError(RuntimeError):
    """A server could not be started (the message quotes its log)."""


class _ForeignServer(Exception):
    """The port answered, but not with the server we started.

    Happens when the port picked as free is taken by another server before
    ours binds it: ours then exits with "Address already in use", but the
    other one may answer first. Treated as "not ready yet", so the readiness
    loop sees our process exit and retries with another port.
    """


# --------------------------------------------------------------------------
# Finding the binaries
# --------------------------------------------------------------------------


def _version_key(directory: str) -> tuple[int, ...]:
    """Sort key for ``/usr/lib/postgresql/<version>/bin``: ``"15"`` -> (15,)."""
    version = Path(directory).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def find_postgres_bin(name: str) -> str:
    """Return the absolute path of the PostgreSQL program ``name``.

    Looks in ``PATH`` first, then in ``/usr/lib/postgresql/*/bin`` (Debian and
    Ubuntu keep the server programs there, outside ``PATH``), highest version
    first.

    Raises:
        RuntimeError: naming the apt package to install if it is nowhere.
    """
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    bin_dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for bin_dir in bin_dirs:
        candidate = os.path.join(bin_dir, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"PostgreSQL program {name!r} not found in PATH nor in "
        "/usr/lib/postgresql/*/bin; install it with: apt-get install postgresql"
    )


def find_redis_server() -> str:
    """Return the absolute path of ``redis-server``.

    Raises:
        RuntimeError: naming the apt package to install if it is missing.
    """
    found = shutil.which("redis-server")
    if found:
        return os.path.abspath(found)
    for candidate in ("/usr/bin/redis-server", "/usr/local/bin/redis-server"):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("redis-server not found in PATH; install it with: apt-get install redis-server")


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _free_port() -> int:
    """Ask the kernel for a TCP port that is free on 127.0.0.1 right now.

    The port is released before the server binds it, so another process may
    grab it in between; ``start()`` retries with a new port if that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path | None) -> str:
    """The end of a log file, for error messages."""
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(could not read {path}: {exc})"
    if not text.strip():
        return "(log is empty)"
    if len(text) > _LOG_TAIL_CHARS:
        text = "...\n" + text[-_LOG_TAIL_CHARS:]
    return text


def _server_env() -> dict[str, str]:
    """Environment for the server processes.

    ``PG*`` variables (``PGDATA``, ``PGPORT``, ``PGOPTIONS``...) are dropped so
    a developer's shell cannot change how the throwaway servers behave, and the
    C locale keeps the server messages in plain English.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    return env


def parent_death_preexec(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to send ``signum`` to the child when
    we die, or ``None`` where that is unavailable or unsafe.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits,
    so it is only used when starting from the main thread (pytest fixtures and
    scripts do); a server started from a short-lived worker thread would
    otherwise be killed when that thread ends.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent_pid = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        # Runs in the forked child, after the user switch, before exec.
        prctl(pr_set_pdeathsig, int(signum), 0, 0, 0)
        if os.getppid() != parent_pid:
            # The parent died between fork() and prctl(): do not start at all.
            os._exit(1)

    return preexec


def _reachable_by(path: Path, owner: pwd.struct_passwd) -> bool:
    """Whether the system user ``owner`` may traverse every folder above ``path``."""
    groups = {owner.pw_gid}
    for parent in Path(path).resolve().parents:
        st = parent.stat()
        if st.st_uid == owner.pw_uid:
            allowed = st.st_mode & 0o100
        elif st.st_gid in groups:
            allowed = st.st_mode & 0o010
        else:
            allowed = st.st_mode & 0o001
        if not allowed:
            return False
    return True


def _socket_path(directory: Path, name: str) -> Path:
    # Imported here, not above: celeryconfig reads the environment when it is imported, and the
    # test suite imports this module before it has set that environment.
    from celeryconfig import unix_socket_path

    return unix_socket_path(directory, name)


def _rmtree(path: Path) -> None:
    """Remove a temporary directory (as root this includes the files that
    belong to the ``postgres`` user)."""
    if path.exists():
        shutil.rmtree(path)


# --------------------------------------------------------------------------
# Common machinery
# --------------------------------------------------------------------------

_live_servers: set[_ManagedServer] = set()
_live_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    """Last resort: stop every server that is still running at exit."""
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        try:
            server.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            print(
                f"app.servers: could not stop {server!r} at exit: {exc}",
                file=sys.stderr,
            )


atexit.register(_stop_all_at_exit)


class _ManagedServer:
    """Shared life cycle: temp dir, child process, log, stop, context manager."""

    #: Short name used in temp dir names and messages.
    kind: ClassVar[str] = "server"
    #: Signal asking the server for a clean but quick shutdown.
    stop_signal: ClassVar[int] = signal.SIGTERM
    #: Signal sent if the clean shutdown takes too long (before SIGKILL).
    hurry_signal: ClassVar[int] = signal.SIGTERM

    def __init__(
        self, start_timeout: float = 30.0, stop_timeout: float = 10.0, directory: Path | None = None
    ) -> None:
        """``directory``: keep the server's data there, from one start to the next, and talk to
        it over a Unix socket only; default: a temporary directory, a TCP port, removed on stop."""
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port: int | None = None
        #: A private server's folder, kept; ``None`` for a throwaway one until it starts.
        self.kept_directory = Path(directory).resolve() if directory is not None else None
        self.directory: Path | None = None
        self.log_path: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        #: Wall-clock seconds the last successful ``start()`` took.
        self.startup_seconds: float | None = None

    # -- public life cycle -------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it answers. Returns ``self``.

        On any failure everything started so far is stopped and removed before
        the exception propagates.
        """
        if self.process is not None:
            raise RuntimeError(f"{self!r} is already started")
        # Import the client library first: fails fast if it is missing, and
        # keeps its one-off import time out of ``startup_seconds``.
        self._not_ready_errors()
        began = time.monotonic()
        with _live_lock:
            _live_servers.add(self)
        try:
            if self.kept_directory is not None:
                self.directory = self.kept_directory
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            else:
                self.directory = Path(tempfile.mkdtemp(prefix=f"grid-{self.kind}-"))
            self._prepare()
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                self.port = _free_port() if self.kept_directory is None else None
                self._launch()
                if self._wait_until_ready(
                    retry_on_port_clash=attempt < _PORT_ATTEMPTS and self.port is not None
                ):
                    break
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop the server (if running), wait for it and remove its temp dir (a kept one stays).

        Safe to call several times, and on a server that failed to start.
        """
        try:
            self._terminate()
        finally:
            try:
                if self.directory is not None and self.kept_directory is None:
                    _rmtree(self.directory)
                    self.directory = None
            finally:
                with _live_lock:
                    _live_servers.discard(self)

    def __enter__(self) -> Self:
        if self.process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} port={self.port} {state} dir={self.directory}>"

    # -- hooks for subclasses --------------------------------------------

    def _prepare(self) -> None:
        """One-off set-up in ``self.directory`` before the first launch."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _popen_kwargs(self) -> dict[str, object]:
        """Extra ``subprocess.Popen`` arguments (user switch, cwd...)."""
        return {}

    def _ping(self) -> None:
        """Return if *our* server answers; raise one of ``_not_ready_errors()``
        if it does not answer yet, or ``_ForeignServer`` if someone else does.
        """
        raise NotImplementedError

    def _not_ready_errors(self) -> tuple[type[BaseException], ...]:
        """Exceptions from ``_ping`` meaning "not ready yet, try again"."""
        return (OSError,)

    # -- internals ---------------------------------------------------------

    def _launch(self) -> None:
        assert self.directory is not None
        self.log_path = self.directory / f"{self.kind}.log"
        with open(self.log_path, "ab" if self.kept_directory else "wb") as log:
            # The child inherits the descriptor; ours is closed on leaving.
            self.process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_server_env(),
                start_new_session=True,
                # The preexec function only calls prctl() and getppid(), and
                # only exists when started from the main thread.
                preexec_fn=parent_death_preexec(self.stop_signal),  # noqa: PLW1509
                **self._popen_kwargs(),  # type: ignore[arg-type]
            )

    def _wait_until_ready(self, retry_on_port_clash: bool) -> bool:
        """Poll until the server answers.

        Returns False if the server died because its port was taken (the
        caller then retries with another port), True once it answers.
        """
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        last_error: BaseException | None = None
        while True:
            code = self.process.poll()
            if code is not None:
                log = _log_tail(self.log_path)
                self.process = None
                if retry_on_port_clash and "Address already in use" in log:
                    return False
                raise ServerStartError(
                    f"{self.kind} exited with status {code} during start-up "
                    f"(port {self.port}, dir {self.directory}). Log:\n{log}"
                )
            try:
                self._ping()
                return True
            except (_ForeignServer, *self._not_ready_errors()) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.kind} did not answer within {self.start_timeout:.0f} s "
                    f"(port {self.port}, dir {self.directory}); "
                    f"last error: {type(last_error).__name__}: {last_error}\n"
                    f"Log:\n{_log_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def _terminate(self) -> None:
        """Signal the process, escalating until it is gone, and reap it."""
        process = self.process
        if process is None:
            return
        try:
            steps = (
                (self.stop_signal, self.stop_timeout),
                (self.hurry_signal, 5.0),
                (signal.SIGKILL, 10.0),
            )
            for signum, timeout in steps:
                if process.poll() is not None:
                    break
                try:
                    process.send_signal(signum)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
            if process.poll() is None:
                raise RuntimeError(f"{self.kind} (pid {process.pid}) survived SIGKILL")
        finally:
            if process.poll() is not None:
                self.process = None


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


class RedisServer(_ManagedServer):
    """A ``redis-server`` of our own.

    Throwaway (no ``directory``): 127.0.0.1 on a free port, nothing persisted. Private (a
    ``directory``): a Unix socket only (mode 700, so only this system user reaches it), the
    append-only file on, and ACL users kept in ``users.acl`` (``ACL SAVE`` writes them), so a
    restart loses neither queued messages nor the nodes' broker users. Either way the
    ``default`` user has no password, so the coordinator can add ACL users.
    """

    kind = "redis"
    stop_signal = signal.SIGTERM  # Redis shuts down cleanly on SIGTERM (and writes its AOF).
    hurry_signal = signal.SIGTERM

    def __init__(
        self,
        start_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        redis_server: str | None = None,
        directory: Path | None = None,
    ) -> None:
        super().__init__(start_timeout=start_timeout, stop_timeout=stop_timeout, directory=directory)
        self.binary = redis_server or find_redis_server()
        self.socket = _socket_path(self.kept_directory, "redis.sock") if self.kept_directory else None

    @property
    def url(self) -> str:
        """The broker URL: ``redis://127.0.0.1:<port>/0`` or ``redis+socket://<socket>``."""
        if self.socket is not None:
            return f"redis+socket://{self.socket}"
        if self.port is None:
            raise RuntimeError("RedisServer is not started")
        return f"redis://{HOST}:{self.port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        """A ``redis.Redis`` client on database 0 (caller closes it)."""
        import redis

        if self.socket is not None:
            return redis.Redis(unix_socket_path=str(self.socket), **kwargs)
        return redis.Redis.from_url(self.url, **kwargs)

    def _prepare(self) -> None:
        if self.socket is None:
            return
        self.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        acl = self.directory / "users.acl"
        if not acl.exists():  # Redis refuses to start on a missing ACL file
            acl.write_text("user default on nopass sanitize-payload ~* &* +@all\n")

    def _command(self) -> list[str]:
        assert self.directory is not None
        common = ["--daemonize", "no", "--dir", str(self.directory)]
        if self.socket is None:
            return [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                *common,
            ]
        return [
            self.binary,
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            # No message a node can push is bigger (records are 8 MB at most: workers.protocol).
            "--proto-max-bulk-len",
            "16mb",
            "--save",
            "",
            "--aclfile",
            str(self.directory / "users.acl"),
            *common,
        ]

    def _popen_kwargs(self) -> dict[str, object]:
        return {"cwd": str(self.directory)}

    def _not_ready_errors(self) -> tuple[type[BaseException], ...]:
        import redis

        return (redis.exceptions.RedisError, OSError)

    def _ping(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No client-side retries: the readiness loop does the retrying, and
        # redis-py's default retry policy would add back-off sleeps.
        where = {"unix_socket_path": str(self.socket)} if self.socket else {"host": HOST, "port": self.port}
        client = redis.Redis(
            **where, socket_connect_timeout=1.0, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
        )
        try:
            if not client.ping():
                raise redis.exceptions.ConnectionError("PING did not return True")
            # redis-server is our direct child, so its pid is ours to compare.
            pid = client.info("server").get("process_id")
        finally:
            client.close()
        assert self.process is not None
        if pid != self.process.pid:
            raise _ForeignServer(
                f"{self.url} is answered by redis pid {pid}, not by ours ({self.process.pid})"
            )


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
#: A private cluster listens on no TCP port; the number only names its socket file.
_SOCKET_PORT = 5432


class PostgresServer(_ManagedServer):
    """A PostgreSQL cluster of our own, whose superuser is ``grid`` (``trust`` authentication).

    Throwaway (no ``directory``): 127.0.0.1 on a free port, tuned for speed, not safety
    (``fsync``, ``synchronous_commit`` and ``full_page_writes`` off). Private (a
    ``directory``): created once by ``initdb`` and kept, Unix socket only, durable settings.

    When this process is root the programs run as the ``postgres`` user, which then owns the
    cluster's folder; a private cluster's folder must be reachable by that user.
    """

    kind = "postgres"
    # SIGTERM would be a "smart" shutdown, which waits for every client to
    # disconnect: a leaked connection (e.g. a SQLAlchemy pool) would hang it.
    # SIGINT is the "fast" shutdown (disconnects clients, clean checkpoint);
    # SIGQUIT the "immediate" one.
    stop_signal = signal.SIGINT
    hurry_signal = signal.SIGQUIT

    user = "grid"

    def __init__(
        self,
        start_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        bin_dir: str | None = None,
        run_as: str | None = None,
        directory: Path | None = None,
    ) -> None:
        """
        Args:
            start_timeout: seconds to wait for initdb and for the server to
                accept connections (each).
            stop_timeout: seconds to wait after the fast shutdown request
                before escalating.
            bin_dir: directory holding ``initdb`` and ``postgres`` (default:
                that of ``find_postgres_bin("initdb")``, so both programs
                always come from the same installation).
            run_as: system user to run the server as when this process is
                root (default ``postgres``). Ignored when not root.
            directory: a private cluster's folder (see the class).
        """
        super().__init__(start_timeout=start_timeout, stop_timeout=stop_timeout, directory=directory)
        if bin_dir is None:
            # realpath: /usr/local/bin/initdb may be a symlink into
            # /usr/lib/postgresql/<v>/bin; take postgres from the real place.
            bin_dir = os.path.dirname(os.path.realpath(find_postgres_bin("initdb")))
        self.initdb = os.path.join(bin_dir, "initdb")
        self.postgres = os.path.join(bin_dir, "postgres")
        if not os.access(self.postgres, os.X_OK):
            self.postgres = find_postgres_bin("postgres")
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            name = run_as or "postgres"
            try:
                self._owner = pwd.getpwnam(name)
            except KeyError:
                raise RuntimeError(
                    f"running as root, but there is no {name!r} system user to run "
                    "PostgreSQL as (PostgreSQL refuses to run as root); it is created "
                    "by: apt-get install postgresql"
                ) from None
        self.socket_dir = (
            _socket_path(self.kept_directory, f".s.PGSQL.{_SOCKET_PORT}").parent
            if self.kept_directory
            else None
        )

    @property
    def os_user(self) -> str:
        """The system user the server runs as."""
        if self._owner is not None:
            return self._owner.pw_name
        try:
            return pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:  # a uid without a passwd entry (some containers)
            return str(os.geteuid())

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        if self.directory is None:
            raise RuntimeError("PostgresServer is not started")
        return self.directory / "data"

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy URL of database ``dbname`` (which may not exist)."""
        if self.socket_dir is not None:
            return f"postgresql+psycopg2://{self.user}@/{dbname}?host={self.socket_dir}&port={_SOCKET_PORT}"
        if self.port is None:
            raise RuntimeError("PostgresServer is not started")
        return f"postgresql+psycopg2://{self.user}@{HOST}:{self.port}/{dbname}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default ``postgres`` database."""
        return self.url_for("postgres")

    def connect(self, dbname: str = "postgres", **kwargs: object) -> psycopg2.extensions.connection:
        """A psycopg2 connection to ``dbname`` as the ``grid`` superuser."""
        import psycopg2

        if self.socket_dir is not None:
            where = {"host": str(self.socket_dir), "port": _SOCKET_PORT}
        else:
            where = {"host": HOST, "port": self.port}
        return psycopg2.connect(**where, user=self.user, dbname=dbname, **kwargs)

    def create_database(self, name: str, exist_ok: bool = False) -> str:
        """Create database ``name`` and return its SQLAlchemy URL.

        ``name`` must be a plain identifier (letters, digits, underscores).
        """
        if exist_ok:
            conn = self.connect("postgres", connect_timeout=10)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone():
                        return self.url_for(name)
            finally:
                conn.close()
        self._run_admin("CREATE DATABASE {}", name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its clients."""
        self._run_admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

    def _run_admin(self, statement: str, name: str) -> None:
        from psycopg2 import sql

        if not _DB_NAME.match(name):
            raise ValueError(f"invalid database name {name!r} (use [A-Za-z_][A-Za-z0-9_]*)")
        conn = self.connect("postgres", connect_timeout=10)
        try:
            conn.autocommit = True  # CREATE/DROP DATABASE refuse transactions
            with conn.cursor() as cur:
                cur.execute(sql.SQL(statement).format(sql.Identifier(name)))
        finally:
            conn.close()

    # -- hooks ---------------------------------------------------------------

    def _popen_kwargs(self) -> dict[str, object]:
        # cwd: the programs must be able to read their working directory
        # (initdb fails with "could not identify current directory" otherwise).
        kwargs: dict[str, object] = {"cwd": str(self.directory)}
        if self._owner is not None:
            kwargs.update(user=self._owner.pw_uid, group=self._owner.pw_gid, extra_groups=[])
        return kwargs

    def _prepare(self) -> None:
        assert self.directory is not None
        if self._owner is not None:
            if self.kept_directory is not None and not _reachable_by(self.directory, self._owner):
                raise ServerStartError(
                    f"PostgreSQL runs as the {self._owner.pw_name!r} user here (this process is "
                    f"root), and that user cannot reach {self.directory}: a folder above it is "
                    "closed to others. Set GRID_DATA_DIR to a folder it can reach (for example "
                    "/var/lib/koprogo-grid) or run as an ordinary user."
                )
            for folder in {self.directory, self.socket_dir} - {None}:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chown(folder, self._owner.pw_uid, self._owner.pw_gid)
        elif self.socket_dir is not None:
            self.socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if (self.data_dir / "PG_VERSION").exists():
            return  # a private cluster made by an earlier run
        command = [
            self.initdb,
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ]
        if self.kept_directory is None:
            command.append("--no-sync")
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=_server_env(),
                timeout=self.start_timeout,
                check=False,
                **self._popen_kwargs(),  # type: ignore[arg-type]
            )
        except subprocess.TimeoutExpired as exc:
            output = (exc.output or b"").decode(errors="replace")
            raise ServerStartError(
                f"initdb did not finish within {self.start_timeout:.0f} s. Output:\n{output}"
            ) from None
        if result.returncode != 0:
            who = f" as user {self._owner.pw_name!r}" if self._owner else ""
            raise ServerStartError(
                f"initdb failed{who} with status {result.returncode} in {self.directory}. "
                f"Command: {' '.join(command)}\nOutput:\n" + result.stdout.decode(errors="replace")
            )

    def _command(self) -> list[str]:
        assert self.directory is not None
        if self.socket_dir is not None:
            return [
                self.postgres,
                "-D",
                str(self.data_dir),
                "-p",
                str(_SOCKET_PORT),
                "-k",
                str(self.socket_dir),
                "-c",
                "listen_addresses=",
            ]
        return [
            self.postgres,
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.directory),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]

    def _not_ready_errors(self) -> tuple[type[BaseException], ...]:
        import psycopg2

        return (psycopg2.OperationalError, OSError)

    def _ping(self) -> None:
        conn = self.connect("postgres", connect_timeout=2)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('data_directory')")
                (data_directory,) = cur.fetchone()
        finally:
            conn.close()
        if os.path.realpath(data_directory) != os.path.realpath(self.data_dir):
            raise _ForeignServer(
                f"{self.url} is answered by the cluster in {data_directory}, not by ours ({self.data_dir})"
            )


# --------------------------------------------------------------------------
# Self-check
# --------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _self_check() -> int:
    """Start both servers, use them, stop them; print what happened."""
    print(f"python {sys.version.split()[0]}, euid {os.geteuid()}")
    redis_server = RedisServer()
    postgres_server = PostgresServer()
    print(f"redis-server: {redis_server.binary}")
    print(f"postgres:     {postgres_server.postgres} (as {postgres_server.os_user})")

    tmpdirs: list[Path] = []
    pids: list[int] = []
    try:
        redis_server.start()
        assert redis_server.directory is not None and redis_server.process is not None
        tmpdirs.append(redis_server.directory)
        pids.append(redis_server.process.pid)
        print(
            f"redis    {redis_server.url}  "
            f"started in {redis_server.startup_seconds:.3f} s "
            f"(pid {redis_server.process.pid})"
        )

        postgres_server.start()
        assert postgres_server.directory is not None
        assert postgres_server.process is not None
        tmpdirs.append(postgres_server.directory)
        pids.append(postgres_server.process.pid)
        print(
            f"postgres {postgres_server.url}  "
            f"started in {postgres_server.startup_seconds:.3f} s "
            f"(pid {postgres_server.process.pid})"
        )

        client = redis_server.client()
        try:
            if client.ping() is not True:
                raise RuntimeError("redis PING did not answer True")
            client.set("grid:selfcheck", "ok")
            if client.get("grid:selfcheck") != b"ok":
                raise RuntimeError("redis GET did not return what SET stored")
            version = client.info("server")["redis_version"]
        finally:
            client.close()
        print(f"redis    PING ok, SET/GET ok, redis_version {version}")

        db_url = postgres_server.create_database("grid_selfcheck")
        conn = postgres_server.connect("grid_selfcheck")
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT current_setting('server_version'), current_setting('fsync'), current_user"
                )
                pg_version, fsync, user = cur.fetchone()
                cur.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (41); SELECT x + 1 FROM t")
                (answer,) = cur.fetchone()
            conn.commit()
        finally:
            conn.close()
        if answer != 42:
            raise RuntimeError(f"postgres computed 41 + 1 = {answer}")
        print(f"postgres {db_url}  query ok (user {user}, server_version {pg_version}, fsync {fsync})")
    finally:
        began = time.monotonic()
        redis_server.stop()
        redis_stop = time.monotonic() - began
        began = time.monotonic()
        postgres_server.stop()
        postgres_stop = time.monotonic() - began
        print(f"stopped: redis in {redis_stop:.3f} s, postgres in {postgres_stop:.3f} s")

    leftovers = [str(path) for path in tmpdirs if path.exists()]
    survivors = [pid for pid in pids if _pid_alive(pid)]
    if leftovers or survivors:
        print(f"FAILED: left behind dirs {leftovers}, pids {survivors}", file=sys.stderr)
        return 1
    print("self-check ok: no process or directory left behind")
    return 0


if __name__ == "__main__":
    sys.exit(_self_check())
