"""A multipart/form-data body parsed once, strictly: uploads must be files, every other field short text.

serving.guard parses each upload endpoint's body with `parse_form` before BentoML sees it, to refuse
what BentoML would mishandle (a text value for a file field is fetched as a URL; a binary value for a
text field crashes it). The endpoint is then answered from this parse (serving.service), so what was
checked is what is answered, and BentoML does not parse the body a second time into a temporary file.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from .asgi import echo
from .errors import BadInput, InvalidField

MAX_FORM_PARTS = 16          # our forms have at most three fields; more is a mistake or an attack
MAX_TEXT_FIELD_BYTES = 1024  # model names and numbers are short (Starlette fails past 1 MiB, as a 500)
MAX_TEXT_NESTING = 32        # brackets deep in a text field; none of ours has any
# Field names are decoded in the charset the Content-Type names, as Starlette does (falling back to Latin-1
# where they do not decode). Only these are taken, strictly: under UTF-7 "+AGkAbQBhAGcAZQ-" is "image".
CHARSETS = ("utf-8", "ascii")  # codecs.lookup names


@dataclass
class Part:
    """One form field: its name, whether it came as a file, and where its bytes lie in the body."""

    name: str
    is_file: bool
    chunks: list[memoryview | bytes] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)


@dataclass
class Form:
    """The parts of one body, by field name. Of repeated fields BentoML takes a file field's first part and
    a text field's last; so does this."""

    parts: dict[str, Part]
    all_parts: list[Part] = field(default_factory=list)  # every part, repeated names included, in order

    def file(self, name: str) -> bytes | None:
        """The bytes of file field `name`, or None when the form has no such field."""
        part = self.parts.get(name)
        return None if part is None else b"".join(part.chunks)

    def text(self, name: str) -> str | None:
        """Text field `name` decoded as UTF-8, or None when absent; InvalidField when it is not UTF-8
        (BentoML would read it as Latin-1, and answer that no model has the garbled name)."""
        data = self.file(name)
        try:
            return None if data is None else data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidField(f"{name}: not UTF-8 text") from None


def parse_form(body: bytes, content_type: str, uploads: frozenset[str]) -> Form:
    """The form in `body`; BadInput saying why it is refused: the fields named in `uploads` must be files,
    every other field text of at most MAX_TEXT_FIELD_BYTES, and there are at most MAX_FORM_PARTS parts."""
    options = parse_options_header(content_type)[1]
    charset = _charset(options.get(b"charset", b"utf-8"))
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadInput("multipart/form-data without a boundary: let your HTTP client build the form")
    headers: list[dict[bytes, bytes]] = []  # each part's headers
    chunks: list[list[memoryview | bytes]] = []  # each part's data
    header = [b"", b""]

    def on_part_begin() -> None:
        # Refused as soon as the part past the limit begins, not after parsing the rest: tens of thousands
        # of empty parts fit in a body and would hold the event loop
        # (docs/BENCHMARKS.md#figures-behind-the-services-constants).
        if len(headers) == MAX_FORM_PARTS:
            raise BadInput(f"more than {MAX_FORM_PARTS} form fields; this endpoint takes at most {MAX_FORM_PARTS}")
        headers.append({})
        chunks.append([])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        headers[-1][header[0].lower()] = header[1]
        header[:] = [b"", b""]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        # Views into the body cost no copy (a 20 MiB upload is only checked). Written in one piece, the
        # body is what the parser hands over; anything else would be its own reused buffer: copied.
        chunks[-1].append(body_view[start:end] if data is body else bytes(data[start:end]))

    body_view = memoryview(body)
    try:  # the parser's constructor refuses a boundary over 256 bytes
        parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                            "on_header_value": on_header_value, "on_header_end": on_header_end,
                                            "on_part_data": on_part_data})
        parser.write(body)
        parser.finalize()
    except FormParserError as err:
        raise BadInput(f"malformed multipart body: {err}") from None
    parts: dict[str, Part] = {}
    all_parts = [_part(part_headers, part_chunks, uploads, charset)
                 for part_headers, part_chunks in zip(headers, chunks)]
    for part in all_parts:
        if not (part.is_file and part.name in parts):
            parts[part.name] = part
    return Form(parts, all_parts)


def _charset(name: bytes) -> str:
    """The codec of a Content-Type's charset parameter, if it is one of CHARSETS; BadInput otherwise."""
    try:
        codec = codecs.lookup(name.decode("latin-1")).name
    except LookupError:
        codec = None
    if codec not in CHARSETS:
        raise BadInput(f"charset {name.decode('latin-1')[:40]!r} is refused: send the form in UTF-8")
    return codec


def _nested_too_deep(text: bytes) -> bool:
    """Whether brackets in `text` nest deeper than MAX_TEXT_NESTING. BentoML reads a text field as JSON
    when it parses, and json.loads of [[[[... some 1,000 deep raises RecursionError, a 500 in BentoML;
    counted here without parsing, so the limit does not depend on the stack."""
    depth = 0
    for byte in text:
        if byte in b"[{":
            depth += 1
            if depth > MAX_TEXT_NESTING:
                return True
        elif byte in b"]}":
            depth -= 1
    return False


def _part(headers: dict[bytes, bytes], chunks: list[memoryview | bytes], uploads: frozenset[str],
          charset: str) -> Part:
    disposition = parse_options_header(headers.get(b"content-disposition", b""))[1]
    if b"name" not in disposition:
        raise BadInput("malformed multipart body: a part has no field name in its Content-Disposition")
    try:  # strictly: a name that does not decode would be read otherwise by Starlette (as Latin-1)
        name = disposition[b"name"].decode(charset)
    except UnicodeDecodeError:
        raise BadInput(f"a form field's name is not {charset} text") from None
    part = Part(name, b"filename" in disposition, chunks)
    if not part.is_file and part.size > MAX_TEXT_FIELD_BYTES:
        raise BadInput(f"{echo(part.name)}: a text field of {part.size} bytes; the limit is {MAX_TEXT_FIELD_BYTES}")
    if not part.is_file and _nested_too_deep(b"".join(part.chunks)):
        raise BadInput(f"{echo(part.name)}: brackets nested more than {MAX_TEXT_NESTING} deep")
    if part.name in uploads and not part.is_file:
        raise BadInput(f"{part.name}: send the file itself as a file upload (curl -F '{part.name}=@file'); "
                       "text, paths and URLs are not accepted")
    if part.name not in uploads and part.is_file:
        raise BadInput(f"{echo(part.name)}: must be a plain form field, not a file upload")
    return part

