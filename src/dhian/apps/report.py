"""Run reports: one Markdown file and one self-contained HTML page from the same sections.

Owns :class:`Report` / :class:`Section` and :func:`write_report`. A section holds paragraphs,
an optional table (first row = header) and optional PNG figures. ``report.md`` links the figures
by relative path (view it next to them); ``report.html`` embeds every figure as a base64
``data:`` URI and carries its own CSS, so the one file can be mailed or opened offline.
Text is plain (escaped for HTML, ``|`` escaped in Markdown tables); no template engine.
Imports: stdlib only.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["Figure", "Report", "Section", "write_report"]

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f;
       max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid #ddd; padding: .3rem .55rem; text-align: left; vertical-align: top; }
th { background: #f5f5f7; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: .85rem; color: #555; }
code { font: .9em ui-monospace, monospace; background: #f5f5f7; padding: 0 .2em; }
""".strip()


@dataclasses.dataclass(frozen=True)
class Figure:
    """A PNG on disk and its caption."""

    path: Path
    caption: str = ""


@dataclasses.dataclass
class Section:
    """A titled part of a report: ``paragraphs`` (plain text), ``table`` (rows of cells, the
    first row is the header) and ``figures``."""

    title: str
    paragraphs: list[str] = dataclasses.field(default_factory=list)
    table: list[list[str]] | None = None
    figures: list[Figure] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Report:
    """A whole report: ``title``, an ``intro`` paragraph list and ``sections`` in order."""

    title: str
    intro: list[str] = dataclasses.field(default_factory=list)
    sections: list[Section] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(rows: Sequence[Sequence[str]]) -> list[str]:
    head, *body = rows
    out = ["| " + " | ".join(_md_cell(c) for c in head) + " |"]
    out.append("|" + "|".join("---" for _ in head) + "|")
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return out


def to_markdown(report: Report, base: Path) -> str:
    """The report as Markdown; figures linked relative to ``base`` (the .md file's folder)."""
    lines = [f"# {report.title}", ""]
    for p in report.intro:
        lines += [p, ""]
    for sec in report.sections:
        lines += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            lines += [p, ""]
        if sec.table:
            lines += [*_md_table(sec.table), ""]
        for fig in sec.figures:
            rel = Path(os.path.relpath(fig.path, base)).as_posix()
            lines += [f"![{_md_cell(fig.caption)}]({rel})", ""]
            if fig.caption:
                lines += [f"*{fig.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- HTML


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_table(rows: Sequence[Sequence[str]]) -> str:
    head, *body = rows
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in body]
    out.append("</table>")
    return "\n".join(out)


def to_html(report: Report) -> str:
    """The report as one self-contained HTML page (figures embedded as base64 PNG)."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
    ]
    parts += [f"<p>{esc(p)}</p>" for p in report.intro]
    for sec in report.sections:
        parts.append(f"<h2>{esc(sec.title)}</h2>")
        parts += [f"<p>{esc(p)}</p>" for p in sec.paragraphs]
        if sec.table:
            parts.append(_html_table(sec.table))
        for fig in sec.figures:
            parts.append(
                f'<figure><img src="{_data_uri(fig.path)}" alt="{esc(fig.caption)}">'
                f"<figcaption>{esc(fig.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_report(report: Report, md_path: str | Path, html_path: str | Path) -> tuple[Path, Path]:
    """Write ``report`` as Markdown (``md_path``) and self-contained HTML (``html_path``).

    Figures whose file is missing are left out of both (a picture never fails a report).
    Returns the two paths.
    """
    md_path, html_path = Path(md_path), Path(html_path)
    present = Report(
        report.title,
        list(report.intro),
        [
            dataclasses.replace(sec, figures=[f for f in sec.figures if Path(f.path).is_file()])
            for sec in report.sections
        ],
    )
    md_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(md_path, to_markdown(present, md_path.parent))
    _write_text(html_path, to_html(present))
    return md_path, html_path
