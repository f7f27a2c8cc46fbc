"""The one deadline map (`broker.domain.deadlines.DEADLINES`) agrees with the ledger's columns."""

from __future__ import annotations

from broker.domain.deadlines import DEADLINE_NAMES, DEADLINES, deadline_met_by
from broker.store.tables import DEADLINE_COLUMNS, cases


def test_every_deadline_names_two_real_columns_and_its_index() -> None:
    assert tuple(rule.name for rule in DEADLINES) == DEADLINE_NAMES
    indexes = {index.name: [c.name for c in index.columns] for index in cases.indexes}
    for rule in DEADLINES:
        due, met = DEADLINE_COLUMNS[rule.name]
        assert (due.name, met.name) == (rule.due_column, rule.met_column)
        assert rule.met_by == deadline_met_by(rule.name)
        assert ["area", rule.due_column] in indexes.values()
    # The partial index names are fixed by migration 0001.
    assert {"ix_cases_open_ack", "ix_cases_open_assessment", "ix_cases_open_decision"} <= set(indexes)
