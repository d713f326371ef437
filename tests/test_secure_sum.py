"""The broker's sum of the partitions' encrypted tables, added as each arrives: real TenSEAL ciphertexts."""

from __future__ import annotations

import itertools

import pytest
import tenseal as ts

from broker.query.secure_sum import EncryptedSum
from dsbroker.errors import PartitionError
from dsbroker.results.bfv import new_secret_context
from dsbroker.v1 import results_pb2

PARTIALS = [[1, 2, 3], [10, 0, 30], [100, 200, 0]]  # per partition, one measure over three groups
WITHHELD = [[0, 0, 1], [0, 1, 0], [0, 0, 0]]


@pytest.fixture(scope="module")
def context() -> ts.Context:
    return new_secret_context()


def _table(context: ts.Context, values: list[int], withheld: list[int], key_id: str = "key") -> bytes:
    table = results_pb2.EncryptedTable(key_id=key_id, partitions=1,
                                       partitions_withheld=ts.bfv_vector(context, withheld).serialize())
    column = table.columns.add(name="vat", position=1, kind=results_pb2.ENCRYPTED_COLUMN_KIND_TOTAL)
    column.ciphertext = ts.bfv_vector(context, values).serialize()
    return table.SerializeToString()


def _decrypted(context: ts.Context, ciphertext: bytes) -> list[int]:
    return ts.bfv_vector_from(context, ciphertext).decrypt()[:3]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
def test_the_sum_is_the_same_in_whatever_order_the_partitions_answer(context, order):
    tables = [results_pb2.EncryptedTable.FromString(_table(context, values, withheld))
              for values, withheld in zip(PARTIALS, WITHHELD, strict=True)]
    summed = EncryptedSum("policy")
    for index in order:
        summed.add(tables[index])
    total = summed.total()
    assert total.partitions == 3 and total.key_id == "key"
    assert _decrypted(context, total.columns[0].ciphertext) == [111, 202, 33]
    assert _decrypted(context, total.partitions_withheld) == [0, 1, 1]
    assert [(c.name, c.position) for c in total.columns] == [("vat", 1)]


def test_a_partition_under_another_key_or_with_other_columns_is_refused(context):
    first = results_pb2.EncryptedTable.FromString(_table(context, [1, 2, 3], [0, 0, 0]))
    other_key = results_pb2.EncryptedTable.FromString(_table(context, [1, 2, 3], [0, 0, 0], key_id="another"))
    other_columns = results_pb2.EncryptedTable.FromString(_table(context, [1, 2, 3], [0, 0, 0]))
    other_columns.columns[0].name = "cit"
    broken = results_pb2.EncryptedTable.FromString(_table(context, [1, 2, 3], [0, 0, 0]))
    broken.columns[0].ciphertext = b"not a ciphertext"
    for table, message in ((other_key, "different keys"), (other_columns, "columns differ"), (broken, "does not load")):
        summed = EncryptedSum("policy")
        summed.add(first)
        with pytest.raises(PartitionError, match=message):
            summed.add(table)


def test_a_sum_of_no_partition_is_refused():
    with pytest.raises(PartitionError):
        EncryptedSum("policy").total()
