"""Which worker a Docker event wakes (shoal/operator/runtime.py: database_of_event), on the
attributes real events carry: containers have the database label, services only a name."""

from __future__ import annotations

import pytest

from shoal import names
from shoal.operator.runtime import database_of_event

pytestmark = pytest.mark.unit

DATABASES = ("orders", "billing")


def test_a_member_container_names_its_database_by_label() -> None:
    attrs = {names.LABEL_DATABASE: "billing", "name": "billing-1.1.x"}
    assert database_of_event(attrs, DATABASES) == "billing"


def test_member_and_proxy_services_wake_their_database() -> None:
    assert database_of_event({"name": "orders-2"}, DATABASES) == "orders"
    assert database_of_event({"name": "orders-rw"}, DATABASES) == "orders"


def test_an_update_of_the_anchor_wakes_its_database() -> None:
    """`shoal switchover` writes its request to the anchor service: that update is the
    event that starts the switchover without waiting for the worker's timer."""
    assert database_of_event({"name": names.anchor_service("billing")}, DATABASES) == "billing"


def test_other_services_wake_nobody() -> None:
    assert database_of_event({"name": names.OPERATOR_SERVICE}, DATABASES) is None
    assert database_of_event({"name": "shoal-db-unknown"}, DATABASES) is None
    assert database_of_event({}, DATABASES) is None
