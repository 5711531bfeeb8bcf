"""The suite's secret check can fail: a credential in a log record, on stderr or in a subprocess's
output is found (negative control for the `log_journal` fixture every fault test ends with)."""

from __future__ import annotations

import logging
import os
import secrets

from pipelines.resources.fhir.auth import fingerprint
from tests.faults.support import LogJournal


def test_the_journal_finds_a_secret_in_every_captured_channel(log_journal: LogJournal) -> None:
    in_record, on_stderr, in_subprocess = (f"secret-{secrets.token_urlsafe(16)}" for _ in range(3))
    log_journal.extra_secrets.update({in_record, on_stderr, in_subprocess})

    logging.getLogger("some.library").debug("sending Authorization: %s", in_record)  # no redacting filter
    os.write(2, f"raw stderr {on_stderr}\n".encode())
    log_journal.add_text(f"subprocess said {in_subprocess}")

    planted = (in_record, on_stderr, in_subprocess)
    assert sorted(log_journal.leaks()) == sorted(fingerprint(s) for s in planted)
    # Forget them again: the fixture's own check at teardown must pass for this test.
    log_journal.extra_secrets.clear()


def test_the_client_logger_masks_a_token_that_slips_into_a_message(log_journal: LogJournal) -> None:
    token = f"eyJ{secrets.token_urlsafe(12)}.{secrets.token_urlsafe(20)}.{secrets.token_urlsafe(20)}"
    log_journal.extra_secrets.add(token)
    logging.getLogger("alliance_qi.fhir").warning("retrying with Authorization: Bearer %s", token)
    assert log_journal.leaks() == []
    assert "Bearer ***" in log_journal.text()
