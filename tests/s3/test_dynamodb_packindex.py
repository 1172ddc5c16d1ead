"""The DynamoDB catalog's pack index over real HTTP to moto: the conformance suite, the move of a
table to schema 3 at its first index item (and not before), and items damaged behind its back."""

from __future__ import annotations

import pytest

from chunkstore.backends.aws import AwsClients
from chunkstore.backends.dynamodb import DynamoDBCatalog
from chunkstore.backends.packindex import GcRound, Phase
from chunkstore.errors import IntegrityError, UnsupportedFormatError
from support.catalog_conformance import new_version, put
from support.packindex_conformance import PackIndexConformance, chunk, new_pack_id, new_page


class TestDynamoDBPackIndex(PackIndexConformance):
    @pytest.fixture
    def make_catalog(self, make_dynamodb_catalog):
        return lambda **options: make_dynamodb_catalog(**options)


def meta_schema(catalog: DynamoDBCatalog) -> int:
    item = catalog.clients.dynamodb.get_item(
        TableName=catalog.table.name, Key={"pk": {"S": "meta"}, "sk": {"S": "meta"}}, ConsistentRead=True
    )["Item"]
    return int(item["schema"]["N"])


def test_a_format_1_store_never_touches_the_index(make_dynamodb_catalog):
    make_dynamodb_catalog()
    clients = AwsClients()
    sent = record_requests_on(clients)
    catalog = DynamoDBCatalog(
        clients, make_dynamodb_catalog().table.name, store_id="conformance", store_url="s3://conformance/catalog"
    )
    try:
        assert [operation for operation, _ in sent] == ["GetItem"]  # the meta item: nothing more to open
        put(catalog, new_version("docs/a", [1, 2]), new_version("docs/b", [3]))
        catalog.remove_versions([("docs/b", None)])
        keys = str([params for _, params in sent])
        for index_key in ("'round'", "'p#", "'g#", "'h#"):
            assert index_key not in keys
        assert meta_schema(catalog) == 2
    finally:
        catalog.close()


def record_requests_on(clients: AwsClients) -> list[tuple[str, dict]]:
    sent: list[tuple[str, dict]] = []
    clients.dynamodb.meta.events.register(
        "provide-client-params.dynamodb.*", lambda params, model, **_: sent.append((model.name, params))
    )
    return sent


@pytest.mark.parametrize(
    "first_write",
    [
        lambda catalog: catalog.pack_index.create_pack(catalog.open_session("put"), new_pack_id(), 1, 1),
        lambda catalog: catalog.pack_index.write_pages(GcRound(0, Phase.IDLE), [new_page(1)]),
        lambda catalog: catalog.pack_index.put_hooks({chunk(1): new_page(1).page_id}),
    ],
    ids=["pack", "page", "hook"],
)
def test_the_first_index_item_moves_the_table_to_schema_3(make_dynamodb_catalog, first_write):
    catalog = make_dynamodb_catalog()
    assert catalog.pack_index.read_round() == GcRound(0, Phase.IDLE)
    assert meta_schema(catalog) == 2  # reading writes nothing
    first_write(catalog)
    assert meta_schema(catalog) == 3
    # Another handle, opened before, keeps working; a later one sees schema 3.
    assert make_dynamodb_catalog().pack_index.read_round() == GcRound(0, Phase.IDLE)


def test_a_table_of_a_newer_schema_is_refused(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    catalog.clients.dynamodb.update_item(
        TableName=catalog.table.name,
        Key={"pk": {"S": "meta"}, "sk": {"S": "meta"}},
        UpdateExpression="SET #schema = :four",
        ExpressionAttributeNames={"#schema": "schema"},
        ExpressionAttributeValues={":four": {"N": "4"}},
    )
    with pytest.raises(UnsupportedFormatError, match=r"schema version 4 .* \(this chunkstore reads 1 to 3\)"):
        make_dynamodb_catalog()


def damage(catalog: DynamoDBCatalog, key: tuple[str, str], attribute: str, value: dict | None) -> None:
    request = {
        "TableName": catalog.table.name,
        "Key": {"pk": {"S": key[0]}, "sk": {"S": key[1]}},
        "UpdateExpression": "REMOVE #attribute" if value is None else "SET #attribute = :value",
        "ExpressionAttributeNames": {"#attribute": attribute},
    }
    if value is not None:
        request["ExpressionAttributeValues"] = {":value": value}
    catalog.clients.dynamodb.update_item(**request)


def described(key: tuple[str, str]) -> str:
    return f"DynamoDB item \\(pk '{key[0]}', sk '{key[1]}'\\) is damaged: "


@pytest.mark.parametrize(
    ("attribute", "value", "problem"),
    [
        ("st", {"S": "LOST"}, "state 'LOST' is none of PENDING, PRESENT, DOOMED, DELETING"),
        ("st", {"N": "1"}, "attribute 'st' is a number, not a string"),
        ("gen", None, "it has no attribute 'gen'"),
        ("ss", {"N": "1.5"}, "attribute 'ss' is 1.5, not a whole number"),
        ("dr", {"N": "3"}, "it is PRESENT with a round that doomed it"),
        ("was", {"S": "DELETING"}, "it is PRESENT, doomed from <IndexState.DELETING: 3>"),
    ],
)
def test_a_damaged_pack_item_is_an_integrity_error_naming_it(make_dynamodb_catalog, attribute, value, problem):
    catalog = make_dynamodb_catalog()
    index = catalog.pack_index
    pack = index.pack_stored(index.create_pack(catalog.open_session("put"), new_pack_id(), 10, 1))
    key = (f"p#{pack.pack_id.hex()}", "p")
    damage(catalog, key, attribute, value)
    for read in (lambda: index.get_packs([pack.pack_id]), lambda: list(index.iter_packs())):
        with pytest.raises(IntegrityError, match=described(key) + problem):
            read()


@pytest.mark.parametrize(
    ("attribute", "value", "problem"),
    [
        ("data", {"S": "CSRP"}, "attribute 'data' is a string, not binary"),
        ("og", {"B": b"\x01"}, "its origin is 1 bytes, not 32"),
        ("st", {"S": "PENDING"}, "a page is never PENDING"),
        ("os", None, "it has no attribute 'os'"),
    ],
)
def test_a_damaged_page_item_is_an_integrity_error_naming_it(make_dynamodb_catalog, attribute, value, problem):
    catalog = make_dynamodb_catalog()
    index = catalog.pack_index
    index.write_pages(index.read_round(), [new_page(1)])
    key = (f"g#{new_page(1).page_id.hex()}", "g")
    damage(catalog, key, attribute, value)
    for consistent in (True, False):
        with pytest.raises(IntegrityError, match=described(key) + problem):
            index.get_page(new_page(1).page_id, consistent=consistent)


def test_a_damaged_round_or_hook_item_is_an_integrity_error_naming_it(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    index = catalog.pack_index
    gc = catalog.open_session("gc")
    catalog.acquire_gc_lock(gc)
    index.advance_round(gc, index.read_round())
    index.put_hooks({chunk(1): new_page(1).page_id})
    damage(catalog, ("round", "round"), "ph", {"S": "resting"})
    damage(catalog, (f"h#{chunk(1).hex()}", "h"), "pg", {"B": b"\x02" * 16})
    with pytest.raises(IntegrityError, match=described(("round", "round")) + "round phase 'resting' is none of"):
        index.read_round()
    with pytest.raises(IntegrityError, match=described((f"h#{chunk(1).hex()}", "h")) + "its page ID is 16 bytes"):
        index.get_hooks([chunk(1)])


def test_a_pack_item_whose_key_is_not_a_pack_id_is_an_integrity_error(make_dynamodb_catalog):
    catalog = make_dynamodb_catalog()
    index = catalog.pack_index
    pack = index.create_pack(catalog.open_session("put"), new_pack_id(), 10, 1)
    item = catalog.clients.dynamodb.get_item(
        TableName=catalog.table.name, Key={"pk": {"S": f"p#{pack.pack_id.hex()}"}, "sk": {"S": "p"}}
    )["Item"]
    catalog.clients.dynamodb.put_item(TableName=catalog.table.name, Item={**item, "pk": {"S": "p#00zz"}})
    with pytest.raises(IntegrityError, match="its pack ID '00zz' is not hexadecimal"):
        list(index.iter_packs())


def test_each_call_sends_the_requests_the_design_counts(make_dynamodb_catalog):
    """The request side of the design's cost table: a pack is 2 writes, 99 pages and their round
    check 1 transaction, hooks 25 to a batch, eventually consistent hook reads, dooms 99 to a
    transaction with the round check, a round move 1 transaction with the gc lock check."""
    catalog = make_dynamodb_catalog()
    index = catalog.pack_index
    writer, gc = catalog.open_session("put"), catalog.open_session("gc")
    catalog.acquire_gc_lock(gc)
    index.put_hooks({chunk(0): new_page(0).page_id})  # moves the table to schema 3 first
    sent = record_requests_on(catalog.clients)

    def calls(run) -> list[tuple[str, int]]:
        """What run sends: (operation, transaction actions or batch items)."""
        del sent[:]
        run()
        return [(operation, _actions(params)) for operation, params in sent]

    pack = index.create_pack(writer, new_pack_id(), 10, 1)
    assert calls(lambda: index.pack_stored(pack)) == [("UpdateItem", 1)]
    pages = [new_page(number) for number in range(99)]
    assert calls(lambda: index.write_pages(index.read_round(), pages)) == [("GetItem", 1), ("TransactWriteItems", 100)]
    hooks = {chunk(number): new_page(number).page_id for number in range(60)}
    assert calls(lambda: index.put_hooks(hooks)) == [
        ("BatchWriteItem", 25),
        ("BatchWriteItem", 25),
        ("BatchWriteItem", 10),
    ]
    assert calls(lambda: index.get_hooks(list(hooks))) == [("BatchGetItem", 60)]
    assert sent[0][1]["RequestItems"][catalog.table.name]["ConsistentRead"] is False
    gc_round = index.advance_round(gc, index.read_round())
    assert sent[-1][0] == "TransactWriteItems" and _actions(sent[-1][1]) == 2
    records = [index.get_page(page.page_id) for page in pages[:50]] + [
        index.pack_stored(index.create_pack(writer, new_pack_id(), 10, 1)) for _ in range(70)
    ]
    dooms = calls(lambda: index.doom(gc_round, records[:50]) + index.doom(gc_round, records[50:]))
    assert sorted(dooms) == [("TransactWriteItems", 51), ("TransactWriteItems", 71)]


def _actions(params: dict) -> int:
    if "TransactItems" in params:
        return len(params["TransactItems"])
    if "RequestItems" in params:
        [request] = params["RequestItems"].values()
        return len(request["Keys"]) if isinstance(request, dict) else len(request)
    return 1
