"""gateway/store/entries.py: stream ids ordered the one way Redis orders them."""

from __future__ import annotations

from gateway.store.entries import pad_id, stream_order, unpad_id

IDS = ["10-0", "9-5", "9-10", "1700000000000-3", "5", "1700000000000-12"]
REDIS_ORDER = ["5", "9-5", "9-10", "10-0", "1700000000000-3", "1700000000000-12"]


def test_stream_order_is_numeric_not_lexical():
    assert sorted(IDS, key=stream_order) == REDIS_ORDER
    assert sorted(IDS) != REDIS_ORDER  # what a string sort would get wrong
    assert stream_order("5") == stream_order("5-0") == (5, 0)


def test_padded_ids_sort_as_strings_in_stream_order_and_come_back():
    assert sorted(IDS, key=pad_id) == REDIS_ORDER
    assert [unpad_id(pad_id(i)) for i in ["9-5", "1700000000000-12"]] == ["9-5", "1700000000000-12"]
