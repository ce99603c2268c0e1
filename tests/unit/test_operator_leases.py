"""The operator's lease book (operator/leases.py): renewals are booked against the container
that received them, so a replacement answering under a member's name never extends the
lease of the old container stranded on a lost node."""

from __future__ import annotations

import pytest

from shoal.operator.leases import LeaseBook

pytestmark = pytest.mark.unit
MEMBERS = ["db-0", "db-1", "db-2"]


def test_a_grant_names_the_other_members_and_the_token() -> None:
    book = LeaseBook(opened=0.0)
    grant = book.grant("db-1", 5.0, MEMBERS, token=3)
    assert grant is not None and grant.peers == ("db-0", "db-2") and grant.token == 3
    assert book.grant("db-1", None, MEMBERS, token=3) is None


def test_no_renewal_after_a_probe_that_got_no_answer() -> None:
    book = LeaseBook(opened=0.0)
    book.book("db-1", 1.0, renewed=True, answered_by=None, may_run=["t-old"], answered=False)
    assert book.grant("db-1", 5.0, MEMBERS, token=1) is None
    book.book("db-1", 2.0, renewed=False, answered_by="t-old", may_run=["t-old"], answered=True)
    assert book.grant("db-1", 5.0, MEMBERS, token=1) is not None


def test_a_replacement_answering_does_not_renew_the_stranded_container() -> None:
    book = LeaseBook(opened=0.0)
    book.book("db-1", 10.0, renewed=True, answered_by="t-old", may_run=["t-old"], answered=True)
    # The node is lost; Swarm starts t-new elsewhere and it answers every probe.
    for at in (20.0, 30.0, 40.0):
        book.book("db-1", at, renewed=True, answered_by="t-new", may_run=["t-new"], answered=True)
    assert book.left(["t-old"], ttl=5.0, margin=3.0, now=18.0) == 0.0
    assert book.left(["t-old"], ttl=5.0, margin=3.0, now=17.0) == 1.0


def test_a_renewal_nobody_answered_counts_for_every_container_that_may_run() -> None:
    book = LeaseBook(opened=0.0)
    book.book(
        "db-1", 50.0, renewed=True, answered_by=None, may_run=["t-old", "t-new"], answered=False
    )
    assert book.left(["t-old"], ttl=5.0, margin=3.0, now=50.0) == 8.0


def test_a_container_never_renewed_here_counts_from_the_books_opening() -> None:
    book = LeaseBook(opened=100.0)
    assert book.left(["t-old"], ttl=5.0, margin=3.0, now=104.0) == 4.0
    assert book.left([], ttl=5.0, margin=3.0, now=104.0) == 0.0
    assert book.left(["t-old"], ttl=None, margin=3.0, now=104.0) == 0.0


def test_forgotten_tasks_fall_back_to_the_opening() -> None:
    book = LeaseBook(opened=0.0)
    book.book("db-1", 90.0, renewed=True, answered_by="t-old", may_run=[], answered=True)
    book.prune({"t-new"})
    assert book.left(["t-old"], ttl=5.0, margin=0.0, now=90.0) < 0


def test_a_renewal_between_probes_extends_the_lease_of_the_container_that_took_it() -> None:
    book = LeaseBook(opened=0.0)
    book.book("db-1", 1.0, renewed=True, answered_by="t-1", may_run=["t-1"], answered=True)
    book.book_renewal("db-1", 3.0, answered_by="t-1", may_run=["t-1"], answered=True)
    assert book.left(["t-1"], ttl=2.0, margin=1.0, now=3.0) == 3.0


def test_an_unanswered_renewal_counts_and_stops_the_next_one() -> None:
    book = LeaseBook(opened=0.0)
    book.book("db-1", 1.0, renewed=True, answered_by="t-1", may_run=["t-1"], answered=True)
    book.book_renewal("db-1", 2.0, answered_by=None, may_run=["t-1"], answered=False)
    assert book.left(["t-1"], ttl=2.0, margin=1.0, now=2.0) == 3.0  # it may have arrived
    assert book.grant("db-1", 2.0, MEMBERS, token=1) is None  # only a probe renews it now


def test_an_answered_renewal_does_not_make_a_silent_engine_count_as_answering() -> None:
    # The agent answers, its PostgreSQL does not: the probe said so, a renewal cannot undo it.
    book = LeaseBook(opened=0.0)
    book.book("db-1", 1.0, renewed=True, answered_by="t-1", may_run=["t-1"], answered=False)
    book.book_renewal("db-1", 2.0, answered_by="t-1", may_run=["t-1"], answered=True)
    assert book.grant("db-1", 2.0, MEMBERS, token=1) is None


def test_a_late_answer_never_moves_the_lease_end_back() -> None:
    # A renewal and a probe run concurrently: the earlier-sent one may be booked last.
    book = LeaseBook(opened=0.0)
    book.book("db-1", 5.0, renewed=True, answered_by="t-1", may_run=["t-1"], answered=True)
    book.book_renewal("db-1", 4.0, answered_by="t-1", may_run=["t-1"], answered=True)
    assert book.left(["t-1"], ttl=2.0, margin=1.0, now=5.0) == 3.0
    book.book_renewal("db-1", 6.0, answered_by="t-1", may_run=["t-1"], answered=True)
    book.book("db-1", 5.5, renewed=True, answered_by="t-1", may_run=["t-1"], answered=True)
    assert book.left(["t-1"], ttl=2.0, margin=1.0, now=6.0) == 3.0
