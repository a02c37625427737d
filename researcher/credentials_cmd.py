"""`researcher credentials [ROLE]`: make the stack's NATS credentials where they are missing
(shared/security/credentials.py) and say where they are; with a ROLE, its files and how another
machine uses them (the evaluator's, for a GPU machine joining the head)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from researcher.goals import DefaultsHelp


def add_parser(sub) -> None:
    from shared.security.permissions import ROLES  # the role names only: no cryptography at start-up

    p = sub.add_parser("credentials", formatter_class=DefaultsHelp,
                       help="make the stack's NATS credentials (a CA, one certificate per role) and show where they are")
    p.add_argument("role", nargs="?", choices=sorted(ROLES), help="show this role's files and how to use them elsewhere")
    p.add_argument("--dir", type=Path, default=None,
                   help="the credentials' directory (default: $RESEARCHER_CREDENTIALS, else <home>/credentials)")
    p.add_argument("--hosts", default=os.environ.get("NATS_HOSTS", ""),
                   help="more names or addresses the head is dialled by (comma-separated), for its server certificate; "
                        "this machine's names and addresses are always in it (default: $NATS_HOSTS)")
    p.add_argument("--path", action="store_true", help="print the directory (or the role's) and nothing else")
    p.add_argument("--made", action="store_true", help="print what was made now (ca, server, roles), and nothing else")


def run(args: argparse.Namespace) -> int:
    from shared.security import pki
    from shared.security.credentials import Credentials, CredentialsError, default_root

    credentials = Credentials((args.dir or default_root()).expanduser().resolve())
    try:
        made = credentials.ensure([h for h in args.hosts.split(",") if h.strip()])
    except (OSError, CredentialsError) as exc:
        print(f"error: cannot make the credentials in {credentials.root}: {exc}", file=sys.stderr)
        return 1
    where = credentials.role(args.role).path if args.role else credentials.root
    if args.made:
        print(" ".join(made))
        return 0
    if args.path:
        print(where)
        return 0
    if made:
        print(f"made: {', '.join(made)}", file=sys.stderr)
    if not args.role:
        names = sorted(pki.server_hosts((credentials.server / "cert.pem").read_bytes()))
        print(f"{credentials.root}  (owner-only; never commit or copy it whole)\n"
              f"  ca/        the stack's private CA (its key stays here)\n"
              f"  server/    the NATS server's certificate, for: {', '.join(names)}\n"
              f"  roles/     one certificate per role: {', '.join(sorted(p.name for p in (credentials.root / 'roles').iterdir()))}\n"
              f"another machine's evaluators: researcher credentials evaluator")
        return 0
    print(f"{where}/\n"
          f"  ca.pem     the stack's CA certificate: verifies the head's NATS server\n"
          f"  cert.pem   the {args.role}'s certificate: its identity and permissions on the stack's NATS\n"
          f"  key.pem    its private key (keep it owner-only)\n"
          f"  role       the role's name")
    if args.role == "evaluator":
        print(f"\nOn a GPU machine that joins this head (its NATS published with NATS_BIND=0.0.0.0 make up):\n"
              f"  scp -r {where} GPU-MACHINE:pytorch-researcher-evaluator\n"
              f"  make evaluator NATS_URL=tls://HEAD:4222 NATS_CREDENTIALS=~/pytorch-researcher-evaluator [GPU=1]\n"
              f"HEAD must be a name or address in the server's certificate (researcher credentials lists them; "
              f"add others with --hosts or NATS_HOSTS, then make up again)")
    return 0
