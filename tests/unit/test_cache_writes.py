"""The controller's own writes coming back through the watch: while a write is in flight, the
watch's copy of the object queues nothing; someone else's change (any other version), or a
write that got no answer, still queues the search when the write ends."""

from __future__ import annotations

from typing import Any

import pytest

from schedsearch.controller import cache


def pod(name: str, version: str, search: str = "s1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"uid-{name}",
            "resourceVersion": version,
            "labels": {"schedsearch.io/search": search},
        }
    }


def store() -> tuple[cache.Store, list[tuple[str, str]]]:
    """A store holding search s1 (changes to what a search owns queue it only if it is held)."""
    woken: list[tuple[str, str]] = []
    found = cache.Store(on_change=lambda ns, name: woken.append((ns, name)))
    search = {
        "metadata": {"name": "s1", "namespace": "ml", "uid": "uid-s1", "resourceVersion": "1"}
    }
    found.put(cache.SEARCHES, search, wake=False)
    return found, woken


def test_the_watch_bringing_our_own_create_before_its_answer_queues_nothing() -> None:
    found, woken = store()
    with found.writing(cache.PODS, "ml", "p0"):
        found.apply_event(cache.PODS, "ADDED", pod("p0", "10"))  # the watch was faster
        found.put(cache.PODS, pod("p0", "10"), wake=False)  # the create's answer
    assert woken == []
    assert found.get(cache.PODS, "ml", "p0") is not None


def test_a_newer_version_from_the_watch_during_the_write_queues_the_search_after_it() -> None:
    found, woken = store()
    with found.writing(cache.PODS, "ml", "p0"):
        found.apply_event(cache.PODS, "ADDED", pod("p0", "10"))
        found.apply_event(cache.PODS, "MODIFIED", pod("p0", "11"))  # changed by someone else
        found.put(cache.PODS, pod("p0", "10"), wake=False)
        assert woken == []
    assert woken == [("ml", "s1")]
    assert found.get(cache.PODS, "ml", "p0")["metadata"]["resourceVersion"] == "11"  # type: ignore[index]


def test_a_change_made_before_the_write_coming_in_during_it_queues_the_search() -> None:
    found, woken = store()
    found.put(cache.PODS, pod("p0", "9"))
    woken.clear()
    with found.writing(cache.PODS, "ml", "p0"):
        found.apply_event(cache.PODS, "MODIFIED", pod("p0", "10"))  # not seen by the plan
        found.put(cache.PODS, pod("p0", "11"), wake=False)  # the write's answer
    assert woken == [("ml", "s1")]


def test_a_write_that_failed_after_the_watch_saw_the_object_queues_the_search() -> None:
    found, woken = store()
    with pytest.raises(RuntimeError), found.writing(cache.PODS, "ml", "p0"):
        found.apply_event(cache.PODS, "ADDED", pod("p0", "10"))
        raise RuntimeError("no answer")
    assert woken == [("ml", "s1")]


def test_other_objects_and_events_after_the_write_behave_as_before() -> None:
    found, woken = store()
    with found.writing(cache.PODS, "ml", "p0"):
        found.apply_event(cache.PODS, "ADDED", pod("p1", "9"))  # not the one being written
        found.put(cache.PODS, pod("p0", "10"), wake=False)
    assert woken == [("ml", "s1")]
    found.apply_event(cache.PODS, "ADDED", pod("p0", "10"))  # the watch, after the answer
    assert woken == [("ml", "s1")]
    found.apply_event(cache.PODS, "MODIFIED", pod("p0", "12"))
    assert woken == [("ml", "s1"), ("ml", "s1")]


def test_concurrent_writes_of_one_object_decide_when_the_last_ends() -> None:
    found, woken = store()
    with found.writing(cache.PODS, "ml", "p0"):
        with found.writing(cache.PODS, "ml", "p0"):
            found.apply_event(cache.PODS, "ADDED", pod("p0", "10"))
            found.put(cache.PODS, pod("p0", "10"), wake=False)
        found.apply_event(cache.PODS, "MODIFIED", pod("p0", "11"))
        found.put(cache.PODS, pod("p0", "11"), wake=False)
        assert woken == []
    assert woken == []
