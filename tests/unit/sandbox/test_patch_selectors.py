"""The pure pieces of the fleet's API: patches and selectors, against their RFCs and Kubernetes' rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.fleet.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from sandbox.fleet.selectors import (
    SelectorError,
    labels_match,
    parse_field_selector,
    parse_label_selector,
    selector_from_match_labels,
)

json_scalars = st.one_of(st.integers(-5, 5), st.text("ab", max_size=2), st.booleans())
json_values = st.recursive(
    json_scalars,
    lambda inner: st.dictionaries(st.text("abc", min_size=1, max_size=2), inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text("abc", min_size=1, max_size=2), json_values, max_size=4)


def test_merge_patch_rfc7386_examples() -> None:
    # The RFC's own test table (a selection).
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": ["b"]}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}


@given(json_objects, json_objects)
def test_merge_patch_is_idempotent_and_sets_what_it_names(target: dict, patch: dict) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once
    for key, value in patch.items():
        if value is None:
            assert key not in once
        elif not isinstance(value, dict):
            assert once[key] == value
    for key in target:
        if key not in patch:
            assert once[key] == target[key]


@given(json_objects)
def test_merge_patch_does_not_mutate_its_input(target: dict) -> None:
    import copy

    before = copy.deepcopy(target)
    merge_patch(target, {"a": None, "b": {"c": 1}})
    assert target == before


def test_strategic_merge_merges_lists_by_key_and_honours_directives() -> None:
    pod = {
        "spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]},
        "metadata": {"finalizers": ["f1"]},
    }
    out = strategic_merge_patch(pod, {"spec": {"containers": [{"name": "b", "image": "y:2"}]}})
    assert out["spec"]["containers"] == [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}]
    out = strategic_merge_patch(pod, {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["b"]
    out = strategic_merge_patch(pod, {"metadata": {"finalizers": ["f2"]}})
    assert out["metadata"]["finalizers"] == ["f1", "f2"]
    out = strategic_merge_patch(pod, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["f1"]}})
    assert out["metadata"]["finalizers"] == []
    # Taints have no merge key in the Go types: a list replaces.
    node = {"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}}
    assert strategic_merge_patch(node, {"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}})["spec"][
        "taints"
    ] == [{"key": "b", "effect": "NoSchedule"}]
    # kubectl sends $setElementOrder; it is ordering advice, not data.
    out = strategic_merge_patch(
        pod, {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}
    )
    assert "$setElementOrder/containers" not in out["spec"]
    with pytest.raises(PatchError):
        strategic_merge_patch(pod, {"spec": {"containers": [{"image": "no-name"}]}})


def test_json_patch_rfc6902() -> None:
    doc = {"a": {"b": [1, 2]}, "c": "d"}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/1", "value": 9},
            {"op": "remove", "path": "/c"},
            {"op": "replace", "path": "/a/b/0", "value": 0},
            {"op": "copy", "from": "/a/b", "path": "/e"},
            {"op": "move", "from": "/e", "path": "/f"},
            {"op": "add", "path": "/a/b/-", "value": 3},
        ],
    )
    assert out == {"a": {"b": [0, 9, 2, 3]}, "f": [0, 9, 2]}
    assert doc == {"a": {"b": [1, 2]}, "c": "d"}  # the input is untouched
    assert json_patch(doc, [{"op": "add", "path": "/x~1y", "value": 1}])["x/y"] == 1
    with pytest.raises(PatchError) as err:
        json_patch(doc, [{"op": "test", "path": "/c", "value": "nope"}])
    assert err.value.code == 422
    for bad in (
        [{"op": "remove", "path": "/zz"}],
        [{"op": "add"}],
        {"op": "add"},
        [{"op": "frobnicate", "path": "/a"}],
        [{"op": "replace", "path": "/nope", "value": 1}],
    ):
        with pytest.raises(PatchError):
            json_patch(doc, bad)


@given(json_objects, st.text("xyz", min_size=1, max_size=3), json_values)
def test_json_patch_add_then_remove_is_identity(doc: dict, key: str, value: object) -> None:
    if key in doc:
        return
    added = json_patch(doc, [{"op": "add", "path": f"/{key}", "value": value}])
    assert added[key] == value
    assert json_patch(added, [{"op": "remove", "path": f"/{key}"}]) == doc


def test_label_selectors() -> None:
    labels = {"app": "web", "tier": "gpu", "env": "prod"}
    assert labels_match(parse_label_selector("app=web,tier==gpu"), labels)
    assert not labels_match(parse_label_selector("app!=web"), labels)
    assert labels_match(parse_label_selector("missing!=x"), labels)  # != matches objects without the key
    assert labels_match(parse_label_selector("env in (prod, staging)"), labels)
    assert not labels_match(parse_label_selector("env notin (prod)"), labels)
    assert labels_match(parse_label_selector("app,!missing"), labels)
    assert not labels_match(parse_label_selector("!app"), labels)
    assert labels_match(parse_label_selector(""), labels)
    for bad in ("a in (b", "=x", "a b"):
        with pytest.raises(SelectorError):
            parse_label_selector(bad)
    sel = selector_from_match_labels(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}],
        }
    )
    assert labels_match(sel, labels) and not labels_match(sel, {"app": "web", "env": "dev"})


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y"]), max_size=3),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["x", "y"]),
)
def test_equality_and_inequality_partition_objects(labels: dict, key: str, value: str) -> None:
    eq = labels_match(parse_label_selector(f"{key}={value}"), labels)
    ne = labels_match(parse_label_selector(f"{key}!={value}"), labels)
    assert eq != ne


def test_field_selectors_reject_unsupported_fields() -> None:
    reqs = parse_field_selector(
        "spec.nodeName=n1,status.phase!=Failed", frozenset({"spec.nodeName", "status.phase"}), "Pod"
    )
    assert [(r.path, r.equal, r.value) for r in reqs] == [
        ("spec.nodeName", True, "n1"),
        ("status.phase", False, "Failed"),
    ]
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.bogus"):
        parse_field_selector("spec.bogus=1", frozenset({"spec.nodeName"}), "Pod")
