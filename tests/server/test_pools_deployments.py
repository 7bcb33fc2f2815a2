"""Pools and deployments through the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from conveyor.errors import InvalidRequest, ObjectNotFound

pytestmark = pytest.mark.usefixtures("backend")


def test_health_names_the_database(api, backend):
    health = api.health()
    assert health["status"] == "ok"
    assert health["database"] == ("postgresql" if backend.database_url else "sqlite")


def test_default_pool_exists_out_of_the_box(api):
    pools = api.list_pools()
    assert [(p.name, p.type) for p in pools] == [("default", "process")]


def test_create_pool_then_list_sorted(api):
    api.create_pool("zeta", type="process", description="last")
    api.create_pool("alpha")
    assert [p.name for p in api.list_pools()] == ["alpha", "default", "zeta"]


def test_duplicate_pool_is_a_conflict(api):
    api.create_pool("gpu")
    with pytest.raises(InvalidRequest, match="pool 'gpu' already exists") as info:
        api.create_pool("gpu")
    assert info.value.status_code == 409


def test_unknown_pool_type_is_refused(api):
    with pytest.raises(InvalidRequest, match="unknown pool type 'quantum'"):
        api.create_pool("q", type="quantum")
    assert [p.name for p in api.list_pools()] == ["default"]


def test_first_put_creates_revision_one(deploy, api):
    created = deploy()
    assert created.revision == 1
    assert created.created == created.updated
    assert api.get_deployment("hello", "prod") == created
    [version] = api.list_deployment_versions("hello", "prod")
    assert (version.revision, version.version) == (1, created.version)


def test_identical_redeploy_is_a_no_op(deploy, api):
    first = deploy()
    again = deploy()
    assert again == first
    assert len(api.list_deployment_versions("hello", "prod")) == 1


def test_changed_deploy_makes_a_new_revision_and_keeps_the_old(deploy, api):
    first = deploy()
    second = deploy(version="sha256-" + "b" * 64)
    third = deploy(version="sha256-" + "b" * 64, parameters={"n": 5})
    assert (first.revision, second.revision, third.revision) == (1, 2, 3)
    assert third.id == first.id
    assert third.created == first.created
    assert third.updated > first.updated
    versions = api.list_deployment_versions("hello", "prod")
    assert [(v.revision, v.version[:8]) for v in versions] == [
        (3, "sha256-b"),
        (2, "sha256-b"),
        (1, "sha256-a"),
    ]
    assert api.get_deployment("hello", "prod").parameters == {"n": 5}


def test_deployments_are_listed_by_flow_and_name(deploy, api):
    deploy(flow_name="b", name="x")
    deploy(flow_name="a", name="z")
    deploy(flow_name="a", name="y")
    assert [(d.flow_name, d.name) for d in api.list_deployments()] == [
        ("a", "y"),
        ("a", "z"),
        ("b", "x"),
    ]


def test_unknown_deployment_is_not_found_with_a_hint(api):
    with pytest.raises(ObjectNotFound) as info:
        api.get_deployment("nope", "missing")
    assert str(info.value) == "deployment 'nope/missing' not found"
    assert info.value.hint == "conveyor deployments ls"
    with pytest.raises(ObjectNotFound, match="deployment 'nope/missing' not found"):
        api.list_deployment_versions("nope", "missing")


def test_deploying_to_an_unknown_pool_is_refused(deploy, api):
    with pytest.raises(ObjectNotFound, match="work pool 'gpu' not found") as info:
        deploy(work_pool="gpu")
    assert "conveyor pool create gpu" in (info.value.hint or "")
    assert api.list_deployments() == []
