"""The report's files: results.json, and the record and the certificate as HTML (Jinja2,
autoescaped) and PDF.

The PDF is made by WeasyPrint, which was chosen over a headless browser: it is pure
Python on Pango (in every Debian, nothing to download on a field Raspberry Pi), its
output follows the print CSS deterministically (A4 pages, page X of Y, table headers
repeated on every page, no browser version in the loop), and it renders the inline SVG
plots itself.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from acquisition.config.station import StationConfig
from acquisition.files import write_json_whole, write_text_whole, written_whole
from acquisition.report import document, formatting
from acquisition.report.document import RunData
from acquisition.report.labels import Labels

# Each document and its page: the record's wide tables (every step, every event) fit
# across a landscape page; the certificate is the usual portrait page.
PAGES = {"record": "A4 landscape", "certificate": "A4"}


def css_string(text: str) -> str:
    """`text` as a quoted CSS string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'"{escaped}"'


def environment(labels: Labels) -> Environment:
    """The templates with their filters (the formatting functions) and labels."""
    env = Environment(loader=PackageLoader("acquisition.report", "templates"),
                      autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fixed=formatting.fixed, percent=formatting.percent,
                       metres=formatting.metres, kg_h=formatting.kg_h,
                       significant=formatting.significant, plus_minus=formatting.plus_minus,
                       utc=formatting.utc)
    env.globals["L"] = labels
    return env


def _page_furniture(labels: Labels, title_key: str, run_id: str) -> dict[str, str]:
    """The CSS strings of the page margins: the title, the run id, page X of Y."""
    counters = labels("page", page='" counter(page) "', pages='" counter(pages) "')
    return {"header_css": css_string(labels.each(title_key)[0]),
            "run_id_css": css_string(run_id),
            "page_css": f'"{counters}"'}


def write_report(data: RunData, config: StationConfig, labels: Labels, out: Path
                 ) -> list[Path]:
    """Write the five files into `out` (made if need be); their paths."""
    from weasyprint import HTML  # imported here: it loads Pango, a second on a Pi

    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    write_json_whole(results_path, data.calibration.results)
    written = [results_path]
    env = environment(labels)
    contexts = {"record": document.record(data, config, labels),
                "certificate": document.certificate(data, config, labels)}
    for name, page_size in PAGES.items():
        title_key = f"{name}_title"
        context = contexts[name] | {"title_lines": labels.each(title_key), "page_size": page_size}
        context |= _page_furniture(labels, title_key, context["run_id"])
        html = env.get_template(f"{name}.html").render(context)
        html_path, pdf_path = out / f"{name}.html", out / f"{name}.pdf"
        write_text_whole(html_path, html)
        with written_whole(pdf_path) as part:
            HTML(string=html, base_url=str(out)).write_pdf(part)
        written += [html_path, pdf_path]
    return written
