"""Bytes to clean text, shared by every reader: decoding, normalising, speaker turns, one document per file."""

from __future__ import annotations

import io
import logging
import re
import unicodedata
import zipfile

from ..errors import InputError
from ..records import Document, Turn

logger = logging.getLogger(__name__)

MB = 1 << 20

# ---------------------------------------------------------------------------------------------------------------
# Bytes to clean text

_BOMS = (
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
)
_TEXT_CONTROLS = frozenset("\t\n\r\f\v")
# Real text has almost no control characters; binary data decoded as latin-1 has plenty.
_MAX_CONTROL_SHARE = 0.1


def decode(data: bytes, source_file: str) -> tuple[str, str]:
    """Decode bytes as text; returns (text, encoding name). Falls back to cp1252, then latin-1, with a warning."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise InputError(
                    source_file, f"starts with a {encoding} byte-order mark but is not {encoding} ({exc.reason})"
                ) from None
            _reject_binary(text, source_file)
            return text, encoding
    if b"\x00" in data:
        raise InputError(
            source_file, "binary file (contains NUL bytes); only text, .docx, captions and tables are read"
        )
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        try:
            text, encoding = data.decode("cp1252"), "cp1252"
        except UnicodeDecodeError:
            text, encoding = data.decode("latin-1"), "latin-1"
        _reject_binary(text, source_file)
        logger.warning(
            "%s: not valid UTF-8, decoded as %s; check accented letters and quotes, or save the file as UTF-8",
            source_file,
            encoding,
        )
        return text, encoding
    _reject_binary(text, source_file)
    return text, encoding


def _reject_binary(text: str, source_file: str) -> None:
    controls = sum(1 for ch in text if ch not in _TEXT_CONTROLS and unicodedata.category(ch) == "Cc")
    if "\x00" in text or (text and controls / len(text) > _MAX_CONTROL_SHARE):
        raise InputError(
            source_file, "binary file (NUL or many control characters); only text, .docx, captions and tables are read"
        )


_BLANK_RUN = re.compile(r"\n{3,}")


def normalise(text: str) -> str:
    """LF line ends, no trailing spaces, NFC, no BOM, at most one blank line in a row, no blank lines at the ends."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").removeprefix("\ufeff")
    text = unicodedata.normalize("NFC", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUN.sub("\n\n", text).strip("\n")


# ---------------------------------------------------------------------------------------------------------------
# Speaker turns

# A candidate label is everything before the first colon on a line; the colon must be followed by a space or the
# line end, which rules out times ("10:30") and URLs ("http://").
LABEL_LINE = re.compile(r"^[ \t]*(?P<label>[^\n:]{1,40}):(?=[ \t]|$)", re.MULTILINE)
_LABEL_WORD = re.compile(r"[^\W\d_][\w'’-]*\.?|\d+", re.UNICODE)
_MAX_LABEL_WORDS = 4


def is_label(label: str) -> bool:
    """1 to 4 words, each capitalised, all-caps or a number; "." only closing an abbreviation ("Dr.")."""
    words = label.split()
    if not 1 <= len(words) <= _MAX_LABEL_WORDS:
        return False
    if all(word.isdigit() for word in words):
        return False  # "1: first point" is a numbered list, not a speaker
    return all(_LABEL_WORD.fullmatch(word) and (word.isdigit() or word[0].isupper()) for word in words)


def detect_turns(text: str) -> tuple[Turn, ...]:
    """Speaker turns in normalised text; text before the first label belongs to no turn."""
    starts = [
        (match.group("label").strip(), match.start("label"))
        for match in LABEL_LINE.finditer(text)
        if is_label(match.group("label"))
    ]
    turns = []
    for i, (speaker, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else len(text)
        while end > start and text[end - 1].isspace():
            end -= 1
        turns.append(Turn(speaker=speaker, start=start, end=end))
    return tuple(turns)


def too_big(what: str, size: int | None, setting: str, max_mb: int) -> str:
    """`big.txt: too large: 250.0 MB (262,144,000 bytes), more than ingest.max_file_mb (200 MB); raise ...`"""
    shown = "" if size is None else f" {size / MB:.1f} MB ({size:,} bytes),"
    return f"{what}:{shown} more than {setting} ({max_mb} MB); raise {setting} to read it"


def one_document(rel: str, fmt: str, encoding: str, text: str, turns: tuple[Turn, ...] | None = None) -> list[Document]:
    if not text:
        raise InputError(rel, "empty: no text after removing whitespace")
    return [
        Document(
            doc_id=rel,
            source_file=rel,
            format=fmt,
            encoding=encoding,
            text=text,
            turns=detect_turns(text) if turns is None else turns,
        )
    ]


def speaker(label: str, aliases: dict[str, str]) -> str:
    label = " ".join(label.split()).removesuffix(":").strip()
    return aliases.get(label, label)


SURROGATE = re.compile(r"[\ud800-\udfff]")


def short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


# An Office file's (.docx, .xlsx) zip directory holds a few dozen entries (about 100 bytes each); zipfile keeps an
# object per entry.
_MAX_ZIP_DIRECTORY = 4 * MB


def check_unzipped_size(data: bytes, rel: str, fmt: str, max_mb: int) -> None:
    """Refuse an Office file (.docx, .xlsx) that unzips to more than `max_mb`: by the sizes its members declare,
    then by the bytes they actually give, read in blocks (a zip bomb may declare small sizes)."""
    cap = max_mb * MB
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))  # end of central directory record
    if end >= 0 and int.from_bytes(data[end + 12 : end + 16], "little") > _MAX_ZIP_DIRECTORY:
        raise InputError(rel, f"not a valid .{fmt} (its zip directory is larger than an Office file's can be)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            declared = sum(member.file_size for member in members)
            if declared > cap:
                raise InputError(
                    rel,
                    too_big("too large when unzipped", declared, "ingest.max_expanded_mb", max_mb),
                )
            total = 0
            for member in members:
                with archive.open(member) as fh:
                    size = 0
                    while block := fh.read(MB):
                        size += len(block)
                        total += len(block)
                        if size > member.file_size:
                            raise InputError(
                                rel, f"not a valid .{fmt} ({member.filename} unzips to more than the size it declares)"
                            )
                        if total > cap:
                            raise InputError(
                                rel, too_big("too large when unzipped", None, "ingest.max_expanded_mb", max_mb)
                            )
    except InputError:
        raise
    except Exception as exc:  # BadZipFile, an unknown compression method, an encrypted member, zlib.error...
        raise InputError(rel, f"not a valid .{fmt} ({type(exc).__name__}: {exc})") from None
