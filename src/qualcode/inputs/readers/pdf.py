"""PDF (.pdf): the text layer, one document per page that has text, its page number as metadata.

A page is a document (`interview.pdf#p3`, metadata `page: "3"`), so every quote's location names its page. A PDF
with no text on any page is a scan (images of text): it is refused with what to do, never read as an empty
document.
"""

from __future__ import annotations

import io

from ...config import IngestConfig
from ...errors import InputError
from ...records import Document
from ..text import detect_turns, normalise


def read_pdf(data: bytes, rel: str, fmt: str, cfg: IngestConfig) -> list[Document]:
    import pypdf  # deferred: only .pdf inputs need it

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InputError(rel, "encrypted PDF with a password; save a copy without one and code that")
        pages = [page.extract_text() or "" for page in reader.pages]
    except InputError:
        raise
    except Exception as exc:  # pypdf raises PdfReadError, ValueError, KeyError... for broken files
        raise InputError(rel, f"not a valid .pdf ({type(exc).__name__}: {exc})") from None
    documents = []
    for number, page in enumerate(pages, start=1):
        text = normalise(page)
        if text:
            documents.append(
                Document(
                    doc_id=f"{rel}#p{number}",
                    source_file=rel,
                    format=fmt,
                    encoding="pdf",
                    text=text,
                    turns=detect_turns(text),
                    metadata={"page": str(number)},
                )
            )
    if not documents:
        raise InputError(
            rel,
            f"no text layer on any of its {len(pages)} pages (a scanned PDF holds images of text): run OCR on it "
            "(e.g. ocrmypdf) and code the result, or save its text as .txt",
        )
    return documents
