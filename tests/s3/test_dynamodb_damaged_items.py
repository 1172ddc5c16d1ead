"""Items of the DynamoDB catalog changed behind its back (through boto3, on the moto server):
reading them raises IntegrityError naming the item and what is wrong, never a KeyError,
ValueError or TypeError from inside the catalog."""

from __future__ import annotations

import pytest

from chunkstore.backends.aws import AwsClients
from chunkstore.backends.catalog import SnapshotRecord
from chunkstore.backends.dynamodb import DynamoDBCatalog
from chunkstore.errors import IntegrityError
from support.catalog_conformance import chunk_id, new_version, put, upload

META = ("meta", "meta")


def chunk_item(number: int) -> tuple[str, str]:
    return f"c#{chunk_id(number).hex()}", "c"


def content_item(digest: bytes) -> tuple[str, str]:
    return f"d#{digest.hex()}", "d"


def version_item(catalog: DynamoDBCatalog, name: str) -> tuple[str, str]:
    """The key of the only version item of name (found by scanning the table as a user would)."""
    response = catalog.clients.dynamodb.scan(
        TableName=catalog.table.name,
        FilterExpression="nm = :name AND v = :one",
        ExpressionAttributeValues={":name": {"S": name}, ":one": {"N": "1"}},
    )
    [item] = response["Items"]
    return item["pk"]["S"], item["sk"]["S"]


def damage(catalog: DynamoDBCatalog, item: tuple[str, str], attribute: str, value: dict | None) -> None:
    """Set an attribute of an item to value (a DynamoDB attribute value), or remove it (None)."""
    request = {
        "TableName": catalog.table.name,
        "Key": {"pk": {"S": item[0]}, "sk": {"S": item[1]}},
        "UpdateExpression": "REMOVE #attribute" if value is None else "SET #attribute = :value",
        "ExpressionAttributeNames": {"#attribute": attribute},
    }
    if value is not None:
        request["ExpressionAttributeValues"] = {":value": value}
    catalog.clients.dynamodb.update_item(**request)


def described(item: tuple[str, str]) -> str:
    return f"DynamoDB item \\(pk '{item[0]}', sk '{item[1]}'\\) is damaged: "


@pytest.fixture
def catalog(make_dynamodb_catalog) -> DynamoDBCatalog:
    """A catalog holding dir/a (chunks 1, 2) and dir/b (chunk 3)."""
    opened = make_dynamodb_catalog()
    put(opened, new_version("dir/a", [1, 2]), new_version("dir/b", [3]))
    return opened


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"S": "5"}, "attribute 'rc' is a string, not a number"),
        (None, "it has no attribute 'rc'"),
        ({"N": "1.5"}, "attribute 'rc' is 1.5, not a whole number"),
    ],
)
def test_a_chunk_count_that_is_no_count(catalog, value, problem):
    damage(catalog, chunk_item(1), "rc", value)
    with pytest.raises(IntegrityError, match=described(chunk_item(1)) + problem):
        catalog.get_chunks([chunk_id(1)])
    with pytest.raises(IntegrityError, match=problem):
        list(catalog.iter_chunks())


def test_a_chunk_in_a_state_chunkstore_never_writes(catalog):
    damage(catalog, chunk_item(2), "st", {"N": "7"})
    with pytest.raises(IntegrityError, match=described(chunk_item(2)) + "chunk state 7 is none of 0, 1, 2"):
        catalog.get_chunks([chunk_id(2)])
    # A writer that meets the chunk stops there too, before writing anything.
    session = catalog.open_session("put")
    with pytest.raises(IntegrityError, match="chunk state 7"):
        catalog.claim_chunks(session, [(chunk_id(2), 1002)])


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("dir/../a", r"its name is refused by the name rules \(name contains '..'"),
        ("dir//a", r"its name 'dir//a' is not in stored form \('dir/a'\)"),
    ],
)
def test_a_version_whose_name_the_name_rules_refuse(catalog, name, problem):
    item = version_item(catalog, "dir/a")
    damage(catalog, item, "nm", {"S": name})
    with pytest.raises(IntegrityError, match=problem):
        list(catalog.list_versions())
    with pytest.raises(IntegrityError, match=problem):
        catalog.get_version("dir/a")
    # Other names are still read.
    assert catalog.get_version("dir/b").version == 1


def test_a_version_without_its_digest(catalog):
    item = version_item(catalog, "dir/b")
    damage(catalog, item, "dg", None)
    with pytest.raises(IntegrityError, match="it has no attribute 'dg'"):
        catalog.get_version("dir/b")


def test_a_content_in_a_state_chunkstore_never_writes_stops_a_commit(catalog):
    digest = new_version("dir/a", [1, 2]).digest
    damage(catalog, content_item(digest), "st", {"S": "half-done"})
    problem = described(content_item(digest)) + "content state 'half-done' is none of live, committing, releasing"
    with pytest.raises(IntegrityError, match=problem):
        catalog.get_content(digest)
    # Committing the same content again meets the item, and stops instead of waiting for it forever.
    session = catalog.open_session("put")
    upload(catalog, session, [1, 2])
    with pytest.raises(IntegrityError, match=problem):
        catalog.commit(session, [new_version("dir/again", [1, 2])])


def test_a_content_count_of_the_wrong_type(catalog):
    digest = new_version("dir/b", [3]).digest
    damage(catalog, content_item(digest), "rc", {"SS": ["1"]})
    with pytest.raises(IntegrityError, match="attribute 'rc' is a string set, not a number"):
        catalog.get_content(digest)


def test_a_recipe_page_that_is_not_binary(catalog):
    digest = new_version("dir/b", [3]).digest
    damage(catalog, (f"d#{digest.hex()}", "r00000000"), "data", {"S": "page"})
    with pytest.raises(IntegrityError, match="attribute 'data' is a string, not binary"):
        list(catalog.recipe_pages(digest))


def test_snapshot_paths_that_are_not_strings(catalog):
    catalog.record_snapshot(SnapshotRecord("snap", 1, "host", ("dir",)))
    damage(catalog, ("snap", "snap"), "paths", {"L": [{"N": "1"}]})
    with pytest.raises(IntegrityError, match="attribute 'paths' is not a list of strings"):
        catalog.list_snapshots()


def test_a_meta_item_with_shards_of_the_wrong_type(catalog):
    damage(catalog, META, "shards", {"S": "eight"})
    with pytest.raises(IntegrityError, match=described(META) + "attribute 'shards' is a string, not a number"):
        DynamoDBCatalog(AwsClients(), catalog.table.name, store_id="conformance", store_url="s3://conformance/catalog")
