"""The reconnect policy of every NATS client (shared/messaging/bus.py): a server restarting is
found again within seconds, one gone for good costs an attempt every RECONNECT_MAX_S and a log
line every LOG_REPEATS_EVERY attempts, not two attempts and two lines a second."""

from __future__ import annotations

from shared.messaging.bus import LOG_REPEATS_EVERY, RECONNECT_MAX_S, reconnect_delay, worth_logging


def test_reconnects_start_at_once_then_back_off_to_a_ceiling():
    delays = [reconnect_delay(n) for n in range(10)]
    assert delays[:6] == [0.0, 0.5, 1.0, 2.0, 4.0, RECONNECT_MAX_S]
    assert delays[6:] == [RECONNECT_MAX_S] * 4
    assert reconnect_delay(10**6) == RECONNECT_MAX_S  # an hour of attempts does not overflow


def test_an_hour_without_a_server_logs_a_few_dozen_lines():
    attempts = int(3600 / RECONNECT_MAX_S)
    logged = [n for n in range(1, attempts + 1) if worth_logging(n)]
    assert logged[:8] == [1, 2, 4, 8, 16, 32, 64, LOG_REPEATS_EVERY]
    assert len(logged) < 20, len(logged)
