"""The maintenance mark's record of where an evacuation took the guests: what is kept, what is refused."""

from __future__ import annotations

import pytest
from ansible_collections.kvm.migration.plugins.module_utils._errors import InvalidRequest
from ansible_collections.kvm.migration.plugins.module_utils._maintenance import merge_moves, recorded_moves

ROWS = [
    {"name": "web01", "from": "hv1", "to": "hv2", "strategy": "live (pre-copy)", "seconds": 3.2, "result": "moved"},
    {"name": "db01", "from": "hv1", "to": "hv3", "strategy": "offline", "result": "moved"},
    {"name": "big", "from": "hv1", "to": None, "strategy": "", "result": "failed"},
    {"name": "old", "from": "hv1", "to": "hv2", "strategy": "", "result": "in place"},
]


def test_only_the_guests_that_moved_are_recorded_with_where_they_went():
    assert recorded_moves(ROWS) == [
        {"name": "web01", "to": "hv2", "strategy": "live (pre-copy)"},
        {"name": "db01", "to": "hv3", "strategy": "offline"},
    ]


@pytest.mark.parametrize("row, named", [
    ({"name": "", "to": "hv2"}, "moved[0].name"),
    ({"name": "a/b", "to": "hv2"}, "moved[0].name"),
    ({"name": "web01", "to": "hv2\nhv3"}, "moved[0].to"),
    ({"name": "web01"}, "moved[0].to"),
    ({"name": "x" * 256, "to": "hv2"}, "moved[0].name"),
    ("web01", "moved[0] must be a dict"),
])
def test_a_row_that_is_no_move_is_refused_by_its_place(row, named):
    with pytest.raises(InvalidRequest) as raised:
        recorded_moves([row])
    assert named in str(raised.value)


def test_too_many_rows_are_refused():
    with pytest.raises(InvalidRequest, match="at most 1000 rows"):
        recorded_moves([{"name": "g%d" % i, "to": "hv2"} for i in range(1001)])


def test_the_latest_move_of_a_guest_wins_and_earlier_guests_stay():
    earlier = [{"name": "web01", "to": "hv2", "strategy": "live"}, {"name": "app", "to": "hv3", "strategy": "live"}]
    merged = merge_moves(earlier, [{"name": "web01", "to": "hv3", "strategy": "offline"}])
    assert merged == [{"name": "app", "to": "hv3", "strategy": "live"},
                      {"name": "web01", "to": "hv3", "strategy": "offline"}]
    assert merge_moves(merged, []) == merged
    assert merge_moves(None, []) == []
