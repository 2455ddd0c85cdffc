"""`rlmec report`: the HTML run report, on a hand-made workspace (no training)."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from report import SECTION_IDS, build_report, write_report
from report.charts import line_chart
from report.page import environment
from rlmec_core.eval_table import ablation_table, results_table
from storage.store import ArtifactStore
from tests.report_fixtures import (
    ABLATION_A,
    ABLATION_B,
    EVIL,
    EVIL_ATTR,
    EVIL_SCRIPT,
    LOSSES,
    STAGE_ERROR,
    add_ablation_run,
    build_bare_workspace,
    build_workspace,
    decode_png,
)


class Page(HTMLParser):
    """Every start tag with its attributes, the text of each section, its table rows (cell
    texts, header row included), and the ids."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.ids: list[str] = []
        self.section_text: dict[str, list[str]] = {}
        self.section_rows: dict[str, list[list[str]]] = {}
        self._section: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if "id" in attributes:
            self.ids.append(attributes["id"])
        if tag == "section":
            self._section = attributes.get("id")
            self.section_text[self._section] = []
            self.section_rows[self._section] = []
        elif tag == "tr" and self._section is not None:
            self.section_rows[self._section].append([])
        elif tag in ("td", "th") and self._section is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.section_rows[self._section][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._section is not None:
            self.section_text[self._section].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def text(self, section: str) -> str:
        return "".join(self.section_text[section])

    def rows(self, section: str) -> list[tuple[str, ...]]:
        return [tuple(row) for row in self.section_rows[section]]

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        """Start tags named ``tag`` whose attributes contain ``attrs`` (class: any word)."""
        found = []
        for name, attributes in self.tags:
            if name != tag:
                continue
            ok = True
            for key, want in attrs.items():
                have = attributes.get(key.rstrip("_")) or ""
                ok &= want in have.split() if key == "class_" else have == want
            if ok:
                found.append(attributes)
        return found


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("report-ws")
    return root, build_workspace(root)


@pytest.fixture(scope="module")
def full_page(workspace) -> tuple[str, Page]:
    root, ids = workspace
    text = build_report(root, ids["full"])
    return text, Page(text)


def test_every_section_is_there_once(full_page):
    _, page = full_page
    for section_id in SECTION_IDS:
        assert page.ids.count(section_id) == 1, section_id


def test_page_is_self_contained_and_forbids_scripts(full_page):
    _, page = full_page
    (csp,) = page.find("meta", **{"http-equiv": "Content-Security-Policy"})
    assert csp["content"].startswith("default-src 'none';") and "script" not in csp["content"]
    links = [a.get("href") or a.get("src") for _, a in page.tags if "href" in a or "src" in a]
    assert links and all(link.startswith("#") for link in links)  # only in-page anchors


def test_stage_table_shows_status_artifact_and_time(full_page, workspace):
    root, _ = workspace
    _, page = full_page
    stages = page.text("stages")
    assert "cached" in stages and "ran" in stages
    assert "1.5 s" in stages and "12.0 s in all; 1 stage(s) from the cache" in stages
    # Every committed artifact of the full run is named in the table.
    for artifact in (root / "artifacts").iterdir():
        kind = (artifact / "manifest.json").read_text()
        if '"ablation"' not in kind:
            assert artifact.name in stages


def test_metrics_come_from_the_manifests(full_page):
    _, page = full_page
    metrics = page.text("metrics")
    assert "dev_accuracy" in metrics and "0.123" in metrics
    assert "rlmec.synthetic_test.accuracy" in metrics and "0.54" in metrics
    assert "variant: rlmec" in metrics
    assert "params" not in metrics and "not a number" not in metrics  # numbers only


def _artifact_file(root: Path, kind: str, name: str, mlflow_run_id: str | None = None):
    """The JSON file ``name`` of the workspace's ``kind`` artifact (made by that MLflow run)."""
    store = ArtifactStore(root)
    for artifact_id in store.ids():
        manifest = store.manifest(artifact_id)
        if manifest.kind == kind and mlflow_run_id in (None, manifest.mlflow_run_id):
            return json.loads((store.path(artifact_id) / name).read_text(encoding="utf-8"))
    raise AssertionError(f"no {kind} artifact")


def test_evaluation_table_is_the_console_table(full_page, workspace):
    root, _ = workspace
    _, page = full_page
    expected = results_table(_artifact_file(root, "evaluation", "results.json"))
    assert page.rows("evaluation") == [expected.header, *expected.rows]
    evaluation = page.text("evaluation")
    assert "40.0 [" in evaluation and "54.0 [" in evaluation  # initial and trained accuracy
    assert "+14.0 [" in evaluation and "-2.0 [" in evaluation  # paired Δ vs initial, per set


def test_each_ablation_run_shows_its_own_ablation(workspace):
    root, ids = workspace
    for name, variants, other in (
        ("ablation_a", ABLATION_A, ABLATION_B),
        ("ablation_b", ABLATION_B, ABLATION_A),
    ):
        page = Page(build_report(root, ids[name]))
        summary = _artifact_file(root, "ablation", "ablation.json", ids[name])["summary"]
        expected = ablation_table(summary)
        assert page.rows("ablation") == [expected.header, *expected.rows], name
        shown = {row[1] for row in page.rows("ablation")[1:]}
        assert shown == {"initial", *variants}
        assert not shown & (set(other) - set(variants))  # not the other run's variants
    # The first ablation, although not the newest one: its own seeds and deviation.
    rows = {row[1]: row for row in Page(build_report(root, ids["ablation_a"])).rows("ablation")}
    assert rows["rlmec"][3] == "3" and rows["rlmec"][4].startswith("54.0 [")
    assert rows["rlmec"][5] == "2.0" and rows["sft"][5] == "–"  # one seed: no deviation


def test_a_run_that_is_not_an_ablation_says_so(full_page):
    _, page = full_page
    assert "not available: this run is not an ablation" in page.text("ablation")


def test_curves_are_svg_polylines_of_the_mlflow_histories(full_page):
    text, page = full_page
    curves = text[text.index('<section id="curves"') : text.index('<section id="tokens"')]
    charts = Page(curves)
    polylines = charts.find("polyline")
    # bootstrap, train_grm, train_policy loss, and train_policy's l_rl + l_im.
    assert len(charts.find("svg")) == 4
    lengths = sorted(len(p["points"].split()) for p in polylines)
    expected = sorted(len(v) for series in LOSSES.values() for v in series.values())
    assert lengths == expected  # bootstrap's step-0 summary mean is not a curve point
    labels = page.text("curves")
    for key in ("bootstrap: train_loss", "train_grm: train_loss", "l_rl", "l_im", "step"):
        assert key in labels
    # Loss falls: the bootstrap line ends lower on the page (larger y) than it starts.
    bootstrap = max(polylines, key=lambda p: len(p["points"].split()))  # 40 points
    ys = [float(pt.split(",")[1]) for pt in bootstrap["points"].split()]
    assert all(0 <= y <= 280 for y in ys) and ys[-1] > ys[0] + 100


def test_token_heat_map_of_erroneous_solutions(full_page, workspace):
    root, _ = workspace
    _, page = full_page
    annotate = next(a for a in (root / "artifacts").iterdir() if (a / "rl_data.parquet").is_file())
    rows = pq.read_table(annotate / "rl_data.parquet").to_pylist()
    wrong = [r for r in rows if not r["correct"]]
    tokens = page.text("tokens")
    assert f"{len(wrong)} of {len(wrong)} erroneous solutions" in tokens
    assert "p9/0" not in tokens  # the correct sample is not shown
    reward_spans = [
        s for s in page.find("span", class_="tok") if "reward" in (s.get("title") or "")
    ]
    assert len(reward_spans) == sum(len(r["response_ids"]) for r in wrong)
    first = wrong[0]["rewards"]
    titles = [s["title"].split("\n")[0] for s in reward_spans[: len(first)]]
    assert titles == [f"reward {r:+.4f}" for r in first]
    # Penalties are red, with more colour for a larger penalty; 0 is transparent.
    strongest = reward_spans[int(np.argmin(first))]["style"]
    assert strongest.startswith("background:rgba(214,39,40,0.8")
    edited = page.find("span", class_="edit")
    n_edited = sum(w == 1.0 for r in wrong for w in r["target_weights"])
    assert len(edited) == n_edited + 1  # + the legend's sample
    assert "first error at step 0 (from 0): " in tokens and "7 + 5 = 13" in tokens
    assert "<|eos|>" in tokens  # each token decoded by itself, special tokens shown


def test_default_run_is_the_latest_and_prefixes_resolve(workspace):
    root, ids = workspace
    latest = build_report(root)
    assert html.escape(ids["failed"]) in latest and ids["full"] not in latest
    assert ids["full"] in build_report(root, ids["full"][:6])
    with pytest.raises(ValueError, match="no run .* match run id 'zzz'"):
        build_report(root, "zzz")


def test_failed_run_renders_notes_instead_of_crashing(workspace):
    root, ids = workspace
    page = Page(build_report(root, ids["failed"]))
    assert page.text("stages").count("not reached") == 3  # annotate, train_policy, evaluate
    assert "not available: stage train_grm failed: " + STAGE_ERROR in page.text("metrics")
    assert "not available: stage evaluate was not reached" in page.text("evaluation")
    assert "not available: stage annotate was not reached" in page.text("tokens")
    # The failed stage's own MLflow run still has the loss logged before the failure.
    assert "train_grm: train_loss" in page.text("curves")
    assert "not available: stage train_policy was not reached" in page.text("curves")


def test_workspace_without_mlflow(tmp_path):
    run_id = build_bare_workspace(tmp_path)
    page = Page(build_report(tmp_path, run_id))
    assert "not available: cannot tell whether this run is an ablation: no MLflow store" in (
        page.text("ablation")
    )
    assert "not available: stage bootstrap was not reached" in page.text("curves")
    assert "n_train" in page.text("metrics")
    assert not (tmp_path / "mlflow.db").exists()  # reading must not create a store
    with pytest.raises(ValueError, match="no pipeline runs"):
        build_report(tmp_path / "empty")


def test_an_unreadable_piece_becomes_a_note_and_the_rest_renders(tmp_path):
    build_bare_workspace(tmp_path)
    (data,) = ArtifactStore(tmp_path).ids()
    stages = [{"stage": "data", "status": "cached", "artifact": data, "seconds": 0.1}]
    run_id = add_ablation_run(tmp_path, "2026-01-04T10:00:00+0000", "{not json", stages)
    page = Page(build_report(tmp_path, run_id))
    assert "not available: error while reading it: JSONDecodeError" in page.text("ablation")
    assert "n_train" in page.text("metrics")


def test_a_run_still_going_says_so(tmp_path):
    run_id = build_bare_workspace(tmp_path, status="RUNNING")
    page = Page(build_report(tmp_path, run_id[:4]))
    assert "stage evaluate has not run yet (the run is still going)" in page.text("evaluation")


def test_text_from_data_is_escaped(workspace):
    root, ids = workspace
    for run in ("full", "failed"):
        text = build_report(root, ids[run])
        page = Page(text)
        assert EVIL_SCRIPT not in text and EVIL_ATTR not in text
        assert not page.find("script") and not page.find("img")
        for tag, attributes in page.tags:
            assert not [a for a in attributes if a.startswith("on")], (tag, attributes)
        # The strings are shown as text: in content and in (title) attribute values.
        assert html.escape(EVIL_SCRIPT) in text
        # Both runs reached distill, whose metric `odd {EVIL}` is listed in their metrics.
        metrics = page.text("metrics")
        assert EVIL_SCRIPT in metrics and EVIL_ATTR in metrics
    full = Page(build_report(root, ids["full"]))
    titles = [a.get("title") or "" for _, a in full.tags]
    # Token text in tooltips: quotes and brackets come back intact from the attribute. The
    # fixture's tokenizer (trained on the fixture's texts) makes EVIL_SCRIPT's "<" a token.
    assert any(t.endswith('token "<"') for t in titles)
    assert sum('"' in t.split("token ")[-1][1:-1] for t in titles if "token " in t) >= 1
    shown = "".join(full.section_text["tokens"])
    assert f"Question 2: {EVIL}" in shown  # question from the distilled rows
    assert EVIL in "".join(full.section_text["evaluation"])  # an eval set name
    assert EVIL in "".join(full.section_text["metrics"])  # a metric name
    ablation_text = build_report(root, ids["ablation_a"])
    assert EVIL_SCRIPT not in ablation_text and EVIL_ATTR not in ablation_text
    assert EVIL in Page(ablation_text).text("ablation")  # a variant name


def test_write_report_is_atomic_at_the_default_or_given_path(workspace, tmp_path):
    root, ids = workspace
    path = write_report(root, ids["full"][:8])
    assert path == root / "reports" / f"{ids['full']}.html"
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    other = write_report(root, out=tmp_path / "sub" / "r.html")
    assert other.is_file() and ids["failed"] in other.read_text(encoding="utf-8")


def test_line_chart_axes_and_single_point():
    chart = line_chart(f"t {EVIL}", {"a": [(0, 1.0), (10, 0.5)], "b": [(5, 2.0)]})
    svg = str(environment().get_template("macros.html.j2").module.line_chart(chart))
    page = Page(svg)
    assert len(page.find("polyline")) == 1 and len(page.find("circle")) == 1
    assert EVIL_SCRIPT not in svg and EVIL_ATTR not in svg and not page.find("img")
    assert f'aria-label="t {EVIL}"' in html.unescape(svg)  # escaped text, intact once read
    assert ">10<" in svg and ">step<" in svg and ">value<" in svg
    assert [t.label for t in chart.x_ticks] == ["0", "2", "4", "6", "8", "10"]
    # Higher values sit higher on the page: b's 2.0 at the top of the plot, a's 0.5 at the bottom.
    assert chart.lines[1].points == ((chart.left + chart.plot_width / 2, chart.top),)
    assert chart.lines[0].points[-1][1] == chart.top + chart.plot_height


# ---------------------------------------------------------------- in a real browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt when missing (needs root and the network)."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{CHROMIUM} is missing; install it: apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
            if done.returncode != 0:
                pytest.fail(
                    f"installing chromium failed ({' '.join(cmd)} exit {done.returncode}); "
                    "is there network access to the Debian mirrors? Output:\n"
                    + done.stdout[-1500:]
                    + done.stderr[-1500:]
                )
    except subprocess.TimeoutExpired:
        pytest.fail("installing chromium with apt-get timed out (no network?)")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


def _chromium(binary: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_report_renders_in_headless_chromium(chromium, workspace, tmp_path):
    root, ids = workspace
    report = write_report(root, ids["full"], out=tmp_path / "report.html")
    url = report.resolve().as_uri()
    shot = tmp_path / "shot.png"
    done = _chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", url)
    assert shot.is_file(), done.stderr[-2000:]
    pixels = decode_png(shot.read_bytes())
    assert pixels.shape[:2] == (4000, 1280)
    rgb = pixels[..., :3].reshape(-1, 3)
    colours = np.unique(rgb[::7], axis=0)
    assert len(colours) > 200  # text, charts, heat map: not a blank or one-colour page
    assert (rgb < 200).all(axis=1).mean() > 0.01  # a fair share of dark (inked) pixels
    # The reward heat map's red is on the page.
    red = (rgb[:, 0] > 200) & (rgb[:, 1] < 120) & (rgb[:, 2] < 120)
    assert red.sum() > 200

    dom = _chromium(chromium, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Page(dom.stdout)
    for section_id in SECTION_IDS:
        assert section_id in page.ids
    assert not page.find("img") and not page.find("script")
    assert EVIL_SCRIPT in page.text("tokens")  # shown as text, not run
