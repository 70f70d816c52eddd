"""Reading input files into normalised documents.

Every format ends up as the same `Document`: normalised text, where it came from, how it was decoded, and the
speaker turns found in it. Files that cannot be read raise `InputError`; `ingest` decides whether that skips the
file or stops the run.
"""

from __future__ import annotations

import html
import io
import json
import logging
import os
import re
import unicodedata
import zipfile
from collections import Counter
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import IngestConfig, TableInput
from ..errors import InputError, NothingToCode
from ..ids import stable_hash
from ..records import Document, IngestProblem, Turn

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Finding files


@dataclass(frozen=True)
class InputFile:
    """A file found under input_dir, as the input listing records it: name, size and time, never its content.

    `name` is the path relative to input_dir with `/` separators; bytes of a name that are not UTF-8 are shown
    as `\\xNN`. `problem` says why the file cannot be read at all (a broken link, a name that is not UTF-8).
    """

    name: str
    size: int
    mtime_ns: int
    problem: str | None = None


def discover(
    root: Path, include: list[str], exclude: Sequence[str] = (), never: Sequence[str | Path] = ()
) -> list[Path]:
    """Files under `root` matching any glob in `include` and none in `exclude` (matched against the end of the
    path, so `README*` is every README), hidden ones skipped, in order of their relative paths (numbers in names
    compared as numbers). Nothing under a directory in `never` (the run's results and cache) is an input, however
    `root` and `include` are set: an input_dir of `..` would otherwise code the last run's tables.

    Symbolic links to files are followed; broken ones are kept, so that they are reported rather than lost.
    """
    if not root.is_dir():
        raise InputError(str(root), "input directory not found; check ingest.input_dir")
    inside = _inside(root, never)
    found: dict[str, Path] = {}
    for pattern in include:
        try:
            matches = list(root.glob(pattern))
        except (ValueError, NotImplementedError) as exc:
            raise InputError(str(root), f"invalid glob pattern {pattern!r} in ingest.include ({exc})") from None
        for path in matches:
            rel = path.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or any(rel.parts[: len(d)] == d for d in inside):
                continue
            if any(rel.match(skip) for skip in exclude):
                continue
            if path.is_file() or (path.is_symlink() and not path.exists()):
                found[rel.as_posix()] = path
    return [found[key] for key in sorted(found, key=natural_key)]


def _inside(root: Path, dirs: Sequence[str | Path]) -> list[tuple[str, ...]]:
    """The parts, relative to `root`, of each directory in `dirs` that lies under it (resolved: `results` and
    `../project/results` are the same place)."""
    base = root.resolve()
    parts = []
    for d in dirs:
        try:
            parts.append(Path(d).resolve().relative_to(base).parts)
        except ValueError:
            continue
    return [p for p in parts if p]


# Names of the files a data folder's authors write about it rather than the texts to code.
_DOCUMENTATION = re.compile(
    r"(readme|sources?|licen[cs]e|copying|changelog|citation|contributing|authors|notice|codebook)"
    r"([._ -].*)?",
    re.IGNORECASE,
)


def documentation_like(files: Iterable[InputFile]) -> list[str]:
    """The listed files whose names look like a folder's documentation (README.md, SOURCES.txt, LICENSE)."""
    return [f.name for f in files if _DOCUMENTATION.fullmatch(f.name.rsplit("/", 1)[-1])]


def natural_key(name: str) -> tuple[list[tuple[int, int | str]], str]:
    """Sort key that orders the numbers in names as numbers: interview_2.txt before interview_10.txt (and, as a
    tie-break, 1.txt before 01.txt by their text)."""
    parts = [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]
    return parts, name


def printable_name(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (surrogate-escaped by Python) become `\\xNN`."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def describe(path: Path, root: Path) -> InputFile:
    """Name, size and modification time of one found file (stat only: nothing is read)."""
    name = printable_name(_relative(path, root))
    try:
        stat = path.stat()
    except OSError as exc:
        if not path.is_symlink():
            return InputFile(name, 0, 0, f"cannot be read ({exc.strerror or exc})")
        try:
            target, mtime_ns = printable_name(os.readlink(path)), path.lstat().st_mtime_ns
        except OSError:
            target, mtime_ns = "?", 0
        return InputFile(name, 0, mtime_ns, f"broken symbolic link to {target}")
    problem = None if name == _relative(path, root) else _NOT_UTF8_NAME
    return InputFile(name, stat.st_size, stat.st_mtime_ns, problem)


_NOT_UTF8_NAME = "file name is not valid UTF-8; rename the file (a doc_id is made from the name, and must be text)"


def list_inputs(
    root: Path, include: list[str], exclude: Sequence[str] = (), never: Sequence[str | Path] = ()
) -> list[InputFile]:
    """Every input file under `root`, as the listing records it (`discover` says which)."""
    return [describe(path, root) for path in discover(root, include, exclude, never)]


def from_listed(doc_id: str, names: Container[str]) -> bool:
    """Whether `doc_id` can be a document of one of the files named: a file's own id (its name) or a table row's
    (the name, `#` and the row's id). Known from the listing, before any file is read."""
    return doc_id in names or any(doc_id[:i] in names for i, c in enumerate(doc_id) if c == "#")


def listing_json(root: Path, files: Iterable[InputFile]) -> str:
    """The input listing: what Snakemake sees of the inputs, so no raw file name reaches its file patterns."""
    entries = [
        {"name": f.name, "size": f.size, "mtime_ns": f.mtime_ns, **({"problem": f.problem} if f.problem else {})}
        for f in files
    ]
    lines = ",\n".join(f"  {json.dumps(entry, ensure_ascii=False)}" for entry in entries)  # one file a line
    return f'{{"input_dir": {json.dumps(root.as_posix(), ensure_ascii=False)}, "files": [\n{lines}\n]}}\n'


def write_listing(path: str | Path, root: Path, files: Iterable[InputFile]) -> bool:
    """Write the listing only if its content changed, so that its time tells Snakemake when to ingest again."""
    path = Path(path)
    text = listing_json(root, files)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True


def read_listing(path: str | Path) -> tuple[Path, list[InputFile]]:
    """(input_dir, files) from a listing written by `write_listing`."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return Path(raw["input_dir"]), [InputFile(**entry) for entry in raw["files"]]


def listed_paths(path: str | Path) -> list[Path]:
    """Paths of the listed files that can be read (the manifest hashes these)."""
    root, files = read_listing(path)
    return [root / f.name for f in files if f.problem is None]


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
_LABEL_LINE = re.compile(r"^[ \t]*(?P<label>[^\n:]{1,40}):(?=[ \t]|$)", re.MULTILINE)
_LABEL_WORD = re.compile(r"[^\W\d_][\w'’-]*\.?|\d+", re.UNICODE)
_MAX_LABEL_WORDS = 4


def _is_label(label: str) -> bool:
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
        for match in _LABEL_LINE.finditer(text)
        if _is_label(match.group("label"))
    ]
    turns = []
    for i, (speaker, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else len(text)
        while end > start and text[end - 1].isspace():
            end -= 1
        turns.append(Turn(speaker=speaker, start=start, end=end))
    return tuple(turns)


# ---------------------------------------------------------------------------------------------------------------
# Readers: one per format, each taking the file's bytes and returning documents


_MB = 1 << 20


def read_document_file(path: Path, root: Path, cfg: IngestConfig) -> list[Document]:
    """Read one file into documents (one per file, or one per row for tables)."""
    rel = _relative(path, root)
    name = printable_name(rel)
    if name != rel:
        raise InputError(name, _NOT_UTF8_NAME)
    if path.is_symlink() and not path.exists():
        raise InputError(rel, f"broken symbolic link to {printable_name(os.readlink(path))}")
    fmt = path.suffix.lower().removeprefix(".")
    reader = _READERS.get(fmt)
    if reader is None:
        supported = ", ".join(f".{name}" for name in _READERS)
        raise InputError(rel, f"unsupported file type '{path.suffix}'; supported: {supported}")
    data = _read_bytes(path, rel, cfg.max_file_mb)
    if not data.strip():
        raise InputError(rel, "empty file")
    return reader(data, rel, fmt, cfg)


def _read_bytes(path: Path, rel: str, max_mb: int) -> bytes:
    """The file's bytes, refusing to read more than `max_mb` (the file may grow while it is read)."""
    cap = max_mb * _MB
    try:
        size = path.stat().st_size
        if size > cap:
            raise InputError(rel, _too_big("too large", size, "ingest.max_file_mb", max_mb))
        with path.open("rb") as fh:
            data = fh.read(cap + 1)
    except OSError as exc:
        raise InputError(rel, f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > cap:
        raise InputError(rel, _too_big("too large (it grew while being read)", None, "ingest.max_file_mb", max_mb))
    return data


def _too_big(what: str, size: int | None, setting: str, max_mb: int) -> str:
    """`big.txt: too large: 250.0 MB (262,144,000 bytes), more than ingest.max_file_mb (200 MB); raise ...`"""
    shown = "" if size is None else f" {size / _MB:.1f} MB ({size:,} bytes),"
    return f"{what}:{shown} more than {setting} ({max_mb} MB); raise {setting} to read it"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()


def _single(rel: str, fmt: str, encoding: str, text: str, turns: tuple[Turn, ...] | None = None) -> list[Document]:
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


def _read_text(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    text, encoding = decode(data, rel)
    return _single(rel, fmt, encoding, normalise(text))


def _read_docx(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    import docx  # deferred: python-docx pulls in lxml, which only .docx inputs need

    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise InputError(rel, "not a valid .docx (not a zip archive); re-save it from Word as .docx")
    _check_unzipped_size(data, rel, cfg.max_expanded_mb)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors... for broken packages
        raise InputError(rel, f"not a valid .docx ({type(exc).__name__}: {exc})") from None
    paragraphs = [text for text in _docx_blocks(document) if text.strip()]
    return _single(rel, fmt, "docx", normalise("\n\n".join(paragraphs)))


# A Word file's zip directory holds a few dozen entries (about 100 bytes each); zipfile keeps an object per entry.
_MAX_ZIP_DIRECTORY = 4 * _MB


def _check_unzipped_size(data: bytes, rel: str, max_mb: int) -> None:
    """Refuse a .docx that unzips to more than `max_mb`: by the sizes its members declare, then by the bytes
    they actually give, read in blocks (a zip bomb may declare small sizes)."""
    cap = max_mb * _MB
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))  # end of central directory record
    if end >= 0 and int.from_bytes(data[end + 12 : end + 16], "little") > _MAX_ZIP_DIRECTORY:
        raise InputError(rel, "not a valid .docx (its zip directory is larger than a Word file's can be)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            declared = sum(member.file_size for member in members)
            if declared > cap:
                raise InputError(
                    rel,
                    _too_big("too large when unzipped", declared, "ingest.max_expanded_mb", max_mb),
                )
            total = 0
            for member in members:
                with archive.open(member) as fh:
                    size = 0
                    while block := fh.read(_MB):
                        size += len(block)
                        total += len(block)
                        if size > member.file_size:
                            raise InputError(
                                rel, f"not a valid .docx ({member.filename} unzips to more than the size it declares)"
                            )
                        if total > cap:
                            raise InputError(
                                rel, _too_big("too large when unzipped", None, "ingest.max_expanded_mb", max_mb)
                            )
    except InputError:
        raise
    except Exception as exc:  # BadZipFile, an unknown compression method, an encrypted member, zlib.error...
        raise InputError(rel, f"not a valid .docx ({type(exc).__name__}: {exc})") from None


def _docx_blocks(document) -> Iterable[str]:
    """Paragraph texts in reading order, table cells included, so answers in a table are not lost."""
    from docx.table import Table

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            yield from _table_cells(block)
        else:
            yield block.text


def _table_cells(table) -> Iterable[str]:
    for row in table.rows:
        seen = set()
        for cell in row.cells:
            # A merged cell appears once per grid column it spans; its text should appear once.
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            yield cell.text


# ---------------------------------------------------------------------------------------------------------------
# Captions


def _read_captions(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    import webvtt
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    text, encoding = decode(data, rel)
    text = text.removeprefix("\ufeff")
    _check_timings(text, rel)
    try:
        captions = webvtt.from_buffer(io.StringIO(text), format=fmt).captions
    except (MalformedFileError, MalformedCaptionError, ValueError) as exc:
        raise InputError(rel, f"not a valid .{fmt} file: broken timestamps or cue layout ({exc})") from None
    cues = [_cue(caption.voice, caption.text) for caption in captions]
    rendered, turns = _render_cues(_merge_speakers(cue for cue in cues if cue[1]))
    return _single(rel, fmt, encoding, rendered, turns)


_TIMESTAMP = r"(?:\d+:)?\d{1,2}:\d{1,2}[.,]\d{1,3}"
_TIMINGS = re.compile(rf"\s*{_TIMESTAMP}\s*-->\s*{_TIMESTAMP}(?:\s.*)?")


def _check_timings(text: str, rel: str) -> None:
    """Fail on a broken timing line: webvtt-py drops such cues silently, losing what was said."""
    for number, line in enumerate(text.splitlines(), start=1):
        if "-->" in line and not _TIMINGS.fullmatch(line):
            raise InputError(rel, f"broken timestamps on line {number}: {line.strip()!r}")


def _cue(voice: str | None, text: str) -> tuple[str | None, str]:
    """(speaker, one-line text) of a cue; the speaker is the voice tag or a leading "NAME:" label."""
    text = " ".join(unicodedata.normalize("NFC", text).split())
    if voice:
        return " ".join(unicodedata.normalize("NFC", voice).split()), text
    match = _LABEL_LINE.match(text)
    if match and _is_label(match.group("label")):
        return match.group("label").strip(), text[match.end() :].strip()
    return None, text


def _merge_speakers(cues: Iterable[tuple[str | None, str]]) -> list[tuple[str | None, str]]:
    """Consecutive cues of one speaker become one turn; cues without a speaker stay separate."""
    merged: list[tuple[str | None, str]] = []
    for speaker, text in cues:
        if speaker is not None and merged and merged[-1][0] == speaker:
            merged[-1] = (speaker, f"{merged[-1][1]} {text}".strip())
        else:
            merged.append((speaker, text))
    return merged


def _render_cues(cues: list[tuple[str | None, str]]) -> tuple[str, tuple[Turn, ...]]:
    """ "Speaker: text" lines separated by blank lines; turns come from the cues, not from re-parsing the text."""
    parts: list[str] = []
    turns: list[Turn] = []
    offset = 0
    for speaker, text in cues:
        line = f"{speaker}: {text}".rstrip() if speaker else text
        if speaker:
            turns.append(Turn(speaker=speaker, start=offset, end=offset + len(line)))
        parts.append(line)
        offset += len(line) + 2
    return "\n\n".join(parts), tuple(turns)


# ---------------------------------------------------------------------------------------------------------------
# Tables: one row is one document


def _read_csv(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    import pandas as pd

    text, encoding = decode(data, rel)
    try:
        # header=None: the header row is read as the file has it, so an empty header stays empty (pandas would
        # call it "Unnamed: 0") and a repeated one stays repeated (pandas would make it "x.1").
        frame = pd.read_csv(io.StringIO(text.removeprefix("\ufeff")), dtype=str, keep_default_na=False, header=None)
    except pd.errors.EmptyDataError:
        raise InputError(rel, "empty: no header row") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise InputError(rel, f"not a valid CSV file ({exc})") from None
    cells = [[value if isinstance(value, str) else "" for value in row] for row in frame.itertuples(index=False)]
    columns = [column.strip() for column in cells[0]]
    # Short rows come back as NaN even with keep_default_na=False; an absent cell is empty text.
    rows = [dict(zip(_unique_keys(columns), values, strict=True)) for values in cells[1:]]
    return _table_documents(rows, columns, rel, fmt, encoding, cfg)


def _unique_keys(columns: list[str]) -> list[str]:
    """Keys for a row's cells: the column's name, or for a name used before, the name and its position."""
    seen: set[str] = set()
    keys = []
    for number, column in enumerate(columns, start=1):
        keys.append(column if column not in seen else f"{column}\x00{number}")
        seen.add(column)
    return keys


def _read_jsonl(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    text, encoding = decode(data, rel)
    rows: list[dict[str, str]] = []
    columns: dict[str, None] = {}  # ordered set: columns in order of first appearance
    # split("\n"), not splitlines(): JSON strings may hold a raw U+2028, which splitlines() breaks on.
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        if not line.strip():
            continue
        row = _jsonl_row(line, number, rel)
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return _table_documents(rows, list(columns), rel, fmt, encoding, cfg)


def _jsonl_row(line: str, number: int, rel: str) -> dict[str, str]:
    """One JSONL line as column -> text; any way the line can fail names the line."""
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise InputError(rel, f"line {number} is not a JSON object (got {type(record).__name__})")
        row = {key: _cell(value) for key, value in record.items()}
    except json.JSONDecodeError as exc:
        raise InputError(rel, f"line {number} is not valid JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:
        raise InputError(rel, f"line {number} is not usable JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (Python's advice after ";" is not ours)
        raise InputError(rel, f"line {number} is not usable JSON ({_short(str(exc).split(';')[0])})") from None
    for text in (*row, *row.values()):
        if _SURROGATE.search(text):
            raise InputError(
                rel, f"line {number} is not valid Unicode (a \\u escape gives a lone surrogate such as \\ud800)"
            )
    return row


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _show_columns(columns: list[str]) -> str:
    """The columns as the file has them; an empty header is named by its position and how to select it."""
    shown = [
        column if column else f'column {number} (empty header; select it with "")'
        for number, column in enumerate(columns, start=1)
    ]
    return ", ".join(shown) or "(none)"


def _table_documents(
    rows: list[dict[str, str]], columns: list[str], rel: str, fmt: str, encoding: str, cfg: IngestConfig
) -> list[Document]:
    """Rows to documents: one per row, or one per group of rows (a transcript exported as a table)."""
    table = cfg.table
    if not rows:
        raise InputError(rel, "empty: no rows")
    present = _show_columns(columns)
    wanted = {
        "text_column": table.text_column,
        "group_column": table.group_column,
        "order_column": table.order_column,
        "speaker_column": table.speaker_column,
        "id_column": None if table.grouped else table.id_column,
    }
    for setting, column in wanted.items():
        if column is None or column in columns:
            continue
        what = setting.removesuffix("_column")
        null = ", or null to number the rows" if setting == "id_column" else ""
        raise InputError(rel, f"no {what} column {column!r} (columns: {present}); set ingest.table.{setting}{null}")
    for column in {c for c in wanted.values() if c is not None}:
        if columns.count(column) > 1:
            positions = [str(i) for i, c in enumerate(columns, start=1) if c == column]
            raise InputError(rel, f"column {column!r} appears more than once (columns {', '.join(positions)}); "
                             "rename one in the file")  # fmt: skip
    if table.unescape_html:
        rows = [{key: html.unescape(value) for key, value in row.items()} for row in rows]
    if table.grouped:
        return _grouped_documents(rows, columns, rel, fmt, encoding, cfg)
    metadata_columns = _metadata_columns(columns, rel, table, exclude=(table.id_column, table.text_column))

    documents = []
    for number, row in enumerate(rows, start=1):
        row_id = str(number) if table.id_column is None else row.get(table.id_column, "").strip()
        text = normalise(row.get(table.text_column, ""))
        if not text:
            logger.warning("%s: row %s has no text in column '%s'; skipped", rel, row_id or number, table.text_column)
            continue
        if not row_id:
            raise InputError(rel, f"row {number} has an empty id in column '{table.id_column}'")
        documents.append(
            Document(
                doc_id=f"{rel}#{row_id}",
                source_file=rel,
                format=fmt,
                encoding=encoding,
                text=text,
                turns=detect_turns(text),
                metadata={key: row.get(column, "") for key, column in metadata_columns.items()},
            )
        )
    if not documents:
        raise InputError(rel, f"empty: every row's '{table.text_column}' is empty")
    _reject_duplicate_ids(documents, rel, table)
    return documents


def _grouped_documents(
    rows: list[dict[str, str]], columns: list[str], rel: str, fmt: str, encoding: str, cfg: IngestConfig
) -> list[Document]:
    """A transcript exported as a table: the rows of each group (the whole file, without group_column) become one
    document, in order_column's order, each row a paragraph and each change of speaker a turn."""
    table = cfg.table
    groups: dict[str, list[tuple[int, dict[str, str]]]] = {}  # in the order groups first appear
    for number, row in enumerate(rows, start=1):
        key = row[table.group_column].strip() if table.group_column else ""
        if table.group_column and not key:
            raise InputError(rel, f"row {number} has no value in the group column {table.group_column!r}")
        groups.setdefault(key, []).append((number, row))
    exclude = (table.text_column, table.order_column, table.speaker_column)
    metadata_columns = _metadata_columns(columns, rel, table, exclude=exclude)
    documents = []
    for key, members in groups.items():
        if table.order_column:
            members = _in_order(members, table.order_column, rel)
        text, turns = _transcript([row for _, row in members], table, cfg.speaker_aliases)
        where = f"group {key!r}" if table.group_column else "the file"
        if not text:
            logger.warning("%s: %s has no text in column '%s'; skipped", rel, where, table.text_column)
            continue
        documents.append(
            Document(
                doc_id=f"{rel}#{key}" if table.group_column else rel,
                source_file=rel,
                format=fmt,
                encoding=encoding,
                text=text,
                turns=turns,
                metadata=_group_metadata(members, metadata_columns, table.metadata_columns is not None, rel, where),
            )
        )
    if not documents:
        raise InputError(rel, f"empty: every row's '{table.text_column}' is empty")
    return documents


def _in_order(members: list[tuple[int, dict[str, str]]], column: str, rel: str) -> list[tuple[int, dict[str, str]]]:
    """Rows sorted by `column`: as numbers if every value is one (2 before 10), else as text; ties keep file order."""
    values = [row[column].strip() for _, row in members]
    for (number, _), value in zip(members, values, strict=True):
        if not value:
            raise InputError(rel, f"row {number} has no value in the order column {column!r}")
    try:
        keys: list[float] | list[str] = [float(v) for v in values]
    except ValueError:
        keys = values
    order = sorted(range(len(members)), key=keys.__getitem__)
    return [members[i] for i in order]


def _speaker(label: str, aliases: dict[str, str]) -> str:
    label = " ".join(label.split()).removesuffix(":").strip()
    return aliases.get(label, label)


def _transcript(rows: list[dict[str, str]], table: TableInput, aliases: dict[str, str]) -> tuple[str, tuple[Turn, ...]]:
    """Rows as a .txt transcript would hold them: paragraphs separated by a blank line, "Speaker: " before the first
    paragraph of each turn; a row of the same speaker, or without one, continues the turn (as in a .txt file,
    where a turn runs to the next label)."""
    parts: list[str] = []
    turns: list[Turn] = []
    offset, current, start = 0, None, 0
    for row in rows:
        words = normalise(row.get(table.text_column, ""))
        if not words:
            continue
        label = _speaker(row.get(table.speaker_column, ""), aliases) if table.speaker_column else ""
        if label and label != current:
            if current is not None:
                turns.append(Turn(current, start, offset - 2))
            current, start = label, offset
            words = f"{label}: {words}"
        parts.append(words)
        offset += len(words) + 2
    if current is not None:
        turns.append(Turn(current, start, offset - 2))
    return "\n\n".join(parts), tuple(turns)


def _group_metadata(
    members: list[tuple[int, dict[str, str]]], columns: dict[str, str], chosen: bool, rel: str, where: str
) -> dict[str, str]:
    """The metadata of a grouped document: columns whose value is the same in all its rows. A chosen column whose
    value varies is an error; an unchosen one is left out (a per-row tag is not a fact about the interview)."""
    metadata = {}
    for key, column in columns.items():
        values = list(dict.fromkeys(row.get(column, "") for _, row in members))
        if len(values) == 1:
            metadata[key] = values[0]
        elif chosen:
            shown = ", ".join(repr(v) for v in values[:3])
            raise InputError(rel, f"metadata column {column!r} varies within {where} ({shown}...); a document's "
                             "metadata must be one value: remove it from ingest.table.metadata_columns")  # fmt: skip
    return metadata


def _metadata_columns(
    columns: list[str], rel: str, table: TableInput, exclude: tuple[str | None, ...]
) -> dict[str, str]:
    """Metadata key -> column. By default every other column with a header (a column without one is a row number,
    most often); a chosen column without a header is keyed `column_<n>`."""
    if table.metadata_columns is None:
        keys = [c for c in dict.fromkeys(columns) if c and c not in exclude]
        return {key: key for key in keys}
    missing = [column for column in table.metadata_columns if column not in columns]
    if missing:
        raise InputError(
            rel,
            f"no metadata column(s) {', '.join(map(repr, missing))} (columns: {_show_columns(columns)}); "
            "set ingest.table.metadata_columns",
        )
    return {(column or f"column_{columns.index(column) + 1}"): column for column in table.metadata_columns}


def _reject_duplicate_ids(documents: list[Document], rel: str, table: TableInput) -> None:
    counts = Counter(document.doc_id.removeprefix(f"{rel}#") for document in documents)
    duplicates = sorted(row_id for row_id, count in counts.items() if count > 1)
    if duplicates:
        raise InputError(
            rel,
            f"duplicate ids in column '{table.id_column}': {', '.join(duplicates)}; ids must be unique "
            "(or set ingest.table.id_column to null to number the rows)",
        )


_READERS: dict[str, Callable[[bytes, str, str, IngestConfig], list[Document]]] = {
    "txt": _read_text,
    "md": _read_text,
    "docx": _read_docx,
    "vtt": _read_captions,
    "srt": _read_captions,
    "csv": _read_csv,
    "jsonl": _read_jsonl,
}


# ---------------------------------------------------------------------------------------------------------------
# The whole corpus


def ingest(
    files: Iterable[Path | InputFile], root: Path, cfg: IngestConfig
) -> tuple[list[Document], list[IngestProblem]]:
    """Read every file (paths, or entries of the input listing); a file that cannot be read, for whatever reason,
    is skipped and reported, or stops the run, as `cfg.on_error` says."""
    documents: list[Document] = []
    problems: list[IngestProblem] = []
    first_source: dict[str, str] = {}
    for item in files:
        entry = item if isinstance(item, InputFile) else InputFile(printable_name(_relative(item, root)), 0, 0)
        try:
            if entry.problem:
                raise InputError(entry.name, entry.problem)
            found = _read_checked(item if isinstance(item, Path) else root / entry.name, root, cfg, entry.name)
            _reject_duplicate_doc_ids(found, first_source)
        except InputError as exc:
            if cfg.on_error == "fail":
                raise InputError(
                    exc.source_file,
                    f"{exc.problem} (ingest.on_error is 'fail'; 'skip' lists such files in failures and goes on)",
                ) from None
            logger.error("skipped %s", exc)
            problems.append(IngestProblem(source_file=exc.source_file, problem=exc.problem))
            continue
        documents.extend(_aliased(document, cfg.speaker_aliases) for document in found)
        first_source.update(dict.fromkeys((document.doc_id for document in found), entry.name))
    # In the files' order, and within a file in its rows' order: never sorted as text (#1, #10, #100, #2).
    return documents, problems


def _aliased(document: Document, aliases: dict[str, str]) -> Document:
    """The document with each turn's speaker given the name `ingest.speaker_aliases` gives its label."""
    if not aliases or not any(_speaker(turn.speaker, aliases) != turn.speaker for turn in document.turns):
        return document
    turns = tuple(replace(turn, speaker=_speaker(turn.speaker, aliases)) for turn in document.turns)
    return replace(document, turns=turns)


def _read_checked(path: Path, root: Path, cfg: IngestConfig, name: str) -> list[Document]:
    """`read_document_file`, with every failure (a reader's bug, too deep a structure, no memory) turned into an
    InputError naming the file, and documents checked to be storable text."""
    try:
        documents = read_document_file(path, root, cfg)
    except InputError:
        raise
    except Exception as exc:
        logger.warning(
            "%s: unexpected %s while reading (traceback for a bug report)", name, type(exc).__name__, exc_info=True
        )
        raise InputError(name, f"could not be read ({type(exc).__name__}: {_short(str(exc))})") from None
    # Refused, not repaired (unlike a server's text, which records.encodable replaces): these are participants'
    # words and their ids, which no replaced character may silently alter; the file goes to failures, named.
    for document in documents:
        texts = (document.doc_id, document.text, *document.metadata, *document.metadata.values())
        if any(_SURROGATE.search(text) for text in texts):
            raise InputError(name, "holds text that is not valid Unicode (a lone surrogate such as \\ud800)")
    return documents


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def _reject_duplicate_doc_ids(documents: list[Document], first_source: dict[str, str]) -> None:
    """A file whose documents' ids another file already produced is unreadable (each input must be read once)."""
    for document in documents:
        if document.doc_id in first_source:
            raise InputError(
                document.source_file,
                f"document id '{document.doc_id}' is also produced by {first_source[document.doc_id]}; "
                "each input must be read once",
            )


def pilot_sample(documents: list[Document], n: int | None, seed: int) -> list[Document]:
    """The `n` documents of a pilot run, in document order: those whose hash of (seed, doc_id) is lowest. The
    choice depends only on the seed and the documents' ids (not on Python's random module or the order of reading),
    and a document added later displaces a sampled one only if its own hash is lower."""
    if n is None or n >= len(documents):
        return documents
    ranked = sorted(documents, key=lambda d: stable_hash({"seed": seed, "doc_id": d.doc_id}))
    chosen = {d.doc_id for d in ranked[:n]}
    return [d for d in documents if d.doc_id in chosen]


_REASONS_SHOWN = 5


def check_enough(
    documents: list[Document], problems: list[IngestProblem], n_files: int, max_skipped_share: float
) -> None:
    """Stop the run, with the reasons, when there is nothing to code or most of the inputs were skipped: a run
    whose tables are empty because of a misspelt column would otherwise look like a success."""
    skipped = len({p.source_file for p in problems})
    reasons = "; ".join(f"{p.source_file}: {p.problem}" for p in problems[:_REASONS_SHOWN])
    if len(problems) > _REASONS_SHOWN:
        reasons += f"; and {len(problems) - _REASONS_SHOWN} more (results/logs/ingest/ingest.log lists them all)"
    if not documents:
        why = f"{'the input file' if n_files == 1 else f'all {n_files} input files'} could not be read: {reasons}"
        raise NothingToCode(f"no documents to code: {why if skipped else 'the input files hold no text'}")
    if n_files and skipped / n_files > max_skipped_share:
        raise NothingToCode(
            f"{skipped} of {n_files} input files ({skipped / n_files:.0%}) could not be read, more than "
            f"ingest.max_skipped_share ({max_skipped_share:.0%}): {reasons}. Fix them, or raise "
            "ingest.max_skipped_share to code the others without them"
        )
