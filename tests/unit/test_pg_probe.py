"""The operator's reading of a member agent's `GET /state` (plugins/postgres/model.py:
`PgProbe.parse`): today's answers and the recorded ones parse; an answer of a newer format or
a malformed one is no usable answer (`UnusableAnswer`; the plugin's probe then returns None,
counted like a member that did not answer), and nothing else ever escapes the parser."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.plugins.base import UnusableAnswer
from shoal.plugins.postgres.agent import member, pg
from shoal.plugins.postgres.model import PROBE_FORMAT, PgProbe
from shoal.plugins.postgres.plugin import PostgresPlugin

pytestmark = pytest.mark.unit

RECORDINGS = Path(__file__).parent / "recordings"


def recorded() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(RECORDINGS.glob("*.json")):
        for name, raw in json.loads(path.read_text())["probes"].items():
            if raw is not None:
                out.append((f"{path.stem}/{name}", raw))
    return out


RECORDED = recorded()
PRIMARY = next(raw for _, raw in RECORDED if raw.get("role") == "primary")


@pytest.mark.parametrize(("where", "raw"), RECORDED, ids=[w for w, _ in RECORDED])
def test_recorded_answers_parse_and_round_trip(where: str, raw: dict[str, Any]) -> None:
    probe = PgProbe.parse(raw)  # recorded before the format field: format 1
    assert probe.state == raw["state"]
    assert probe.fence_token == raw["fence_token"]
    assert PgProbe.parse(probe.model_dump(mode="json")) == probe


def test_wire_shapes() -> None:
    raw = {
        **PRIMARY,
        "format": PROBE_FORMAT,
        "slots": [{"name": "orders_2", "restart_lsn": 5}, {"name": "orders_0"}],
        "certificate_serial": "1f",
        "upstream": "",
        "task_id": "",
        "synchronous_standby_names": None,
        "fence_token": None,
        "history": [[1, 100], [2, 200]],
        "system_identifier": 7301234567890123456,
    }
    probe = PgProbe.parse(raw)
    assert probe.slots == ("orders_0", "orders_2")
    assert probe.certificate_serial == 0x1F
    assert probe.upstream is None and probe.task_id is None
    assert probe.synchronous_standby_names == "" and probe.fence_token == 0
    assert probe.history == ((1, 100), (2, 200))
    assert probe.system_identifier == "7301234567890123456"
    assert probe.is_primary


def test_todays_agent_answer_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's own answer (an empty member: no PostgreSQL needed) carries the format
    this operator reads."""
    monkeypatch.setattr(pg, "DATA_DIR", tmp_path / "pgdata")
    monkeypatch.setattr(member, "FENCE_FILE", tmp_path / "fence.json")
    monkeypatch.setenv("SHOAL_TASK_ID", "task-1")
    body = json.loads(json.dumps(member.Agent("orders-0").state_body()))
    assert body["format"] == member.STATE_FORMAT == PROBE_FORMAT, (
        "a new agent answer format needs the operator's parser (model.py) to learn it"
    )
    probe = PgProbe.parse(body)
    assert probe.state == "empty" and probe.task_id == "task-1" and not probe.has_data


@pytest.mark.parametrize("fmt", [PROBE_FORMAT + 1, 99])
def test_a_newer_format_is_no_usable_answer(fmt: int) -> None:
    with pytest.raises(UnusableAnswer, match="newer than this operator's"):
        PgProbe.parse({**PRIMARY, "format": fmt})


@pytest.mark.parametrize(
    "change",
    [
        {"format": "1"},
        {"format": 0},
        {"format": True},
        {"state": "promoting"},  # a state this operator does not know
        {"role": "leader"},
        {"state": None},
        {"timeline": "two"},
        {"wal_lsn": [1]},
        {"slots": "orders_0"},
        {"slots": [{"restart_lsn": 5}]},
        {"slots": [1, "a"]},
        {"parameters": ["work_mem"]},
        {"history": [[1]]},
        {"history": [[1, 2, 3]]},
        {"certificate_serial": "zz"},
        {"fence_token": "many"},
        {"durability_overrides": "app"},
    ],
)
def test_a_malformed_answer_is_no_usable_answer(change: dict[str, Any]) -> None:
    with pytest.raises(UnusableAnswer):
        PgProbe.parse({**copy.deepcopy(PRIMARY), **change})


@pytest.mark.parametrize("answer", [None, [], "running", 42, [PRIMARY]])
def test_an_answer_that_is_not_an_object_is_no_usable_answer(answer: object) -> None:
    with pytest.raises(UnusableAnswer, match="not an object"):
        PgProbe.parse(answer)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
FIELDS = st.sampled_from([*sorted(PgProbe.model_fields), "format", "member", "nonsense"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(FIELDS, JSON, max_size=8), st.booleans())
def test_fuzz_the_parser_only_answers_or_refuses(changes: dict[str, Any], base: bool) -> None:
    answer = {**copy.deepcopy(PRIMARY), **changes} if base else changes
    try:
        probe = PgProbe.parse(answer)
    except UnusableAnswer:
        return
    assert PgProbe.parse(probe.model_dump(mode="json")) == probe


async def test_the_plugins_probe_counts_an_unusable_answer_as_none(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = PostgresPlugin()
    answers: list[object] = []

    async def document(*_: Any, **__: Any) -> object:
        return answers.pop(0)

    monkeypatch.setattr(plugin, "probe_document", document)
    caplog.set_level(logging.WARNING, "shoal.postgres")
    answers[:] = [{**PRIMARY, "format": PROBE_FORMAT + 1}] * 2 + [{"state": 5}, PRIMARY]
    for _ in range(2):
        assert await plugin.probe(None, "orders-1", None) is None  # type: ignore[arg-type]
    assert await plugin.probe(None, "orders-1", None) is None  # type: ignore[arg-type]
    probe = await plugin.probe(None, "orders-1", None)  # type: ignore[arg-type]
    assert probe is not None and probe.is_primary
    logged = [r.getMessage() for r in caplog.records if getattr(r, "event", "") == "probe-unusable"]
    assert len(logged) == 2  # once per reason, not once per probe
    assert "newer than this operator's" in logged[0] and "malformed" in logged[1]
