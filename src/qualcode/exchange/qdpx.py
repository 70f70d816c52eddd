"""REFI-QDA exchange: the model's codes as a project NVivo, ATLAS.ti, MAXQDA and QualCoder open, and coded
projects back from them as human codings.

REFI-QDA 1.5 (www.qdasoftware.org) defines a project (`.qdpx`: a zip holding `project.qde`, XML in the namespace
`urn:QDA-XML:project:1.0`, and the source files under `sources/`) and a codebook (`.qdc`). Both are validated
against the standard's XML Schemas, shipped in `schemas/refi-qda/`.

How qualcode's tables map onto the standard:

- each choice or boolean field is a code that is not codable (a folder), holding one code per value, named
  `field: value` so that a name is unique across the codebook (`grief` is a value of two example fields, and
  QualCoder, qc and Taguette keep one namespace of code names);
- each document is a TextSource whose plain-text file is the document's normalised text;
- each grounded quote is a PlainTextSelection at the quote's offsets, coded with the values it supports; a code
  whose quote was not found (or not asked) becomes, if `ungrounded: chunk`, a selection spanning its chunk;
- the model is a User named `qualcode: MODEL`, the creating user of every coding;
- CSV and JSONL metadata columns are Text variables.

REFI-QDA counts text positions in Unicode code points from 0 (the standard's section on text selections), as
Python's `str` does, so offsets carry over unchanged; the end position is exclusive, as in the tables.

GUIDs are uuid5 of what they identify, and the zip has fixed timestamps, so identical inputs give identical bytes.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import logging
import re
import uuid
import zipfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from lxml import etree

from ..errors import QualcodeError
from ..inputs.codebook import Codebook, CodeField
from ..outputs import tables

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)
PROJECT_NS = "urn:QDA-XML:project:1.0"
CODEBOOK_NS = "urn:QDA-XML:codebook:1.0"
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas" / "refi-qda"
PROJECT_XSD = "Project-mrt2019.xsd"
CODEBOOK_XSD = "Codebook.xsd"
# Any fixed namespace: GUIDs are uuid5(NAMESPACE, what they identify).
NAMESPACE = uuid.UUID("6f0c1d2e-5a7b-4c3d-9e8f-1a2b3c4d5e6f")
_NAMESPACE_BYTES = NAMESPACE.bytes
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: no run's clock in the bytes
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
CODED_TYPES = ("single_choice", "multiple_choice", "boolean")
GOLD_COLUMNS = ["coder", "doc_id", "field", "value", "start", "end", "quote"]
NAME_MAX = 80  # characters of a quote used as its selection's name


class QdpxError(QualcodeError):
    """A REFI-QDA file cannot be read: not a zip, no project.qde, XML failing the schema, a selection outside
    its source."""


# Characters XML 1.0 cannot hold (most C0 controls, lone surrogates, U+FFFE/U+FFFF); a document or an answer may.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: object) -> str:
    """`text` as XML can hold it: each character XML 1.0 forbids replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", str(text))


def guid(*parts: object) -> str:
    """uuid5(NAMESPACE, the parts joined), upper case, as RFC 4122 computes it; without uuid.UUID objects, which
    cost most of the export's time at 100,000 documents (several GUIDs per coding)."""
    h = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(map(str, parts)).encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # the RFC 4122 variant
    x = h.hex().upper()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def code_name(field_name: str, value: str) -> str:
    return f"{field_name}: {value}"


MODEL_USER = "qualcode: "  # the start of the name of the user whose codings are a model's


def user_name(model: str) -> str:
    return f"{MODEL_USER}{model}"


def field_values(f: CodeField) -> list[tuple[str, str]]:
    """A coded field's values and their descriptions."""
    if f.type == "boolean":
        return [("true", f"{f.description} Yes."), ("false", f"{f.description} No.")]
    return [(v.name, v.definition + (f" Examples: {'; '.join(v.examples)}" if v.examples else "")) for v in f.values]


def coded_fields(codebook: Codebook) -> list[CodeField]:
    """The fields that become codes: choice and boolean fields (a text answer is not a code)."""
    return [f for f in codebook.fields if f.type in CODED_TYPES]


# -- export --------------------------------------------------------------------------------------------------------


def _codes_xml(parent: etree._Element, codebook: Codebook, ns: str) -> None:
    codes = etree.SubElement(parent, f"{{{ns}}}Codes")
    if not coded_fields(codebook):
        # The schemas want at least one code; a codebook of text fields alone has none, so it is named as a folder.
        name = xml_text(codebook.name)
        empty = etree.SubElement(codes, f"{{{ns}}}Code", guid=guid("codebook", name), name=name, isCodable="false")
        etree.SubElement(empty, f"{{{ns}}}Description").text = "This codebook has no choice or boolean fields."
    for i, f in enumerate(coded_fields(codebook)):
        colour = PALETTE[i % len(PALETTE)]
        folder = etree.SubElement(
            codes, f"{{{ns}}}Code", guid=guid("field", f.name), name=f.name, isCodable="false", color=colour
        )
        etree.SubElement(folder, f"{{{ns}}}Description").text = xml_text(f"{f.label or f.name}: {f.description}")
        for value, description in field_values(f):
            code = etree.SubElement(
                folder, f"{{{ns}}}Code", guid=code_guid(f.name, value), name=code_name(f.name, value),
                isCodable="true", color=colour,
            )  # fmt: skip
            etree.SubElement(code, f"{{{ns}}}Description").text = xml_text(description)


def code_guid(field_name: str, value: str) -> str:
    return guid("code", field_name, value)


def _serialise(root: etree._Element) -> bytes:
    # The declaration written by hand: lxml's uses single quotes, which some readers of REFI-QDA files reject.
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="utf-8", pretty_print=True)


def codebook_qdc(codebook: Codebook, origin: str) -> bytes:
    """The codebook as a REFI-QDA codebook (.qdc)."""
    root = etree.Element(f"{{{CODEBOOK_NS}}}CodeBook", nsmap={None: CODEBOOK_NS}, origin=origin)
    _codes_xml(root, codebook, CODEBOOK_NS)
    return _serialise(root)


@dataclass(frozen=True)
class _Span:
    doc_id: str
    start: int
    end: int
    name: str
    description: str | None = None


def _selections(
    documents: pd.DataFrame, chunks: pd.DataFrame, codes: pd.DataFrame, ungrounded: str
) -> dict[str, dict[tuple[int, int, str | None], tuple[_Span, list[tuple[str, str]]]]]:
    """Per document, the spans to code, by whom (the `user` column when `codes` has one, else None: the model) and
    the (field, value) pairs coded on each."""
    text = dict(zip(documents.doc_id, documents.text, strict=True))
    span_of_chunk = {c.chunk_id: (c.chunk_index, c.start, c.end) for c in chunks.itertuples()}
    out: dict[str, dict[tuple[int, int, str | None], tuple[_Span, list[tuple[str, str]]]]] = defaultdict(dict)
    users = codes["user"].tolist() if "user" in codes.columns else [None] * len(codes)
    unfound: dict[tuple[str, int, int], list[str]] = defaultdict(list)
    for c, user in zip(codes.itertuples(), users, strict=True):
        if c.grounded:
            start, end = int(c.quote_start), int(c.quote_end)
            span = _Span(c.doc_id, start, end, _short(text[c.doc_id][start:end]))
        elif ungrounded == "chunk":
            index, start, end = span_of_chunk[c.chunk_id]
            span = _Span(c.doc_id, start, end, f"chunk {index} of {c.doc_id}")
            if c.grounding == "ungrounded" and c.quote:
                unfound[(c.doc_id, start, end)].append(f"{c.field}: {c.quote!r}")
        else:
            continue
        _, pairs = out[c.doc_id].setdefault((start, end, user), (span, []))
        if (c.field, c.value) not in pairs:
            pairs.append((c.field, c.value))
    for (doc_id, start, end), quotes in unfound.items():
        span, pairs = out[doc_id][(start, end, None)]
        note = "qualcode: the model's quote was not found in this chunk: " + "; ".join(dict.fromkeys(quotes))
        out[doc_id][(start, end, None)] = (_Span(doc_id, start, end, span.name, note), pairs)
    return out


def _short(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= NAME_MAX else one_line[: NAME_MAX - 1] + "…"


def source_path(doc_id: str) -> str:
    """Where a document's text is inside the .qdpx (and `internal://` + this in plainTextPath)."""
    return f"{guid('source', doc_id)}.txt"


_SOURCES_MARK = "qualcode: the sources go here"


def _project_parts(
    codebook: Codebook,
    documents: pd.DataFrame,
    chunks: pd.DataFrame,
    codes: pd.DataFrame,
    model: str,
    origin: str,
    ungrounded: str,
    counts: dict[str, int],
) -> Iterator[bytes]:
    """project.qde's bytes, a source at a time: the XML of a project with 100,000 documents is far bigger than the
    documents, so no tree of it is ever whole in memory. The bytes are those of the whole tree pretty-printed.
    `counts` receives the numbers of sources, selections and codings written."""
    ns = PROJECT_NS
    root = etree.Element(f"{{{ns}}}Project", nsmap={None: ns}, name=xml_text(codebook.name), origin=origin)
    user = guid("user", user_name(model))
    root.set("creatingUserGUID", user)
    users = etree.SubElement(root, f"{{{ns}}}Users")
    etree.SubElement(users, f"{{{ns}}}User", guid=user, name=xml_text(user_name(model)))
    others = sorted(set(codes["user"].dropna())) if "user" in codes.columns else []
    for name in others:  # each further source (a human coder, an arm) as its own user
        etree.SubElement(users, f"{{{ns}}}User", guid=guid("user", name), name=xml_text(name))
    _codes_xml(etree.SubElement(root, f"{{{ns}}}CodeBook"), codebook, ns)
    meta = sorted(c for c in documents.columns if c.startswith("meta_"))
    if meta:
        variables = etree.SubElement(root, f"{{{ns}}}Variables")
        for col in meta:
            etree.SubElement(variables, f"{{{ns}}}Variable", guid=guid("variable", col[5:]), name=xml_text(col[5:]),
                             typeOfVariable="Text")  # fmt: skip
    # The schema wants at least one source in Sources: with no document read, there is no Sources element.
    if len(documents):
        etree.SubElement(root, f"{{{ns}}}Sources").append(etree.Comment(_SOURCES_MARK))
    if codebook.description:
        etree.SubElement(root, f"{{{ns}}}Description").text = xml_text(
            f"{codebook.description} (codebook {codebook.version})"
        )
    head, _, tail = _serialise(root).partition(f"    <!--{_SOURCES_MARK}-->\n".encode())
    yield head
    coded = {f.name for f in coded_fields(codebook)}
    selections = _selections(documents, chunks, codes[codes.field.isin(coded)], ungrounded)
    counts.update(sources=len(documents), selections=0, codings=0)
    # Each source is built on its own, without the namespace (the default namespace of the root it is written
    # under), indented as it would be at its depth in the whole tree.
    # Rows as records, not itertuples: a metadata header such as `age group` or `Q3 (open)` is no attribute name.
    for d in documents.sort_values("doc_id")[["doc_id", "source_file", "format", *meta]].to_dict("records"):
        doc_id = d["doc_id"]
        src = etree.Element("TextSource", guid=guid("source", doc_id), name=xml_text(doc_id),
                            plainTextPath=f"internal://{source_path(doc_id)}")  # fmt: skip
        etree.SubElement(src, "Description").text = xml_text(f"{d['source_file']} ({d['format']})")
        for (start, end, by), (span, pairs) in sorted(selections.pop(doc_id, {}).items(),
                                                      key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):  # fmt: skip
            sel_guid = (
                guid("selection", doc_id, start, end) if by is None else guid("selection", doc_id, start, end, by)
            )
            who = user if by is None else guid("user", by)
            sel = etree.SubElement(src, "PlainTextSelection", guid=sel_guid, name=xml_text(span.name),
                                   startPosition=str(start), endPosition=str(end), creatingUser=who)  # fmt: skip
            counts["selections"] += 1
            if span.description:
                etree.SubElement(sel, "Description").text = xml_text(span.description)
            for fname, value in pairs:
                target = code_guid(fname, value)
                coding = etree.SubElement(sel, "Coding", guid=guid("coding", sel_guid, target, who), creatingUser=who)
                etree.SubElement(coding, "CodeRef", targetGUID=target)
                counts["codings"] += 1
        for col in meta:
            value = d[col]
            if value is None or value != value:  # None or NaN: the document has no such metadata
                continue
            vv = etree.SubElement(src, "VariableValue")
            etree.SubElement(vv, "VariableRef", targetGUID=guid("variable", col[5:]))
            etree.SubElement(vv, "TextValue").text = xml_text(value)
        etree.indent(src, space="  ", level=2)
        yield b"    " + etree.tostring(src, encoding="utf-8", with_tail=False) + b"\n"
    yield tail


def _zip_info(name: str) -> zipfile.ZipInfo:
    """A member whose bytes depend only on its content: fixed time and permissions."""
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info._compresslevel = 6  # what writestr(compresslevel=6) sets; zipfile.open has no argument for it
    return info


def write_project(
    out: BinaryIO,
    codebook: Codebook,
    documents: pd.DataFrame,
    chunks: pd.DataFrame,
    codes: pd.DataFrame,
    model: str,
    origin: str,
    ungrounded: str = "chunk",
) -> dict[str, int]:
    """Write the whole .qdpx to `out` (a binary file open for writing and reading): project.qde, streamed into
    the zip and then checked against the schema as it is read back, and each document's normalised text as UTF-8
    under sources/. Returns the numbers of sources, selections and codings."""
    counts: dict[str, int] = {}
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(_zip_info("project.qde"), "w") as member:
            for part in _project_parts(codebook, documents, chunks, codes, model, origin, ungrounded, counts):
                member.write(part)
        with zf.open("project.qde") as member:
            check_stream(member, "project.qde as written")
        paths = sorted((source_path(doc_id), i) for i, doc_id in enumerate(documents.doc_id))
        texts = documents.text
        for path, i in paths:
            zf.writestr(_zip_info(f"sources/{path}"), texts.iat[i].encode("utf-8"))
    return counts


def project_qdpx(*args: Any, **kwargs: Any) -> bytes:
    """The whole .qdpx as bytes: `write_project`'s arguments, without `out`."""
    buf = io.BytesIO()
    write_project(buf, *args, **kwargs)
    return buf.getvalue()


def write_exports(
    *,
    codebook: Codebook,
    documents: str | Path,
    chunks: str | Path,
    codes: str | Path,
    model: str,
    version: str,
    qdpx_out: str | Path,
    qdc_out: str | Path,
    ungrounded: str = "chunk",
) -> dict[str, int]:
    """Write the project and the codebook from the published tables, each checked against its schema first."""
    docs = tables.read(documents, "documents").to_pandas()
    chunk_table = tables.read(chunks, "chunks", ["chunk_id", "chunk_index", "start", "end"]).to_pandas()
    code_table = tables.read(codes, "codes").to_pandas()
    origin = f"qualcode {version}"
    qdc = codebook_qdc(codebook, origin)
    check_xml(qdc, f"{qdc_out} as written", CODEBOOK_XSD)
    Path(qdpx_out).parent.mkdir(parents=True, exist_ok=True)
    with open(qdpx_out, "w+b") as fh:  # read back for the check
        counts = write_project(fh, codebook, docs, chunk_table, code_table, model, origin, ungrounded)
    Path(qdc_out).write_bytes(qdc)
    return counts


# -- validation ----------------------------------------------------------------------------------------------------


def _schema(name: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / name)))


def check_xml(data: bytes, what: str, xsd: str = PROJECT_XSD) -> etree._Element:
    """Parse and validate against the standard's schema, or QdpxError naming `what` and the first problems."""
    try:
        root = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True))
    except etree.XMLSyntaxError as exc:
        raise QdpxError(f"{what}: not well-formed XML: {exc}") from None
    schema = _schema(xsd)
    if not schema.validate(root):
        errors = "; ".join(f"line {e.line}: {e.message}" for e in list(schema.error_log)[:3])
        raise QdpxError(f"{what}: does not match the REFI-QDA schema ({xsd}): {errors}")
    return root


def check_stream(source: BinaryIO, what: str, xsd: str = PROJECT_XSD) -> None:
    """`check_xml` for XML too big to hold as a tree: validated while it is parsed, each source dropped once
    read, so memory stays that of one source."""
    tag = f"{{{PROJECT_NS}}}TextSource"
    try:
        for _, el in etree.iterparse(source, events=("end",), schema=_schema(xsd), huge_tree=True,
                                     resolve_entities=False, no_network=True):  # fmt: skip
            if el.tag == tag:
                el.clear(keep_tail=True)
                while el.getprevious() is not None:
                    del el.getparent()[0]
    except etree.XMLSyntaxError as exc:
        problem = f"does not match the REFI-QDA schema ({xsd}) or is not well-formed XML"
        raise QdpxError(f"{what}: {problem}: {exc}") from None


# -- import --------------------------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import could not use, for the user to see: nothing is dropped silently."""

    unmapped_codes: dict[str, int] = field(default_factory=dict)  # code name (path) -> codings skipped
    mismatched_sources: list[str] = field(default_factory=list)  # sources whose text is no qualcode document's
    unmatched_sources: list[str] = field(default_factory=list)  # sources with no document of that name or text
    codings: int = 0

    def lines(self) -> list[str]:
        out = []
        if self.unmapped_codes:
            listed = ", ".join(f"{name!r} ({n})" for name, n in sorted(self.unmapped_codes.items()))
            out.append(f"codes not in the codebook, their codings skipped: {listed}")
        if self.mismatched_sources:
            out.append("sources whose text differs from qualcode's normalised text of the document of that name, "
                       f"their codings skipped: {', '.join(self.mismatched_sources)}")  # fmt: skip
        if self.unmatched_sources:
            out.append(f"sources matching no document by name or text, skipped: {', '.join(self.unmatched_sources)}")
        return out


def _local(tag: object) -> str:
    return str(tag).rsplit("}", 1)[-1]


def _children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if _local(c.tag) == name]


def value_lookup(codebook: Codebook) -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str], tuple[str, str]]]:
    """Code names that map to (field, value): `field: value`, and a bare value unique across the codebook; and
    (parent, child) names: a value code under its field's code."""
    by_name: dict[str, tuple[str, str]] = {}
    bare: dict[str, list[tuple[str, str]]] = defaultdict(list)
    by_path: dict[tuple[str, str], tuple[str, str]] = {}
    for f in coded_fields(codebook):
        for value, _ in field_values(f):
            by_name[code_name(f.name, value)] = (f.name, value)
            by_path[(f.name, value)] = (f.name, value)
            by_path[(f.label or f.name, value)] = (f.name, value)
            bare[value].append((f.name, value))
    for value, pairs in bare.items():
        if len(pairs) == 1 and value not in ("true", "false"):
            by_name.setdefault(value, pairs[0])
    return by_name, by_path


def _by_form(name: str, parent: str | None) -> tuple[str, str] | None:
    """Without a codebook: `field: value`, or a value code under its field's code."""
    if ": " in name:
        field_name, value = name.split(": ", 1)
        return (field_name.strip(), value.strip()) if field_name.strip() and value.strip() else None
    return (parent, name) if parent and name else None


def _code_map(
    root: etree._Element, codebook: Codebook | None
) -> tuple[dict[str, tuple[str, str] | None], dict[str, str]]:
    """Each code GUID of the project: its (field, value), or None; and its path for messages."""
    by_name, by_path = value_lookup(codebook) if codebook is not None else ({}, {})
    mapping: dict[str, tuple[str, str] | None] = {}
    paths: dict[str, str] = {}

    def walk(code: etree._Element, parent: str | None) -> None:
        name = code.get("name", "")
        key = code.get("guid", "").strip("{}").upper()
        paths[key] = f"{parent}/{name}" if parent else name
        if codebook is None:
            mapping[key] = _by_form(name.strip(), parent)
        else:
            mapping[key] = by_name.get(name.strip()) or (by_path.get((parent, name.strip())) if parent else None)
        for child in _children(code, "Code"):
            walk(child, name.strip())

    for book in _children(root, "CodeBook"):
        for codes in _children(book, "Codes"):
            for code in _children(codes, "Code"):
                walk(code, None)
    return mapping, paths


def _source_text(src: etree._Element, zf: zipfile.ZipFile, names: Mapping[str, str], path: str) -> str | None:
    """The text of a source: inline, or the member its plainTextPath names (`names`: members by lower case, as
    programs differ on `sources/` and `Sources/`)."""
    content = _children(src, "PlainTextContent")
    if content:
        return content[0].text or ""
    ref = src.get("plainTextPath")
    if not ref:
        return None
    inner = ref.removeprefix("internal://")
    member = names.get(f"sources/{inner}".lower()) or names.get(inner.lower())
    if member is None:
        raise QdpxError(f"{path}: source {src.get('name')!r} names {ref}, which is not in the file")
    return zf.read(member).decode("utf-8-sig")


class _Positions:
    """Positions in a source's text mapped to qualcode's: unchanged, or, where a program wrote CRLF, moved back by
    the CRs before them (a program on Windows may write and count them)."""

    def __init__(self, raw: str):
        self.text = raw.replace("\r\n", "\n")
        self._crs = [m.start() for m in re.finditer("\r\n", raw)]

    def __getitem__(self, position: int) -> int:
        return position - bisect.bisect_left(self._crs, position) if self._crs else position


def read_codings(
    path: str | Path, codebook: Codebook | None = None, documents: Mapping[str, str] | None = None
) -> tuple[pd.DataFrame, ImportReport]:
    """The coded text selections of a .qdpx as human codings: one row per selection and code, with columns
    coder, doc_id, field, value, start, end, quote (offsets into qualcode's normalised text; null for a coding of
    a whole source). `documents` maps doc_id to that text. A source is matched to a document by name, else by
    text; codes are mapped by name (`field: value`, a value under its field, or a value unique to one field).

    Without `codebook`, codes are mapped by form alone (`field: value`, or a code under its field's code); without
    `documents`, a source's name is its doc_id and offsets are into its own text (with CRLF read as LF), for a
    later check against the documents."""
    import pandas as pd

    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise QdpxError(f"{path}: not a REFI-QDA project (.qdpx): it is not a zip file")
    report = ImportReport()
    rows: list[dict[str, Any]] = []
    by_text = {t: d for d, t in documents.items()} if documents is not None else {}
    with zipfile.ZipFile(path) as zf:
        qde = [n for n in zf.namelist() if n.lower().endswith(".qde") and "/" not in n]
        if not qde:
            raise QdpxError(f"{path}: no project.qde inside; is it a REFI-QDA project?")
        root = check_xml(zf.read(qde[0]), f"{path}: {qde[0]}")
        members = {n.lower(): n for n in zf.namelist()}
        codes, paths = _code_map(root, codebook)
        users = {u.get("guid", "").strip("{}").upper(): u.get("name") or u.get("id") or u.get("guid")
                 for us in _children(root, "Users") for u in _children(us, "User")}  # fmt: skip

        def coder(*els: etree._Element) -> str:
            for el in els:
                key = (el.get("creatingUser") or "").strip("{}").upper()
                if key:
                    return str(users.get(key, key))
            return "unknown"

        for sources in _children(root, "Sources"):
            for src in _children(sources, "TextSource"):
                name = src.get("name") or src.get("guid", "")
                raw = _source_text(src, zf, members, str(path))
                if raw is None:
                    report.unmatched_sources.append(name)
                    continue
                where = _Positions(raw)
                text = where.text
                known = documents is None or name in documents
                doc_id = name if known else by_text.get(text)
                if doc_id is None:
                    report.unmatched_sources.append(name)
                    continue
                if documents is not None and documents[doc_id] != text:
                    report.mismatched_sources.append(name)
                    continue
                found = [(sel, sel) for sel in _children(src, "PlainTextSelection")] + [(None, src)]
                for sel, holder in found:
                    span: tuple[int | None, int | None] = (None, None)
                    if sel is not None:
                        start, end = int(sel.get("startPosition")), int(sel.get("endPosition"))
                        if not 0 <= start <= end <= len(raw):
                            raise QdpxError(
                                f"{path}: selection {sel.get('guid')} of source {name!r} spans {start} to {end}, "
                                f"outside its text of {len(raw)} characters"
                            )
                        span = (where[start], where[end])
                    for coding in _children(holder, "Coding"):
                        for ref in _children(coding, "CodeRef"):
                            target = ref.get("targetGUID", "").strip("{}").upper()
                            mapped = codes.get(target)
                            if mapped is None:
                                label = paths.get(target, target)
                                report.unmapped_codes[label] = report.unmapped_codes.get(label, 0) + 1
                                continue
                            s, e = span
                            rows.append({
                                "coder": coder(coding, *([sel] if sel is not None else [])),
                                "doc_id": doc_id, "field": mapped[0], "value": mapped[1], "start": s, "end": e,
                                "quote": text[s:e] if s is not None else None,
                            })  # fmt: skip
    report.codings = len(rows)
    df = pd.DataFrame(rows, columns=GOLD_COLUMNS)
    df["start"] = df["start"].astype("Int64")
    df["end"] = df["end"].astype("Int64")
    return df.sort_values(["doc_id", "start", "end", "field", "value", "coder"], na_position="first").reset_index(
        drop=True
    ), report


def read_gold(
    path: str | Path, codebook: Codebook | None = None, documents: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """A .qdpx as the validation stage reads human codings (`gold.READERS[".qdpx"]`): rows indexed from 1, without
    the codings of qualcode's model users (`qualcode: MODEL`); what was left out or could not be used (those
    codings, codes not in the codebook, sources whose text differs) is in `df.attrs["problems"]`, each naming the
    file, for the validation stage to list."""
    df, report = read_codings(path, codebook, documents)
    df.index = df.index + 1
    problems = [f"{path}: {line}" for line in report.lines()]
    # A project qualcode exported and a reviewer then coded holds the model's own codings too: counted as a human
    # coder's, they would join the majority the model is scored against.
    model = df["coder"].str.startswith(MODEL_USER)
    if model.any():
        users = ", ".join(map(repr, sorted(set(df.coder[model]))))
        problems.append(f"{path}: {int(model.sum())} codings by {users} left out: that user is the model "
                        "(qualcode's export), not a human coder")  # fmt: skip
        df = df[~model]
    df.attrs["problems"] = problems
    for line in df.attrs["problems"]:
        logger.warning("%s", line)
    return df


def read_codebook_names(data: bytes, what: str) -> list[str]:
    """The code names of a .qdc (checked against the codebook schema), depth first."""
    root = check_xml(data, what, CODEBOOK_XSD)
    return [c.get("name", "") for c in root.iter(f"{{{CODEBOOK_NS}}}Code")]
