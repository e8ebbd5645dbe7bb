"""Masking the secrets of storage URLs, in URLs alone and in the messages that quote them."""

from __future__ import annotations

import time

import pytest

from sweep.storage import StorageError, check_url, display, make_storage

SECRET = "S3cretPW"


@pytest.mark.parametrize(
    "text, shown",
    [
        ("postgresql+psycopg2://alice:S3cretPW@db:5432/sweep",
         "postgresql+psycopg2://alice:***@db:5432/sweep"),
        ("postgresql+psycopg2://alice@127.0.0.1:1/sweep?password=S3cretPW",
         "postgresql+psycopg2://alice@127.0.0.1:1/sweep?password=***"),
        ("postgresql://alice@db/sweep?sslmode=require&sslpassword=S3cretPW&connect_timeout=5",
         "postgresql://alice@db/sweep?sslmode=require&sslpassword=***&connect_timeout=5"),
        ("mysql://u@db/s?passwd=S3cretPW&pwd=S3cretPW&api_key=S3cretPW&token=S3cretPW",
         "mysql://u@db/s?passwd=***&pwd=***&api_key=***&token=***"),
        ("postgresql://alice:S3cret PW@db/sweep", "postgresql://alice:***@db/sweep"),
        ("postgresql://alice:S3c@retPW@db/sweep", "postgresql://alice:***@db/sweep"),
        ("cannot open study storage postgresql://alice:S3cretPW@db/sweep: (psycopg2) refused",
         "cannot open study storage postgresql://alice:***@db/sweep: (psycopg2) refused"),
        ("storage: Input should be a valid string (got ['postgresql://a:S3cretPW@db/s'])",
         "storage: Input should be a valid string (got ['postgresql://a:***@db/s'])"),
        ("storage 'alice:S3cretPW@db/sweep' is not a database URL",
         "storage 'alice:***@db/sweep' is not a database URL"),
        ("cannot open study storage postgresql://alice@db/s?password=S3cretPW: (psycopg2) no",
         "cannot open study storage postgresql://alice@db/s?password=***: (psycopg2) no"),
        ("invalid dsn: host=db user=alice password=S3cretPW",
         "invalid dsn: host=db user=alice password=***"),
        ("postgresql://alice@db/sweep?pass%77ord=S3cretPW&application_name=sweep",
         "postgresql://alice@db/sweep?pass%77ord=***&application_name=sweep"),
    ],
)  # fmt: skip
def test_secrets_are_masked_wherever_a_url_holds_them(text: str, shown: str):
    assert display(text) == shown
    assert display(shown) == shown  # a message built from masked parts is masked again as is


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:///runs/demo.db",
        "postgresql://db:5432/sweep",
        "no study 'x' in sqlite:////tmp/a@b/demo.db; it has: ['demo']",
        "KeyError: 'model.layers.0' at 12:30 for alice@example.org",
        "postgresql://alice@db/sweep?sslmode=require&connect_timeout=5",
        "search.bits: [2, 3, 4, 8, 16] -> [2, 4, 16]; x=1, kl_seq_len=256",
    ],
)
def test_text_without_secrets_is_left_as_it_is(text: str):
    assert display(text) == text


def test_a_database_that_cannot_be_reached_is_refused_without_its_password():
    url = f"postgresql+psycopg2://alice:{SECRET}@127.0.0.1:1/sweep?password={SECRET}"
    with pytest.raises(StorageError) as info:
        make_storage(url, heartbeat=False)
    message = str(info.value)
    assert message.startswith(
        "cannot open study storage postgresql+psycopg2://alice:***@127.0.0.1:1/sweep?password=***:"
    )
    assert SECRET not in message
    with pytest.raises(StorageError) as info:
        check_url(f"alice:{SECRET}@127.0.0.1/sweep")
    assert "is not a database URL" in str(info.value) and SECRET not in str(info.value)


@pytest.mark.parametrize("unit", ["a", "a=", "a:", "a://", "=a:", "x@", "a,"])
def test_masking_takes_time_linear_in_the_text(unit: str):
    text = unit * (200_000 // len(unit))  # the size of a value a spec file may hold, about
    start = time.perf_counter()
    display(text)
    assert time.perf_counter() - start < 1.0
