"""Role assignment conditions (Azure ABAC 2.0): the grammar of conditions-format.md, the examples of
storage-auth-abac-examples.md evaluated as Azure does, and what a condition does to an access check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mi_cli.errors import ValidationError
from mi_cli.services import access, assignments, conditions, groups, identities, resources

READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
WRITE = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write"
ACCOUNT = "/subscriptions/00000000-0000-0000-0000-0000000000aa/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st1"
CONTAINER = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name]"
PATH = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path]"
PREFIX = "@Request[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:prefix]"
READ_A_BLOB = f"!(ActionMatches{{'{READ}'}} AND NOT SubOperationMatches{{'Blob.List'}})"
LIST_BLOBS = f"!(ActionMatches{{'{READ}'}} AND SubOperationMatches{{'Blob.List'}})"
# conditions-format.md, "Simple condition": read blobs only in one container
LOGS_ONLY = f"((!(ActionMatches{{'{READ}'}})) OR ({CONTAINER} StringEquals 'logs'))"


def blob(container: str, path: str | None = None) -> str:
    return f"{ACCOUNT}/blobServices/default/containers/{container}" + (f"/blobs/{path}" if path else "")


def holds(condition: str, action: str = READ, scope: str = ACCOUNT, **context) -> bool:
    return conditions.evaluate(condition, conditions.request(action, scope, context or None)).holds


def invalid(condition: str) -> str:
    with pytest.raises(ValidationError) as caught:
        conditions.parse(condition)
    assert caught.value.code == "InvalidRoleAssignmentCondition"
    assert caught.value.message.startswith("The given role assignment condition is invalid: ")
    return caught.value.message


# --- the attributes a scope names ------------------------------------------------------------------


def test_a_scope_names_the_account_the_container_and_the_blob_path():
    found = conditions.scope_attributes(blob("logs", "a/b.txt"))
    assert found == {conditions.ACCOUNT_NAME: ("st1",), conditions.CONTAINER_NAME: ("logs",),
                     conditions.BLOB_PATH: ("a/b.txt",)}
    assert conditions.scope_attributes(blob("logs")) == {conditions.ACCOUNT_NAME: ("st1",), conditions.CONTAINER_NAME: ("logs",)}
    assert conditions.scope_attributes(ACCOUNT) == {conditions.ACCOUNT_NAME: ("st1",)}
    assert conditions.scope_attributes(f"{ACCOUNT}/queueServices/default/queues/jobs")[conditions.QUEUE_NAME] == ("jobs",)
    assert conditions.scope_attributes(ACCOUNT.replace("Microsoft.Storage/storageAccounts", "Microsoft.KeyVault/vaults")) == {}
    # the names the docs give, looked up without regard to case
    assert holds("@Resource[Microsoft.Storage/storageAccounts:name] StringEquals 'st1'")
    assert holds(f"{PATH} StringEquals 'a/b.txt'", scope=blob("logs", "a/b.txt"))
    assert holds("@RESOURCE[microsoft.storage/storageaccounts/blobservices/containers:Name] StringEquals 'logs'",
                 scope=blob("logs", "x"))


# --- grammar ----------------------------------------------------------------------------------------


def test_and_or_mixed_without_parentheses_is_refused_and_parentheses_decide():
    a, b, c = (f"{CONTAINER} StringEquals 'nope'", f"{CONTAINER} StringEquals 'logs'", f"{PATH} StringEquals 'x'")
    # conditions-format.md: "a AND b OR c ... You must add parentheses"
    message = invalid(f"{a} AND {b} OR {c}")
    assert "AND and OR are mixed without parentheses" in message
    assert message.endswith(f"(position {len(a) + len(' AND ') + len(b) + 2}).")
    at = blob("logs", "x")
    assert holds(f"({a} AND {b}) OR {c}", scope=at) is True
    assert holds(f"{a} AND ({b} OR {c})", scope=at) is False
    # one operator repeated needs no parentheses; the symbol forms are the same operators
    assert holds(f"{a} OR {b} OR {c}", scope=at) and holds(f"{a} || {b} || {c}", scope=at)
    assert not holds(f"{b} AND {c} AND {a}", scope=at) and not holds(f"{b} && {c} && {a}", scope=at)
    assert "mixed" in invalid(f"{a} && {b} || {c}")


def test_not_applies_to_what_follows_it_only():
    at = blob("logs", "x")
    yes, no = f"{CONTAINER} StringEquals 'logs'", f"{PATH} StringEquals 'other'"
    assert holds(f"NOT {no} AND {yes}", scope=at)  # (NOT no) AND yes
    assert not holds(f"NOT ({no} OR {yes})", scope=at)
    assert holds(f"!{no}", scope=at) and holds(f"! ( {no} )", scope=at) and holds(f"not {no}", scope=at)
    assert holds(f"NOT NOT {yes}", scope=at)


def test_keywords_and_operator_names_ignore_case_as_arm_does():
    # az's recording test_role_assignment_create_update.yaml: ARM stored "...containers:Name] stringEquals 'foo'"
    az = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:Name] stringEquals 'foo'"
    conditions.validate(az)
    assert holds(az, scope=blob("foo", "x")) and not holds(az, scope=blob("Foo", "x"))
    assert holds(f"actionmatches{{'{READ}'}} and {CONTAINER} STRINGEQUALS 'logs'", scope=blob("logs", "x"))
    assert holds(f"{{'a'}} forAnyOfAnyValues:stringequals {{'A', 'a'}}")


def test_quoted_values_keep_what_is_between_the_quotes():
    assert holds(f"{PATH} StringEquals 'my dir/a, b (1).txt'", scope=blob("logs", "my dir/a, b (1).txt"))
    assert holds(f"{PATH} StringEquals 'AND OR NOT'", scope=blob("logs", "AND OR NOT"))
    message = invalid(f"{CONTAINER} StringEquals 'logs")
    assert "a quoted value is not closed" in message and message.endswith(f"(position {len(CONTAINER) + 15}).")
    assert "text values are quoted" in invalid(f"{CONTAINER} StringEquals logs")
    assert "quote the value" in invalid(f"{CONTAINER} StringEquals 42")


def test_value_sets():
    at = blob("logs", "x")
    assert holds(f"{CONTAINER} StringEquals {{'data', 'logs'}}", scope=at)
    assert not holds(f"{CONTAINER} StringEquals {{'data', 'other'}}", scope=at)
    assert not holds(f"{CONTAINER} StringNotEquals {{'data', 'logs'}}", scope=at)  # the negation of "one of them"
    assert holds(f"{CONTAINER} StringNotEquals {{'data', 'other'}}", scope=at)
    assert "expected a value" in invalid(f"{CONTAINER} StringEquals {{}}")
    assert "',' or '}'" in invalid(f"{CONTAINER} StringEquals {{'a' 'b'}}")
    assert "ForAnyOfAnyValues" in invalid(f"{{'a', 'b'}} StringEquals {CONTAINER}")


OPERATORS = [
    # operator, the attribute's value, the literal, expected
    ("StringEquals", "logs", "'logs'", True), ("StringEquals", "Logs", "'logs'", False),
    ("StringNotEquals", "Logs", "'logs'", True), ("StringNotEquals", "logs", "'logs'", False),
    ("StringEqualsIgnoreCase", "Logs", "'LOGS'", True), ("StringEqualsIgnoreCase", "Logs", "'data'", False),
    ("StringNotEqualsIgnoreCase", "Logs", "'LOGS'", False), ("StringNotEqualsIgnoreCase", "Logs", "'data'", True),
    ("StringLike", "logs/2024/a.txt", "'logs/*'", True), ("StringLike", "abcd", "'a*c?'", True),
    ("StringLike", "abcd", "'A*C?'", False), ("StringLike", "abcd", "'a*c'", False),
    ("StringLike", "a*c", r"'a\*c'", True), ("StringLike", "abc", r"'a\*c'", False), ("StringLike", "a?", r"'a\?'", True),
    ("StringNotLike", "data/a.txt", "'logs/*'", True), ("StringNotLike", "logs/a.txt", "'logs/*'", False),
    ("StringLikeIgnoreCase", "LOGS/a", "'logs/*'", True), ("StringNotLikeIgnoreCase", "LOGS/a", "'logs/*'", False),
    ("StringStartsWith", "readonly/a", "'readonly/'", True), ("StringStartsWith", "ReadOnly/a", "'readonly/'", False),
    ("StringNotStartsWith", "other/a", "'readonly/'", True), ("StringNotStartsWith", "readonly/a", "'readonly/'", False),
    ("StringStartsWithIgnoreCase", "ReadOnly/a", "'readonly/'", True),
    ("StringNotStartsWithIgnoreCase", "ReadOnly/a", "'readonly/'", False),
    ("StringNotStartsWithIgnoreCase", "other", "'readonly/'", True),
    ("NumericEquals", "10", "10", True), ("NumericNotEquals", "10", "10", False), ("NumericLessThan", "9", "10", True),
    ("NumericLessThanEquals", "10", "10", True), ("NumericGreaterThan", "10", "10", False),
    ("NumericGreaterThanEquals", "11", "10", True),
    ("BoolEquals", "True", "true", True), ("BoolNotEquals", "false", "true", True),
    ("GuidEquals", "2A2B9908-6EA1-4AE2-8E65-A410DF84E7D1", "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", True),
    ("GuidNotEquals", "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", False),
    ("DateTimeEquals", "2022-06-01T23:38:32.8883645Z", "'2022-06-01T23:38:32.8883645Z'", True),
    ("DateTimeEquals", "2022-06-01T23:38:32.8883646Z", "'2022-06-01T23:38:32.8883645Z'", False),  # full precision
    ("DateTimeNotEquals", "2022-06-01T00:00:00Z", "'2022-06-01T00:00:00.0Z'", False),
    ("DateTimeLessThan", "2022-05-31T23:59:59.9999999Z", "'2022-06-01T00:00:00.0Z'", True),
    ("DateTimeLessThanEquals", "2022-06-01T00:00:00Z", "'2022-06-01T00:00:00.0Z'", True),
    ("DateTimeGreaterThan", "2022-06-01T00:00:00.0000001Z", "'2022-06-01T00:00:00.0Z'", True),
    ("DateTimeGreaterThanEquals", "2022-05-01T00:00:00Z", "'2022-06-01T00:00:00.0Z'", False),
]


@pytest.mark.parametrize("operator,value,literal,expected", OPERATORS)
def test_every_operator(operator, value, literal, expected):
    attribute = "@Request[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:x]"
    assert holds(f"{attribute} {operator} {literal}", **{attribute: value}) is expected


def test_the_operator_list_is_the_documented_one():
    assert set(conditions.operators()) == {op for op, *_ in OPERATORS}


CROSS_PRODUCTS = [  # conditions-format.md, "Cross product comparison operators": its examples and results
    ("{'red', 'blue'} ForAnyOfAnyValues:StringEquals {'blue', 'green'}", True),
    ("{'red', 'blue'} ForAnyOfAnyValues:StringEquals {'orange', 'green'}", False),
    ("{'red', 'blue'} ForAllOfAnyValues:StringEquals {'orange', 'red', 'blue'}", True),
    ("{'red', 'blue'} ForAllOfAnyValues:StringEquals {'red', 'green'}", False),
    ("{10, 20} ForAnyOfAllValues:NumericLessThan {15, 18}", True),
    ("{10, 20} ForAllOfAllValues:NumericLessThan {5, 15, 18}", False),
    ("{10, 20} ForAllOfAllValues:NumericLessThan {25, 30}", True),
    ("{10, 20} ForAllOfAllValues:NumericLessThan {15, 25, 30}", False),
    # a negated operator compares value by value (the delegation examples' ForAnyOfAllValues:GuidNotEquals)
    ("{8e3af657-a8ff-443c-a75c-2fe8c4bcb635} ForAnyOfAllValues:GuidNotEquals "
     "{8e3af657-a8ff-443c-a75c-2fe8c4bcb635, 18d7d88d-d35e-4fb5-a5c3-7773c20a72d9}", False),
    ("{2a2b9908-6ea1-4ae2-8e65-a410df84e7d1} ForAnyOfAllValues:GuidNotEquals "
     "{8e3af657-a8ff-443c-a75c-2fe8c4bcb635, 18d7d88d-d35e-4fb5-a5c3-7773c20a72d9}", True),
]


@pytest.mark.parametrize("condition,expected", CROSS_PRODUCTS)
def test_cross_products_as_documented(condition, expected):
    assert holds(condition) is expected


def test_a_multi_valued_request_attribute_is_compared_value_by_value():
    keys = "@Request[Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags&$keys$&]"
    condition = f"{keys} ForAllOfAnyValues:StringEquals {{'Project', 'Program'}}"  # "Existing blobs must have ... keys"
    assert holds(condition, **{keys: ["Project"]}) and holds(condition, **{keys: ["Project", "Program"]})
    assert not holds(condition, **{keys: ["Project", "Cost"]})


def test_a_tag_key_marked_case_sensitive_keeps_its_case():
    tag = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs/tags:Project<$key_case_sensitive$>]"
    condition = f"{tag} StringEquals 'Cascade'"
    assert holds(condition, **{tag: "Cascade"})
    assert holds(condition, **{tag.replace("Microsoft.Storage", "microsoft.storage"): "Cascade"})
    assert not holds(condition, **{tag.replace(":Project", ":project"): "Cascade"})


BAD = [
    # text, what the message says, where (1-based)
    ("", "the condition is empty", 1),
    ("   ", "the condition is empty", 4),
    (f"({CONTAINER} StringEquals 'a'", "expected ')', found the end of the condition", len(CONTAINER) + 19),
    (f"{CONTAINER} StringEquals 'a')", "expected AND, OR or the end", len(CONTAINER) + 18),
    (f"{CONTAINER} StringEqual 'a'", "'StringEqual' is not a condition operator", len(CONTAINER) + 2),
    (f"{CONTAINER} Foo:StringEquals 'a'", "'Foo' is not a cross-product prefix", len(CONTAINER) + 2),
    (f"{CONTAINER} ForAnyOfAnyValues:StringStartsWith 'a'", "cannot follow a cross-product prefix", len(CONTAINER) + 2),
    (f"{CONTAINER} 'a'", "expected an operator", len(CONTAINER) + 2),
    ("@Tenant[x] StringEquals 'a'", "'@Tenant' is not an attribute source", 1),
    ("@Resource x StringEquals 'a'", "must be followed by [attribute name]", 10),
    ("@Resource[x StringEquals 'a'", "is not closed by ']'", 1),
    ("@Resource[] StringEquals 'a'", "an attribute name is empty", 1),
    ("ActionMatches 'a'", "expected '{' after ActionMatches", 15),
    ("ActionMatches{a}", "expected a quoted name", 15),
    ("Exists 'a'", "an attribute after Exists", 8),
    ("NotExists @Request[x]", "expected an expression, found 'NotExists'", 1),  # the docs write NOT Exists
    (f"{CONTAINER} NumericEquals 'ten'", "takes an unquoted value", len(CONTAINER) + 16),
    (f"{CONTAINER} NumericEquals 1.5", "found '1.5'", len(CONTAINER) + 16),
    (f"{CONTAINER} DateTimeEquals '2022-13-01T00:00:00Z'", "needs a date and time", len(CONTAINER) + 17),
    (f"{CONTAINER} BoolEquals yes", "expected an expression, found 'yes'", len(CONTAINER) + 13),
    (f"{CONTAINER} StringEquals 'a' & {PATH} StringEquals 'b'", "unexpected character '&'", len(CONTAINER) + 19),
    (f"{CONTAINER} StringEquals 'a\x1bb'", "a control character", len(CONTAINER) + 17),
    ("ActionMatches{'a'} ActionMatches{'b'}", "expected AND, OR or the end", 20),
]


@pytest.mark.parametrize("text,says,position", BAD)
def test_bad_conditions_name_what_and_where(text, says, position):
    message = invalid(text)
    assert says in message and message.endswith(f"(position {position})."), message
    assert "\x1b" not in message


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("@[](){},!&|' \n:a") + ["AND ", "OR ", "NOT ", " StringEquals ", "@Resource[x]",
                                                              "ActionMatches", "Exists ", "'v'", "{'v', 'w'}", " 10"]),
                max_size=16).map("".join))
def test_any_text_parses_or_is_refused_as_invalid(text):
    try:
        node = conditions.parse(text)
    except ValidationError as exc:
        assert exc.code == "InvalidRoleAssignmentCondition" and "(position " in exc.message
    else:
        conditions.evaluate(text, conditions.request(READ, blob("logs", "x")))
        assert node is not None


def test_a_condition_longer_than_8_kb_is_refused():
    base = f"{CONTAINER} StringEquals '"
    conditions.validate(base + "x" * (8192 - len(base) - 1) + "'")
    with pytest.raises(ValidationError, match="8,193 characters long; a condition can be at most 8,192"):
        conditions.validate(base + "x" * (8192 - len(base)) + "'")


def test_parentheses_and_not_nested_past_the_bound_are_refused_not_a_crash():
    inner = f"{CONTAINER} StringEquals 'logs'"
    nested = "(" * conditions.MAX_DEPTH + inner + ")" * conditions.MAX_DEPTH
    assert conditions.evaluate(nested, conditions.request(READ, blob("logs", "x"))).holds
    for text in ("(" * 4000, "(" * 4000 + inner + ")" * 4000, "NOT " * 2000 + inner, "!" * 8000):
        with pytest.raises(ValidationError, match=f"nest more than {conditions.MAX_DEPTH} deep"):
            conditions.validate(text)


def test_parsed_conditions_are_cached_by_text():
    text = f"{CONTAINER} StringEquals 'cached-{id(object())}'"
    before = conditions.parse.cache_info()
    first = conditions.parse(text)
    assert conditions.parse(text) is first
    after = conditions.parse.cache_info()
    assert (after.misses, after.hits) == (before.misses + 1, before.hits + 1)


# --- evaluation: the documented examples ------------------------------------------------------------


def test_read_only_in_container_logs():
    assert holds(LOGS_ONLY, scope=blob("logs", "x"))
    outcome = conditions.evaluate(LOGS_ONLY, conditions.request(READ, blob("other", "x")))
    assert not outcome.holds and outcome.detail == f"{CONTAINER} is 'other', not 'logs'"
    # an action the condition does not target passes it: "!(ActionMatches) evaluates to true"
    assert holds(LOGS_ONLY, action=WRITE, scope=blob("other", "x"))


def test_stringlike_on_the_blob_path():
    # "Write blobs in named containers with a path", with logs/*
    condition = (f"((!(ActionMatches{{'{WRITE}'}}) AND !(ActionMatches{{'{WRITE[:-5]}add/action'}})) OR "
                 f"({CONTAINER} StringEquals 'contosocorp' AND {PATH} StringLike 'logs/*'))")
    assert holds(condition, action=WRITE, scope=blob("contosocorp", "logs/2024/a.txt"))
    assert not holds(condition, action=WRITE, scope=blob("contosocorp", "uploads/a.txt"))
    assert not holds(condition, action=WRITE[:-5] + "add/action", scope=blob("other", "logs/a.txt"))
    assert holds(condition, action=READ, scope=blob("other", "uploads/a.txt"))


def test_read_or_list_in_a_named_container_with_a_path():
    # "Read or list blobs in named containers with a path", for Storage Blob Data Reader
    condition = (f"(({READ_A_BLOB}) OR ({CONTAINER} StringEquals 'blobs-example-container' AND {PATH} StringStartsWith "
                 f"'readonly/')) AND (({LIST_BLOBS}) OR ({CONTAINER} StringEquals 'blobs-example-container' AND {PREFIX} "
                 "StringStartsWith 'readonly/'))")
    assert holds(condition, scope=blob("blobs-example-container", "readonly/a.txt"))
    assert not holds(condition, scope=blob("blobs-example-container", "secret/a.txt"))
    assert not holds(condition, scope=blob("other", "readonly/a.txt"))
    lists = blob("blobs-example-container")
    assert holds(condition, scope=lists, subOperation="Blob.List", **{PREFIX: "readonly/2024"})
    assert not holds(condition, scope=lists, subOperation="Blob.List", **{PREFIX: "secret/"})
    assert not holds(condition, scope=lists, subOperation="Blob.List")  # no prefix: the expression is false
    outcome = conditions.evaluate(condition, conditions.request(READ, lists, {"subOperation": "Blob.List"}))
    assert outcome.detail == f"{PREFIX} is not in this request"
    outcome = conditions.evaluate(condition, conditions.request(READ, blob("blobs-example-container", "secret/a")))
    assert outcome.detail == f"{PATH} is 'secret/a', so StringStartsWith 'readonly/' does not hold"


def test_reading_a_blob_gated_but_listing_not():
    # "Read a blob" is the read action without the Blob.List sub-operation (storage-auth-abac-attributes.md)
    condition = f"(({READ_A_BLOB}) OR ({CONTAINER} StringEquals 'logs'))"
    assert not holds(condition, scope=blob("other", "x"))
    assert holds(condition, scope=blob("other"), subOperation="Blob.List")
    assert not holds(condition, scope=blob("other"), subOperation="Blob.Read.WithTagConditions")
    assert holds(condition, action=WRITE, scope=blob("other", "x"))
    # and the other way round: only listing is gated
    listing = f"(({LIST_BLOBS}) OR ({CONTAINER} StringEquals 'logs'))"
    assert holds(listing, scope=blob("other", "x")) and not holds(listing, scope=blob("other"), subOperation="Blob.List")


def test_negated_operators_and_not():
    at = blob("logs", "tmp/a.txt")
    assert holds(f"{CONTAINER} StringNotEquals 'secrets'", scope=at)
    assert not holds(f"{PATH} StringNotLike 'tmp/*'", scope=at)
    assert holds(f"NOT {PATH} StringLike 'private/*'", scope=at)
    assert not holds(f"!({CONTAINER} StringEquals 'logs')", scope=at)


def test_an_attribute_the_request_does_not_carry():
    version = "@Request[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:versionId]"
    current = "@Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:isCurrentVersion]"
    # "Read current blob versions and a specific blob version": a current version's read has no versionId
    condition = (f"(({READ_A_BLOB}) OR ({version} DateTimeEquals '2022-06-01T23:38:32.8883645Z' OR "
                 f"{current} BoolEquals true))")
    at = blob("logs", "a.txt")
    assert holds(condition, scope=at, **{current: "true"})
    assert holds(condition, scope=at, **{current: "false", version: "2022-06-01T23:38:32.8883645Z"})
    assert not holds(condition, scope=at, **{current: "false", version: "2021-01-01T00:00:00Z"})
    outcome = conditions.evaluate(condition, conditions.request(READ, at, {current: "false"}))
    assert not outcome.holds and outcome.detail == f"{version} is not in this request and {current} is 'false', not 'true'"
    # false whatever the operator: a negated one too; NOT then inverts as usual; Exists asks
    assert not holds(f"{version} DateTimeNotEquals '2022-06-01T00:00:00Z'", scope=at)
    assert holds(f"NOT {version} DateTimeEquals '2022-06-01T00:00:00Z'", scope=at)
    assert not holds(f"Exists {version}", scope=at) and holds(f"NOT Exists {version}", scope=at)
    assert holds(f"Exists {version}", scope=at, **{version: "2022-06-01T00:00:00Z"})
    # the container name is not in a request at the account itself
    assert not holds(LOGS_ONLY, scope=ACCOUNT)


def test_action_matches_uses_the_permissions_wildcards():
    # conditions-format.md's examples, and the '/*/' rule of role permissions
    assert holds("ActionMatches{'Microsoft.Authorization/roleAssignments/*'}",
                 action="Microsoft.Authorization/roleAssignments/write")
    assert not holds("ActionMatches{'Microsoft.Authorization/roleDefinitions/*'}",
                     action="Microsoft.Authorization/roleAssignments/write")
    assert holds("ActionMatches{'Microsoft.Storage/storageAccounts/*/blobs/read'}", action=READ)
    assert holds(f"ActionMatches{{'{READ.upper()}'}}")
    assert holds(f"ActionMatches{{'{WRITE}', '{READ}'}}")
    assert not holds(f"ActionMatches{{'{READ}'}}", action=READ + "\n")


def test_utc_now_comes_from_the_clock():
    from datetime import datetime, timezone

    condition = "@Environment[UtcNow] DateTimeGreaterThan '2030-01-01T00:00:00.0Z'"
    before = conditions.request(READ, ACCOUNT, now=datetime(2029, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc))
    after = conditions.request(READ, ACCOUNT, now=datetime(2030, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc))
    assert not conditions.evaluate(condition, before).holds and conditions.evaluate(condition, after).holds


def test_a_bad_request_context_is_refused():
    for context in ({"Request[x]": "a"}, {"@Tenant[x]": "a"}, {"@Request[x]": 5}, {"subOperation": 1}):
        with pytest.raises(ValidationError):
            conditions.request(READ, ACCOUNT, context)
    # None leaves an attribute out, even one the scope names
    assert not holds(f"Exists {CONTAINER}", scope=blob("logs", "x"), **{CONTAINER: None})


# --- what a condition does to an access check ---------------------------------------------------------

SBDR = "Storage Blob Data Reader"


@pytest.fixture
def tenant(store):
    """A group with a storage account, a user-assigned identity and a VM (system identity on); returns ids."""
    with store() as ctx:
        g = groups.create(ctx, "rg", "westeurope")
        st = resources.create(ctx, g, "st1", "storage")
        app = identities.create_user_assigned(ctx, g, "app")
        vm = resources.create(ctx, g, "vm1", "vm")
        identities.enable_system(ctx, vm)
        ids = {"rg": f"/subscriptions/{g.subscription_id}/resourceGroups/rg", "st": st.arm_id, "principal": app.principal_id,
               "vm": vm.arm_id}
    return store, ids


def _in(ids, container, path=None):
    return f"{ids['st']}/blobServices/default/containers/{container}" + (f"/blobs/{path}" if path else "")


def test_a_conditional_data_role_grants_only_where_its_condition_holds(tenant):
    store, ids = tenant
    with store() as ctx:
        assignments.create(ctx, ids["principal"], SBDR, ids["st"], condition=LOGS_ONLY)
        allowed = access.check(ctx, ids["principal"], READ, _in(ids, "logs", "x"))
        denied = access.check(ctx, ids["principal"], READ, _in(ids, "other", "x"))
    assert allowed.allowed and allowed.steps[0].condition_met is True
    assert allowed.reason().endswith(f"and its condition holds: {CONTAINER} is 'logs'.")
    assert not denied.allowed
    [step] = denied.steps
    assert (step.condition, step.condition_met, step.matched) == (LOGS_ONLY, False, READ)
    assert denied.reason() == (f"Denied: '{SBDR}' at {ids['st']} grants the data action through '{READ}', but its condition "
                               f"is false for this request: {CONTAINER} is 'other', not 'logs'.")
    view = denied.view()["trace"][0]
    assert (view["condition"], view["conditionMet"], view["conditionDetail"]) == (LOGS_ONLY, False,
                                                                                  f"{CONTAINER} is 'other', not 'logs'")


def test_the_request_context_reaches_the_condition(tenant):
    store, ids = tenant
    condition = f"(({LIST_BLOBS}) OR ({PREFIX} StringStartsWith 'public/'))"
    with store() as ctx:
        assignments.create(ctx, ids["principal"], SBDR, ids["st"], condition=condition)
        at = _in(ids, "data")
        assert access.check(ctx, ids["principal"], READ, at, context={"subOperation": "Blob.List", PREFIX: "public/a"}).allowed
        assert not access.check(ctx, ids["principal"], READ, at, context={"subOperation": "Blob.List", PREFIX: "x/"}).allowed
        assert not access.check(ctx, ids["principal"], READ, at, context={"subOperation": "Blob.List"}).allowed
        assert access.check(ctx, ids["principal"], READ, _in(ids, "data", "x")).allowed  # reading is not gated


def test_authorize_passes_the_context_on(tenant):
    from mi_cli.services import scopes, tokens

    store, ids = tenant
    with store() as ctx:
        vm = scopes.resource_at(ctx, ids["vm"])
        assignments.create(ctx, vm.system_principal_id, SBDR, ids["st"],
                           condition=f"(({LIST_BLOBS}) OR ({PREFIX} StringEquals 'ok'))")
        bearer = f"Bearer {tokens.get_token(ctx, vm, 'https://storage.azure.com/').access_token}"
        at = _in(ids, "data")
        _, yes = access.authorize(ctx, bearer, READ, at, context={"subOperation": "Blob.List", PREFIX: "ok"})
        _, no = access.authorize(ctx, bearer, READ, at, context={"subOperation": "Blob.List", PREFIX: "no"})
    assert yes.allowed and not no.allowed and f"{PREFIX} is 'no', not 'ok'" in no.reason()


def test_an_unconditional_grant_beside_a_conditional_one_decides(tenant):
    store, ids = tenant
    with store() as ctx:
        assignments.create(ctx, ids["principal"], SBDR, ids["st"], condition=LOGS_ONLY)
        assignments.create(ctx, ids["principal"], SBDR, ids["rg"])
        decision = access.check(ctx, ids["principal"], READ, _in(ids, "other", "x"))
    assert decision.allowed and [s.condition_met for s in decision.steps] == [None, False]
    assert decision.reason().startswith(f"Allowed: '{SBDR}' at {ids['rg']}")


def test_control_plane_actions_ignore_a_condition_except_role_assignment_writes_and_deletes(tenant):
    store, ids = tenant
    sbdr_guid = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
    with store() as ctx:
        # a condition on storage attributes does not filter the Reader role's control-plane reads
        assignments.create(ctx, ids["principal"], "Reader", ids["rg"], condition=LOGS_ONLY.replace(READ, "*"))
        reads = access.check(ctx, ids["principal"], "Microsoft.Storage/storageAccounts/read", ids["st"])
        # delegation (conditions-authorization-actions-attributes.md): only the Storage Blob Data Reader role
        delegated = (f"((!(ActionMatches{{'Microsoft.Authorization/roleAssignments/write'}})) OR "
                     f"(@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals "
                     f"{{{sbdr_guid}}}))")
        assignments.create(ctx, ids["principal"], "Role Based Access Control Administrator", ids["rg"], condition=delegated)
        role_id = "@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId]"
        write = "Microsoft.Authorization/roleAssignments/write"
        may = access.check(ctx, ids["principal"], write, ids["st"], context={role_id: sbdr_guid})
        may_not = access.check(ctx, ids["principal"], write, ids["st"], context={role_id: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"})
        deletes = access.check(ctx, ids["principal"], "Microsoft.Authorization/roleAssignments/delete", ids["st"])
    assert reads.allowed and reads.steps[0].condition == LOGS_ONLY.replace(READ, "*") and reads.steps[0].condition_met is None
    assert may.allowed and not may_not.allowed and "is '8e3af657-a8ff-443c-a75c-2fe8c4bcb635', so" in may_not.reason()
    assert deletes.allowed and any(s.condition_met is True for s in deletes.steps)  # the condition targets writes only


def test_a_stored_condition_that_does_not_parse_never_holds(tenant):
    from mi_cli.models import RoleAssignment

    store, ids = tenant
    with store() as ctx:
        ra = assignments.create(ctx, ids["principal"], SBDR, ids["st"])
        stored = ctx.session.get(RoleAssignment, ra.name)
        stored.condition, stored.condition_version = "@Resource[x] StringEquals logs", "2.0"  # as a store from before
        ctx.session.add(stored)
    with store() as ctx:
        decision = access.check(ctx, ids["principal"], READ, _in(ids, "logs", "x"))
    assert not decision.allowed and "its condition is false for this request: it does not parse: expected an expression" \
        in decision.reason()


def test_who_and_effective_show_a_conditional_grant(tenant):
    store, ids = tenant
    with store() as ctx:
        assignments.create(ctx, ids["principal"], SBDR, ids["st"], condition=LOGS_ONLY)
        here = access.who(ctx, READ, _in(ids, "logs", "x"))
        there = access.who(ctx, READ, _in(ids, "other", "x"))
        listed = access.effective(ctx, ids["principal"])
    assert [(r["role"], r["condition"], r["conditionMet"]) for r in here] == [(SBDR, LOGS_ONLY, True)]
    assert there == []
    assert listed[0]["roles"] == [SBDR] and listed[0]["conditions"] == [{"role": SBDR, "condition": LOGS_ONLY}]


def test_assignments_refuse_a_condition_that_does_not_parse(tenant):
    store, ids = tenant
    with store() as ctx:
        with pytest.raises(ValidationError) as caught:
            assignments.create(ctx, ids["principal"], SBDR, ids["st"], condition=f"{CONTAINER} StringEquals logs")
        assert caught.value.code == "InvalidRoleAssignmentCondition" and "(position " in caught.value.message
        assert assignments.for_principal(ctx, ids["principal"]) == []
