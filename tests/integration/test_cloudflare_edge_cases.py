"""Cloudflare's less common answers, end to end, with the KV emulator's switches.

- bulk get decoding a value that is not UTF-8 with U+FFFD replacements instead of
  refusing it (``bulk_get_lossy_text``): the record must hold the exact bytes;
- bulk get refusing a batch whose values are too large with a 413
  (``bulk_get_max_bytes``): the batch is split, and every key synced;
- key listings answering empty pages that still carry a cursor
  (``list_empty_pages_first``/``_between``): every key listed, deletions still right;
- the ``Ratelimit``/``Ratelimit-Policy`` headers of a rate-limited API (``rate_limit``):
  the function slows down before Cloudflare would answer 429.
"""

from __future__ import annotations

import pytest

from tests.support.kv_data import seed
from tests.support.stack import Stack


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ten keys a listing page (the API's minimum), so that a few dozen keys span pages.
    monkeypatch.setattr("kv_sync.pages.LIST_PAGE_SIZE", 10)


def raw_reads(stack: Stack) -> list[str | None]:
    """The keys read one by one through ``GET .../values/<key>``, in order."""
    return [
        r.key for r in stack.emulator.requests if (r.route or "").endswith("/values/{key_name}")
    ]


def statuses(stack: Stack, path: str) -> list[int | None]:
    """The statuses the emulator answered on the route ending in ``path``, in order."""
    return [r.status for r in stack.emulator.requests if (r.route or "").endswith(path)]


@pytest.mark.parametrize("selector", [{"all": True}, {"key_names": ["bin", "fffd", "plain"]}])
def test_lossy_bulk_get_text_is_reread_as_exact_bytes(stack: Stack, selector: dict[str, object]):
    # GIVEN a bulk get that answers values which are not UTF-8 as text with U+FFFD
    stack.emulator.bulk_get_lossy_text = True
    # AND a binary value, a text that really holds U+FFFD, and a plain text
    ns = stack.namespace_id
    binary = b"\xff\xfeGIF89a\x80\x00\x01raw"
    stack.emulator.put(ns, "bin", binary, metadata={"kind": "image"})
    stack.emulator.put(ns, "fffd", "replaced \ufffd char".encode())
    stack.emulator.put(ns, "plain", b"plain text")
    stack.emulator.reset_stats()

    # WHEN they are synced
    response = stack.invoke(selector)

    # THEN every record holds exactly the bytes KV holds
    assert response["success"] is True, response
    assert stack.values() == {
        "bin": binary,
        "fffd": "replaced \ufffd char".encode(),
        "plain": b"plain text",
    }
    stored = stack.items()
    assert stored["bin"]["value_type"] == "binary"
    assert stored["bin"]["metadata"] == {"kind": "image"}
    assert stored["fffd"]["value_type"] == "string"
    # AND only the values bulk get may have altered were read again, one by one
    assert sorted(key for key in raw_reads(stack) if key is not None) == ["bin", "fffd"]


def test_lossy_single_key_is_reread_as_exact_bytes(stack: Stack):
    # GIVEN a lossy bulk get and a binary value
    stack.emulator.bulk_get_lossy_text = True
    stack.emulator.put(stack.namespace_id, "logo", b"\x89PNG\r\n\x1a\n\xff\xd8")

    # WHEN that one key is synced
    response = stack.invoke({"key_name": "logo"})

    # THEN its record holds the exact bytes
    assert response["success"] is True, response
    assert response["data"]["record"]["value_type"] == "binary"
    assert stack.values() == {"logo": b"\x89PNG\r\n\x1a\n\xff\xd8"}


def test_bulk_get_too_large_is_split_until_every_key_is_read(stack: Stack):
    # GIVEN bulk get refuses (413) batches whose values pass 450 bytes
    stack.emulator.bulk_get_max_bytes = 450
    # AND 20 values of 100 bytes, and one of 600 bytes that no batch can carry
    ns = stack.namespace_id
    values = {f"big/{i:02d}": bytes([65 + i % 26]) * 100 for i in range(20)}
    values["big/huge"] = b"h" * 600
    for key, value in values.items():
        stack.emulator.put(ns, key, value)
    stack.emulator.reset_stats()

    # WHEN the namespace is synced
    response = stack.invoke({"all": True})

    # THEN every key was synced: the batches were halved until they fit, and the value
    # too large for any batch was read by itself
    assert response["success"] is True, response
    assert response["statistics"]["records_written"] == 21
    assert stack.values() == values
    bulk = statuses(stack, "/bulk/get")
    assert 413 in bulk and 200 in bulk
    assert raw_reads(stack) == ["big/huge"]


def test_empty_listing_pages_with_a_cursor_are_followed(stack: Stack):
    # GIVEN a listing that answers two empty pages first and one between the others
    stack.emulator.list_empty_pages_first = 2
    stack.emulator.list_empty_pages_between = 1
    values = seed(stack, 25)  # three pages of keys
    stack.emulator.reset_stats()

    # WHEN the namespace is synced
    first = stack.invoke({"all": True})

    # THEN every key was listed and synced, across the empty pages
    assert first["success"] is True and first["statistics"]["complete"] is True, first
    assert first["statistics"]["keys_listed"] == 25
    assert statuses(stack, "/keys") == [200] * (2 + 3 + 2)
    assert stack.values() == values

    # WHEN two keys leave KV and the namespace is synced with delete_missing
    for key in ("flags/000", "flags/024"):  # the first and the last listed
        stack.emulator.delete(stack.namespace_id, key)
        del values[key]
    second = stack.invoke({"all": True, "delete_missing": True})

    # THEN exactly their records were deleted, and the others left unchanged
    assert second["statistics"]["records_deleted"] == 2
    assert second["statistics"]["records_unchanged"] == 23
    assert stack.values() == values


def test_reported_rate_limit_slows_the_run_down_instead_of_hitting_429(stack: Stack):
    # GIVEN an API that allows 25 requests per 2 s and reports the budget left in its
    # Ratelimit headers
    stack.emulator.rate_limit = (25, 2.0)
    # AND 200 text keys: 20 listing pages, each a list and a bulk get request
    for i in range(200):
        stack.emulator.put(stack.namespace_id, f"k{i:03d}", f"value {i}")
    stack.emulator.reset_stats()

    # WHEN the namespace is synced
    response = stack.invoke({"all": True})

    # THEN the run needed more requests than one window allows, yet none was refused
    # with a 429: the function paced itself by the budget Cloudflare reported
    assert response["success"] is True, response
    assert response["statistics"]["complete"] is True
    sent = [r.status for r in stack.emulator.requests]
    assert len(sent) > 25
    assert 429 not in sent
    assert response["statistics"]["cloudflare_retries"] == 0
    assert len(stack.items()) == 200
