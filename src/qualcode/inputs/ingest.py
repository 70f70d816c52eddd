"""Reading input files into normalised documents.

Every format ends up as the same `Document`: normalised text, where it came from, how it was decoded, and the
speaker turns found in it. Files that cannot be read raise `InputError`; `ingest` decides whether that skips the
file or stops the run.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import IngestConfig
from ..errors import InputError, NothingToCode
from ..ids import stable_hash
from ..records import Document, IngestProblem
from . import readers
from .text import MB, SURROGATE, short, speaker, too_big

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
# Reading one file


def read_document_file(path: Path, root: Path, cfg: IngestConfig) -> list[Document]:
    """Read one file into documents (one per file, or one per row for tables)."""
    rel = _relative(path, root)
    name = printable_name(rel)
    if name != rel:
        raise InputError(name, _NOT_UTF8_NAME)
    if path.is_symlink() and not path.exists():
        raise InputError(rel, f"broken symbolic link to {printable_name(os.readlink(path))}")
    fmt = path.suffix.lower().removeprefix(".")
    reader = readers.READERS.get(fmt)
    if reader is None:
        supported = ", ".join(f".{name}" for name in readers.READERS)
        raise InputError(rel, f"unsupported file type '{path.suffix}'; supported: {supported}")
    data = _read_bytes(path, rel, cfg.max_file_mb)
    if not data.strip():
        raise InputError(rel, "empty file")
    return reader(data, rel, fmt, cfg)


def _read_bytes(path: Path, rel: str, max_mb: int) -> bytes:
    """The file's bytes, refusing to read more than `max_mb` (the file may grow while it is read)."""
    cap = max_mb * MB
    try:
        size = path.stat().st_size
        if size > cap:
            raise InputError(rel, too_big("too large", size, "ingest.max_file_mb", max_mb))
        with path.open("rb") as fh:
            data = fh.read(cap + 1)
    except OSError as exc:
        raise InputError(rel, f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > cap:
        raise InputError(rel, too_big("too large (it grew while being read)", None, "ingest.max_file_mb", max_mb))
    return data


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()


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
    if not aliases or not any(speaker(turn.speaker, aliases) != turn.speaker for turn in document.turns):
        return document
    turns = tuple(replace(turn, speaker=speaker(turn.speaker, aliases)) for turn in document.turns)
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
        raise InputError(name, f"could not be read ({type(exc).__name__}: {short(str(exc))})") from None
    # Refused, not repaired (unlike a server's text, which records.encodable replaces): these are participants'
    # words and their ids, which no replaced character may silently alter; the file goes to failures, named.
    for document in documents:
        texts = (document.doc_id, document.text, *document.metadata, *document.metadata.values())
        if any(SURROGATE.search(text) for text in texts):
            raise InputError(name, "holds text that is not valid Unicode (a lone surrogate such as \\ud800)")
    return documents


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
