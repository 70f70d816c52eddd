"""The report's HTML pages: one style, a page around a body, and the Markdown subset methods.md uses.

Kept apart from the figures (report.py): the job that writes the methods paragraph makes its page too, without
loading matplotlib or pandas.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

CSS = (
    "body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;max-width:75em}"
    "table{border-collapse:collapse;margin:1em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}"
    "pre{white-space:pre-wrap;background:#f6f6f6;padding:.75em}"
)


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def write(path: str | Path, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def markdown_html(text: str) -> str:
    """The Markdown that methods.md uses (headings, paragraphs, pipe tables, fenced code, `code`) as HTML.

    Not a general Markdown parser: it keeps the report free of one more dependency for one known file."""
    out: list[str] = []
    para: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if table:
            head, *body = table
            out.append("<table>\n<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body)
            out.append("</table>")
            table.clear()

    lines = iter(text.splitlines())
    for line in lines:
        heading = re.match(r"(#{1,6}) (.*)", line)
        if line.startswith("```"):
            flush()
            code = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                code.append(inner)
            out.append(f"<pre>{html.escape(chr(10).join(code))}</pre>")
        elif heading:
            flush()
            n = len(heading.group(1))
            out.append(f"<h{n}>{_inline(heading.group(2))}</h{n}>")
        elif line.startswith("|"):
            if para:
                flush()
            if not re.fullmatch(r"\|[\s:|-]+\|", line):  # the |---|---| rule under the header
                table.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif not line.strip():
            flush()
        else:
            para.append(line)
    flush()
    return "\n".join(out)


def methods_html(markdown: str, path: str | Path) -> None:
    """The methods paragraph (methods.md) as the report's Methods page."""
    write(path, page("Methods", markdown_html(markdown)))
