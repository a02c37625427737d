"""The stack's credentials, made on first use and kept in one owner-only directory:

    <root>/                     0700; RESEARCHER_CREDENTIALS, default <researcher home>/credentials
      ca/ca.pem, ca/ca-key.pem  the private CA (its key never leaves this directory)
      server/                   ca.pem, cert.pem, key.pem: the NATS server's (names: server_names())
      roles/<role>/             ca.pem, cert.pem, key.pem, role: one per role of permissions.ROLES

A role's directory is all a process of that role needs (NATS_CREDENTIALS names it): the CA that
verifies the server, and the certificate that is its identity (nats-server's verify_and_map takes
the certificate's e-mail name as the user). Copying roles/evaluator/ to another machine is how a
remote evaluator joins (`researcher credentials evaluator` says so).

Nothing here logs a key or writes one anywhere else; files are 0600 and directories 0700."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import secrets
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ResearcherError

ROLE_FILES = ("ca.pem", "cert.pem", "key.pem")
RENEW_BEFORE = dt.timedelta(days=30)  # a certificate this close to expiring is made again
COMPOSE_HOST = "nats"  # the server's name on the compose network


class CredentialsError(ResearcherError):
    """A credential that is missing, unreadable or not the stack's."""


def identity(role: str) -> str:
    """The NATS user a role's certificate maps to."""
    return f"{role}@pytorch-researcher"


def inbox_prefix(role: str) -> str:
    """Where a role's replies arrive: its own, so no other role can subscribe to them."""
    return f"_INBOX.{role}"


def default_root() -> Path:
    """RESEARCHER_CREDENTIALS, else the default home's credentials/ (researcher/home.py)."""
    from researcher.home import Home, default_home  # the home's rules (RESEARCHER_HOME, XDG) in one place

    return Home(default_home()).credentials.root


@dataclass(frozen=True)
class RoleCredential:
    """A role's directory: what a client needs to connect as that role."""
    path: Path

    @property
    def role(self) -> str:
        return (self.path / "role").read_text().strip()

    def check(self) -> "RoleCredential":
        missing = [name for name in (*ROLE_FILES, "role") if not (self.path / name).is_file()]
        if missing:
            raise CredentialsError(f"{self.path} is not a NATS credential of this stack: {', '.join(missing)} "
                                   f"missing (`researcher credentials ROLE` shows where a role's files are)")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """TLS that verifies the server against the stack's CA and presents this role's certificate."""
        self.check()
        try:
            context = ssl.create_default_context(cafile=str(self.path / "ca.pem"))
            context.load_cert_chain(str(self.path / "cert.pem"), str(self.path / "key.pem"))
        except (OSError, ssl.SSLError) as exc:
            raise CredentialsError(f"cannot read the NATS credential in {self.path}: {exc}") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def _interface_addresses() -> set[str]:
    """This machine's IPv4 (SIOCGIFADDR per interface) and IPv6 (/proc/net/if_inet6) addresses."""
    found: set[str] = set()
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
                found.add(socket.inet_ntoa(packed[20:24]))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw)))
    return {a for a in found if not a.startswith("fe80")}  # link-local needs a zone: useless in a certificate


def server_names(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Every name and address a client may dial the server by: loopback, the compose service name,
    this host's names and addresses, and `extra` (NATS_HOSTS: a DNS name or a NAT address)."""
    names = {"localhost", "127.0.0.1", "::1", COMPOSE_HOST, socket.gethostname(), socket.getfqdn()}
    names |= _interface_addresses()
    names |= {h.strip() for h in extra if h.strip()}
    return sorted(n for n in names if n)


def _write(path: Path, data: bytes) -> None:
    """Owner-only from the first byte (never briefly world-readable), then renamed into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # writers at once: their own
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _due(cert: Path, ca_pem: bytes) -> bool:
    from shared.security import pki

    if not cert.is_file():
        return True
    pem = cert.read_bytes()
    return not pki.signed_by(pem, ca_pem) or pki.expires(pem) - dt.datetime.now(dt.timezone.utc) < RENEW_BEFORE


@dataclass(frozen=True)
class Credentials:
    """The stack's credential directory (see the module's doc)."""
    root: Path

    def role(self, role: str) -> RoleCredential:
        return RoleCredential(self.root / "roles" / role)

    @property
    def server(self) -> Path:
        return self.root / "server"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.pem"

    def ensure(self, hosts: list[str] | tuple[str, ...] = ()) -> list[str]:
        """Make what is missing: the CA, the server's certificate (again when it does not cover
        server_names(hosts) or is near its end: the CA stays, so the roles' files stay valid), and
        each role's certificate. Safe from several processes at once (a lock). -> what it made."""
        from shared.security import pki
        from shared.security.permissions import ROLES

        made: list[str] = []
        _dir(self.root)
        _dir(self.root / "roles")
        with os.fdopen(os.open(self.root / ".lock", os.O_WRONLY | os.O_CREAT, 0o600), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            ca_dir = _dir(self.root / "ca")
            if not (ca_dir / "ca-key.pem").is_file():
                ca = pki.make_ca()
                _write(ca_dir / "ca-key.pem", ca.key)
                _write(ca_dir / "ca.pem", ca.cert)
                made.append("ca")
            ca = pki.Issued(self.ca_cert.read_bytes(), (ca_dir / "ca-key.pem").read_bytes())
            wanted = set(server_names(hosts))
            server = _dir(self.server)
            covered = set() if _due(server / "cert.pem", ca.cert) else pki.server_hosts((server / "cert.pem").read_bytes())
            if not wanted <= covered:  # names are only ever added: a network that comes and goes costs one issue
                issued = pki.make_server(ca, sorted(wanted | covered))
                _write(server / "key.pem", issued.key)
                _write(server / "cert.pem", issued.cert)
                made.append("server")
            _write(server / "ca.pem", ca.cert)
            for role in ROLES:
                where = _dir(self.root / "roles" / role)
                if _due(where / "cert.pem", ca.cert) or not (where / "role").is_file():
                    issued = pki.make_client(ca, identity(role))
                    _write(where / "key.pem", issued.key)
                    _write(where / "cert.pem", issued.cert)
                    _write(where / "role", f"{role}\n".encode())
                    made.append(role)
                if not (where / "ca.pem").is_file() or (where / "ca.pem").read_bytes() != ca.cert:
                    _write(where / "ca.pem", ca.cert)
        return made

    def write_server_config(self) -> Path:
        """The server's configuration beside its certificate (no secret in it: paths and permissions)."""
        from shared.messaging.limits import MAX_PAYLOAD
        from shared.security.permissions import server_config

        path = self.server / "nats.conf"
        _write(path, server_config(str(self.server.resolve()), max_payload=MAX_PAYLOAD).encode())
        return path


def for_client(explicit: str | os.PathLike | None = None, role: str = "client") -> RoleCredential | None:
    """The credential a process connects with: `explicit` (a role directory), else NATS_CREDENTIALS,
    else this machine's stack's `role` credential when it exists; None: connect without one (a
    server of the user's own without TLS)."""
    chosen = explicit or os.environ.get("NATS_CREDENTIALS")
    if chosen:
        return RoleCredential(Path(chosen).expanduser()).check()
    found = Credentials(default_root()).role(role)
    return found if (found.path / "role").is_file() else None
