"""The exception tree: grouped by what a handler does, each also the matching builtin."""

from __future__ import annotations

import pickle

import pytest

import dask_zcollection as zc
from dask_zcollection import errors

TREE = {
    errors.NotFoundError: (errors.ZCollectionError, KeyError),
    errors.CollectionNotFoundError: (errors.NotFoundError, KeyError),
    errors.PartitionNotFoundError: (errors.NotFoundError, KeyError),
    errors.VariableNotFoundError: (errors.NotFoundError, KeyError),
    errors.AlreadyExistsError: (errors.ZCollectionError, FileExistsError, OSError),
    errors.ReadOnlyError: (errors.ZCollectionError, PermissionError, OSError),
    errors.InvalidInputError: (errors.ZCollectionError, ValueError),
    errors.SchemaError: (errors.InvalidInputError, ValueError),
    errors.FilterError: (errors.InvalidInputError, ValueError),
    errors.MergeError: (errors.InvalidInputError, ValueError),
    errors.ConflictError: (errors.ZCollectionError,),
    errors.StorageError: (errors.ZCollectionError, OSError),
    errors.FormatVersionError: (errors.ZCollectionError,),
}


@pytest.mark.parametrize("cls", list(TREE), ids=lambda c: c.__name__)
def test_hierarchy(cls: type[Exception]) -> None:
    for base in TREE[cls]:
        assert issubclass(cls, base), (cls, base)
    assert issubclass(cls, errors.ZCollectionError)
    err = cls("partition 'year=2024/month=03' of memory://x")
    with pytest.raises(errors.ZCollectionError):
        raise err
    for base in TREE[cls]:
        with pytest.raises(base):
            raise cls("again")


def test_kinds_are_disjoint() -> None:
    assert not issubclass(errors.ConflictError, (ValueError, KeyError, OSError))
    assert not issubclass(errors.FormatVersionError, (ValueError, KeyError, OSError))
    assert not issubclass(errors.InvalidInputError, (KeyError, OSError))
    assert not issubclass(errors.NotFoundError, (ValueError, OSError))
    assert issubclass(errors.ZCollectionWarning, UserWarning)


def test_not_found_message_is_not_quoted() -> None:
    err = errors.CollectionNotFoundError("no collection at memory://x")
    assert str(err) == "no collection at memory://x"  # KeyError would add quotes
    assert str(errors.NotFoundError()) == ""


@pytest.mark.parametrize("cls", list(TREE), ids=lambda c: c.__name__)
def test_pickle(cls: type[Exception]) -> None:
    err = pickle.loads(pickle.dumps(cls("message naming 'ssh'")))
    assert type(err) is cls
    assert str(err) == "message naming 'ssh'"


def test_public_names() -> None:
    for name in (
        "AlreadyExistsError",
        "CollectionNotFoundError",
        "ConflictError",
        "InvalidInputError",
        "NotFoundError",
        "ReadOnlyError",
        "SchemaError",
        "StorageError",
        "ZCollectionError",
    ):
        assert getattr(zc, name) is getattr(errors, name)
    assert set(errors.__all__) >= {c.__name__ for c in TREE}


def test_errors_chain_their_cause(memory_url: str) -> None:
    schema = zc.Schema().with_dimension("t").with_variable("t", dtype="int64", dimensions="t")
    with pytest.raises(errors.SchemaError) as info:
        schema.with_variable("bad", dtype="not-a-dtype", dimensions="t")
    assert "bad" in str(info.value)
    assert info.value.__cause__ is not None
    with pytest.raises(errors.VariableNotFoundError, match="nope") as lookup:
        schema.build()["nope"]
    assert isinstance(lookup.value, KeyError)
