"""Small inputs shaped like what researchers export, built here (never copied from real archives).

- An oral-history archive exported one paragraph per row: interview, sequence and speaker columns, speaker labels
  written with a colon ("DB:"), a stage note without a speaker, HTML entities (`&#8212;`, `&amp;`), rows of one
  interview not in sequence order, and a per-paragraph tag column.
- A survey export saved by Excel on Windows: Windows-1252, a first column with an empty header (the row number
  pandas would call `Unnamed: 0`), the question asked in a column, curly quotes and accents, and more than ten rows
  so that text order (#1, #10, #11, #2) and file order differ.
"""

from __future__ import annotations

import csv
import io

# (interview, seq, speaker, words, tags): the rows of one export file, in the order the archive wrote them.
ORAL_HISTORY_ROWS = [
    ("oh-07", "1", "", "(Recording starts in the kitchen of the bakery; an oven timer rings.)", ""),
    ("oh-07", "2", "MR:", "Could you say your name and where we are?", ""),
    ("oh-07", "3", "AK:", "Amira Khalil. We&#8217;re in the back of the bakery on Dock Street.", "place"),
    ("oh-07", "5", "AK:", "Flour ran out in the second week &#8212; nobody had any.", "supply;shortage"),
    ("oh-07", "4", "MR:", "What happened when the lockdown began?", ""),
    ("oh-07", "6", "MR:", "And your staff?", ""),
    ("oh-07", "7", "AK:", "Two of them got sick. I baked alone at night, Tom &amp; I took turns sleeping.", "staff"),
    ("oh-12", "1", "MR:", "Thank you for meeting me at the depot.", ""),
    ("oh-12", "2", "JS:", "Happy to. I drove the 14 bus the whole of 2020.", "transport"),
    ("oh-12", "3", "JS:", "We had a plastic screen &lt;taped&gt; to the door, that was it.", "ppe"),
    ("oh-12", "4", "MR:", "Were you afraid?", ""),
    ("oh-12", "5", "JS:", "Every single shift.", "fear"),
]
ORAL_HISTORY_ALIASES = {"MR": "Maya Reyes", "AK": "Amira Khalil", "JS": "Jon Sato"}


def oral_history_csv(rows=ORAL_HISTORY_ROWS) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["interview", "seq", "speaker", "words", "tags"])
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def oral_history_as_txt(interview: str, aliases: dict[str, str] | None = None) -> str:
    """The same interview written by hand as a .txt transcript: what the table must become."""
    import html

    rows = sorted((r for r in ORAL_HISTORY_ROWS if r[0] == interview), key=lambda r: int(r[1]))
    paragraphs, previous = [], None
    for _, _, speaker, words, _ in rows:
        label = speaker.rstrip(":")
        label = (aliases or {}).get(label, label)
        text = html.unescape(words)
        paragraphs.append(f"{label}: {text}" if label and label != previous else text)
        previous = label or previous
    return "\n\n".join(paragraphs)


SURVEY_QUESTION = "What was the hardest part of working during the pandemic?"
SURVEY_ANSWERS = [
    "The masks. We reused one for a week.",
    "Nobody thanked us \u2014 the café closed and we kept cleaning.",
    "",  # a respondent who left it blank
    "Night shifts alone on the ward.",
    "My daughter stayed with her grandmother for months.",
    "The bus stopped running, so I cycled 12 km.",
    "\u201cEssential\u201d meant nothing when the pay didn\u2019t change.",
    "Fear of bringing it home.",
    "We covered for each other; that kept us going.",
    "Customers shouting about the rules.",
    "Losing three residents in one week.",
    "Being told to come in while sick.",
]


def survey_cp1252_csv(answers=SURVEY_ANSWERS) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_NONNUMERIC)
    writer.writerow(["", "respondent", "site", "question", "answer"])
    for i, answer in enumerate(answers, start=1):
        writer.writerow([str(i), f"P{i:02d}", "north" if i % 2 else "south", SURVEY_QUESTION, answer])
    return out.getvalue().encode("cp1252")
