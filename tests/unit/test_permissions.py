"""The permission table: what the server enforces is what the README says, and the roles' lists
keep the shape the attack tests (tests/integration/test_nats_security.py) rely on."""

from pathlib import Path

from shared.messaging import subjects as s
from shared.security.permissions import ROLES, permission_table, permissions, server_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_shows_the_table_the_server_enforces():
    assert permission_table() in README.read_text(), "README's permission table is stale: paste permission_table()"


def test_no_role_but_the_admin_may_delete_a_stream_or_use_wildcards_everywhere():
    for name, role in ROLES.items():
        if name == "admin":
            continue
        assert ">" not in role.publish and ">" not in role.subscribe, name
        assert not any(p.startswith("$JS.API.STREAM.DELETE") or p == "$JS.API.>" for p in role.publish), name


def test_readers_may_make_no_consumer_and_write_nothing():
    for name in ("client", "dashboard"):
        publish = ROLES[name].publish
        assert not any(".CONSUMER." in p or p.startswith(("$KV.", "$O.", "$JS.ACK")) for p in publish), name
        assert s.EVAL_SUBJECT not in publish and not any(p.startswith(s.RESULTS_SUBJECT_PREFIX) for p in publish)


def test_a_role_that_publishes_nothing_is_denied_all_rather_than_left_open():
    # nats-server reads an empty allow list as no restriction at all
    assert permissions("assembler")["publish"] == {"deny": [">"]}
    assert permissions("assembler")["allow_responses"] is True  # one reply per request, no time limit
    assert "_INBOX.assembler.>" in permissions("assembler")["subscribe"]["allow"]


def test_the_server_configuration_requires_a_certificate_of_the_ca():
    text = server_config("/tls", max_payload=8 << 20)
    assert '"verify_and_map": true' in text and '"ca_file": "/tls/ca.pem"' in text
    assert '"max_payload": 8388608' in text
