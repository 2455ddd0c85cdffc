"""`rlmec report`: one self-contained HTML page about a pipeline run.

Everything the page shows comes from the workspace (run record, artifacts, manifests) and
the MLflow store (``data``, ``tracking``); each section is collected by its own module and
drawn by a Jinja2 template (``templates/``). The page has inline CSS and inline SVG only,
so it can be mailed or archived as one file.
"""

from report.page import SECTION_IDS, build_report, write_report

__all__ = ["SECTION_IDS", "build_report", "write_report"]
