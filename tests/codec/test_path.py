from __future__ import annotations

import pytest

from fastgw.codec.path import normalize_path
from fastgw.codec.problem import CodecError

CASES = [
    (b"/", b"/"),
    (b"/a/b", b"/a/b"),
    (b"/a/./b", b"/a/b"),
    (b"/a/../b", b"/b"),
    (b"/a/b/..", b"/a/"),
    (b"/a/b/.", b"/a/b/"),
    (b"/../../x", b"/x"),
    (b"//admin", b"/admin"),
    (b"/a//b///c", b"/a/b/c"),
    (b"/%7Euser", b"/~user"),
    (b"/%61%62c", b"/abc"),
    (b"/%2e%2e/admin", b"/admin"),
    (b"/public/%2e%2e/admin", b"/admin"),
    (b"/a%20b", b"/a%20b"),
    (b"/a%3fb", b"/a%3Fb"),
    (b"/Admin", b"/Admin"),
    (b"/a/", b"/a/"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_normalize(raw: bytes, expected: bytes) -> None:
    assert normalize_path(raw) == expected


def test_keep_duplicate_slashes_when_configured() -> None:
    assert normalize_path(b"//a//b", merge_slashes=False) == b"//a//b"


@pytest.mark.parametrize(
    "raw",
    [
        b"/a%2fb",
        b"/a%2Fb",
        b"/a%5cb",
        b"/..%5c/x",
        b"/a%00",
        b"/a\\b",
        b"/..;/admin",
        b"/a/.;x/b",
        b"/%zz",
        b"/%4",
    ],
)
def test_refused(raw: bytes) -> None:
    with pytest.raises(CodecError) as info:
        normalize_path(raw)
    assert info.value.status == 400


def test_encoded_slash_kept_encoded_when_allowed() -> None:
    assert normalize_path(b"/a%2fb", allow_encoded_slash=True) == b"/a%2Fb"
