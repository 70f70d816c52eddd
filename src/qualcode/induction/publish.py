"""Writing a proposal: the codebook YAML (checked against the codebook's schema and model before it is written), the
candidates and saturation tables through the table registry, proposed_codes.csv for spreadsheets, the saturation
figure, the review page, the REFI-QDA codebook (checked against its XML Schema) and the replay archive of the
requests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import matplotlib
import pyarrow as pa
import yaml
from matplotlib.figure import Figure

from ..coding import archive
from ..exchange import qdpx
from ..inputs import codebook as codebook_mod
from ..outputs import tables
from .proposal import YAML_HEADER, candidates_table, codes_frame, review_page

if TYPE_CHECKING:
    from .run import Proposal

CODEBOOK_SCHEMA = Path(__file__).resolve().parents[3] / "schemas" / "codebook.schema.json"


def codebook_yaml(book: Mapping[str, Any]) -> str:
    """The codebook's YAML, after checking it as the workflow will read it (the published schema, then the model)."""
    jsonschema.validate(book, json.loads(CODEBOOK_SCHEMA.read_text(encoding="utf-8")))
    codebook_mod.parse(dict(book), "the proposed codebook")
    return YAML_HEADER + yaml.safe_dump(dict(book), sort_keys=False, allow_unicode=True, width=110)


def saturation_figure(table: Any, path: str | Path) -> None:
    with matplotlib.rc_context({"font.size": 9}):
        fig = Figure(figsize=(5, 3), layout="constrained")
        ax = fig.add_subplot()
        if len(table):
            ax.plot(table["chunks"], table["codes"], marker="o", color="#1f77b4", label="codes so far")
            ax.bar(table["chunks"], table["new_codes"], width=0.6, color="#ff7f0e", label="new in this batch")
            ax.legend(frameon=False)
        ax.set_xlabel("chunks read, in the sample's order")
        ax.set_ylabel("code groups")
        ax.set_title("Saturation of the proposed codes")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, metadata={"Software": None})


def write(
    p: Proposal, out: Mapping[str, str | Path], documents: Mapping[str, str], origin: str, meta: dict[str, str]
) -> None:
    """Every output of `propose`; `out` names the files (codebook, candidates, csv, saturation, figure, page, qdc,
    methods, archive)."""
    text = codebook_yaml(p.codebook)
    book = codebook_mod.parse(yaml.safe_load(text), str(out["codebook"]))
    qdc = qdpx.codebook_qdc(book, origin)
    qdpx.check_xml(qdc, f"{out['qdc']} as written", qdpx.CODEBOOK_XSD)
    Path(out["codebook"]).parent.mkdir(parents=True, exist_ok=True)
    Path(out["codebook"]).write_text(text, encoding="utf-8")
    Path(out["qdc"]).write_bytes(qdc)
    tables.write(candidates_table(p.candidates, tables.CANDIDATES), out["candidates"], metadata=meta)
    tables.write(
        pa.Table.from_pandas(p.saturation, schema=tables.SATURATION, preserve_index=False), out["saturation"], meta
    )
    with tables.open_csv(out["csv"]) as fh:
        tables.write_csv(codes_frame(p.codes, p.status), fh)
    saturation_figure(p.saturation, out["figure"])
    Path(out["page"]).write_text(review_page(p.codes, p.candidates, documents, p.sentence, p.status), "utf-8")
    Path(out["methods"]).write_text(p.sentence + "\n", encoding="utf-8")
    archive.export(p.pairs, out["archive"])
