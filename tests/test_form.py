"""serving.form: the one parse of an upload body that the guard checks and POST /classify answers from."""

from __future__ import annotations

import pytest

from serving.errors import BadInput, InvalidField
from serving.form import MAX_TEXT_FIELD_BYTES, parse_form

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def body(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart body of (name, filename or None for a text field, data) parts."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def test_files_and_text_come_back_byte_for_byte() -> None:
    # Data with partial boundaries in it: the parser must hand it all over, split where it looked.
    tricky = b"\x89PNG\r\n--b0und\r\n-" + bytes(range(256)) * 40 + b"\r\n--b0undar"
    form = parse_form(body(("image", "x.png", tricky), ("model", None, "fashion".encode()),
                           ("top_k", None, b"3")), CONTENT_TYPE, frozenset({"image"}))
    assert form.file("image") == tricky
    assert (form.text("model"), form.text("top_k"), form.file("missing")) == ("fashion", "3", None)
    assert {name: part.is_file for name, part in form.parts.items()} == {"image": True, "model": False,
                                                                         "top_k": False}


def test_text_nested_up_to_the_limit_is_accepted() -> None:
    form = parse_form(body(("top_k", None, b"[" * 32 + b"]" * 32)), CONTENT_TYPE, frozenset())
    assert form.text("top_k") == "[" * 32 + "]" * 32


def test_repeated_fields_are_read_as_bentoml_reads_them() -> None:
    form = parse_form(body(("model", None, b"a"), ("model", None, b"b"), ("image", "1.png", b"1"),
                           ("image", "2.png", b"2")), CONTENT_TYPE, frozenset({"image"}))
    assert (form.text("model"), form.file("image")) == ("b", b"1")


def test_text_that_is_not_utf8_is_a_422_naming_the_field() -> None:
    form = parse_form(body(("model", None, b"\xff\xfe")), CONTENT_TYPE, frozenset())
    with pytest.raises(InvalidField, match="model: not UTF-8"):
        form.text("model")


@pytest.mark.parametrize("parts, message", [
    ([("image", None, b"http://example.com/x.png")], "send the file itself"),
    ([("image", "x.png", b"x"), ("model", "m.txt", b"fashion")], "model: must be a plain form field"),
    ([("image", "x.png", b"x"), ("model", None, b"m" * (MAX_TEXT_FIELD_BYTES + 1))], "the limit is"),
    ([(f"f{i}", None, b"1") for i in range(17)], "at most 16"),
    ([("image", "x.png", b"x"), ("model", None, b'{"a": ' * 33 + b"1" + b"}" * 33)], "nested more than 32"),
])
def test_what_the_guard_refuses(parts: list[tuple[str, str | None, bytes]], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_form(body(*parts), CONTENT_TYPE, frozenset({"image"}))


def test_a_body_that_is_not_multipart_is_refused() -> None:
    with pytest.raises(BadInput, match="boundary"):
        parse_form(b"x", "multipart/form-data", frozenset())
    with pytest.raises(BadInput, match="malformed"):
        parse_form(b"--b0undary\r\nContent-Disposition: form-data\r\n\r\n", CONTENT_TYPE, frozenset())
