"""The HTML report: built from real result documents of a small run, self-contained, escaped, and
rendered by a real browser (headless Chromium, when /usr/bin/chromium exists).

The run: the tiny engine under two layouts (TP 2, PP 2), two repetitions each, with the volume and
budget checks, assembled into case results the way the pipeline does and passed through JSON like
the session report.  A few seconds on two cores.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from llmcomm_tests.core.documents import CaseResult, SessionReport, Verdict, VerdictRow, from_json, to_json
from llmcomm_tests.report import html as html_report
from llmcomm_tests.report import plots

CHROMIUM = "/usr/bin/chromium"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SPEC = """
name: html-fixture
engine: tiny
dtype: fp32
workload: {batch: 1, prompt_len: 16, gen_len: 4}
layouts: ["2x1", "1x2"]
repeats: 2
warmup: 0
hardware: cpu-loopback
budgets:
  hardware: cpu-loopback
  ttft: {p99: 10s}
  tpot: {p99: 1us}
  bytes_per_token: {max: 1 MiB}
"""


def _result_documents() -> SessionReport:
    from llmcomm_tests.analytic.hardware import load_profile
    from llmcomm_tests.judging.checks import budget_rows, volume_rows
    from llmcomm_tests.runtime.measure import run_engine
    from llmcomm_tests.runtime.run_config import RunConfig
    from llmcomm_tests.suite.case_run import prediction
    from llmcomm_tests.core.envinfo import Environment
    from llmcomm_tests.spec import parse_spec

    spec = parse_spec(SPEC, "slo_specs/html-fixture.yaml")
    profile = load_profile("cpu-loopback")
    items, env = [], Environment.capture().fingerprint()
    for case in spec.cases():
        doc = run_engine(RunConfig.for_case(case), backend="gloo", timeout_s=120)
        predicted = prediction(case, profile)  # as the pipeline keeps it
        verdict = Verdict(case.id)
        verdict.rows += volume_rows(doc.volume, predicted.volume)
        verdict.rows += budget_rows(case.budgets, doc, "cpu-loopback")  # tpot <= 1 µs: fails on purpose
        items.append(CaseResult(case.spec_name, str(case.path), case.id, "cpu-loopback", "gloo", env,
                                predicted, verdict, doc, nodeid=f"slo_specs/html-fixture.yaml::{case.id}"))
    # Baseline rows as the baseline module writes them: a relative change with its 95 % interval.
    items[0].verdict.rows += [
        VerdictRow("baseline", "volume (all op classes)", "pass", detail="identical to the baseline"),
        VerdictRow("baseline", "ttft", "fail", "change", 0.42, n=4, low=0.2, high=0.7, budget=0.1,
                   budget_label="change", detail="slower +42.0% [95% CI +20.0%, +70.0%]"),
        VerdictRow("baseline", "tpot", "pass", "change", -0.03, n=4, low=-0.2, high=0.15, budget=0.1,
                   budget_label="change", detail="-3.0% [98.33% CI -20.0%, +15.0%]; detects >= 40.0% at 95% power"),
    ]
    session = SessionReport(env, "gloo", "cpu-loopback", 4,
                            {"report_dir": "reports", "repeats": 2, "baseline_compare": "before-upgrade"}, items,
                            complete=True, exitstatus=1)
    return from_json(SessionReport, json.loads(json.dumps(to_json(session))))  # what the session JSON holds


@pytest.fixture(scope="module")
def session_doc() -> SessionReport:
    return _result_documents()


@pytest.fixture(scope="module")
def report(session_doc, tmp_path_factory) -> Path:
    return html_report.write_html(session_doc, tmp_path_factory.mktemp("html") / "llmcomm-report.html")


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(text: str) -> _Collector:
    p = _Collector()
    p.feed(text)
    p.close()
    return p


def _png_of(src: str) -> bytes:
    assert src.startswith("data:image/png;base64,"), src[:60]
    return base64.b64decode(src.split(",", 1)[1], validate=True)


# -- structure -------------------------------------------------------------------------------------


def test_every_item_has_a_summary_row_and_a_details_block(session_doc, report):
    text = report.read_text(encoding="utf-8")
    page = _parse(text)
    ids = {a.get("id") for _, a in page.tags}
    for i, item in enumerate(session_doc.items):
        assert f'href="#case-{i}"' in text
        assert f"case-{i}" in ids
        assert text.count(item.case_id) >= 3  # summary, details, figures/baseline
    assert sum(tag == "details" for tag, _ in page.tags) >= len(session_doc.items)
    words = " ".join(page.text)
    for needed in ("Environment", "Summary", "TTFT p50", "TPOT p50", "bytes / token", "failing checks",
                   "budget: tpot p99", "Baseline comparison", "2.13", "gloo", "cpu-loopback"):
        assert needed in words, needed


def test_images_are_embedded_pngs_and_nothing_is_fetched(report):
    from PIL import Image

    text = report.read_text(encoding="utf-8")
    page = _parse(text)
    images = [a["src"] for tag, a in page.tags if tag == "img"]
    assert len(images) == 6  # volume, latency, measured vs predicted, wait vs transfer, timeline, baseline
    for src in images:
        data = _png_of(src)
        assert data.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
            assert im.size[0] > 300 and im.size[1] > 150
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(script|link|iframe|object|embed)\b", text, re.I)
    assert not re.search(r"url\(|@import", text, re.I)
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name)
            if value is not None:
                assert value.startswith(("data:image/png;base64,", "#")), (tag, name, value[:80])


def test_figures_say_what_they_show(session_doc):
    found = {p.key: p for p in plots.all_plots(session_doc.items)}
    assert set(found) == {"volume", "latency", "accuracy", "wait", "timeline", "baseline"}
    assert found["wait"].title == "Wait versus transfer per site"
    assert all(p.png.startswith(PNG_MAGIC) for p in found.values())
    # One workload per layout: per-case bars, and the title says so.
    assert found["latency"].title == "Latency per layout"
    assert plots.latency_axis(session_doc.items) == (None, [])
    # Measured vs predicted comes from the prediction and the op summaries (no latency rows here).
    points = plots.op_class_points(session_doc.items[0])
    assert points and all(p["bound"][0] <= p["model"] <= p["bound"][1] for p in points)


def test_latency_axis_follows_the_workloads(session_doc):
    items = session_doc.items
    swept = []
    for item in items:
        for s in (16, 64):
            twin = copy.deepcopy(item)
            twin.run.case.prompt_len = s
            swept.append(twin)
    assert plots.latency_axis(swept) == ("prompt_len", [])
    assert plots.latency_plot(swept).title == "Latency vs prompt length"
    for twin in swept:
        twin.run.case.prompt_len = 16
    for twin, batch in zip(swept, (1, 4, 1, 4)):
        twin.run.case.batch = batch
    assert plots.latency_axis(swept) == ("batch", [])
    assert plots.latency_plot(swept).title == "Latency vs batch size"


def test_baseline_section_reads_change_and_interval_from_the_rows(session_doc):
    section = html_report.baseline_section(session_doc.items)
    assert "+42.0%" in section and "[+20.0%, +70.0%]" in section and "change &lt;= 10%" in section
    assert "-3.0%" in section and "[-20.0%, +15.0%]" in section
    assert "1 of 3 compared rows failed" in section


def test_latency_rows_feed_the_accuracy_plot_when_present(session_doc):
    item = copy.deepcopy(session_doc.items[0])
    item.verdict.rows.append(VerdictRow("latency", "all_reduce decode attn /2", "pass", "s", 2e-4, 5e-4, 10,
                                        1.5e-4, low=1e-5, high=1e-3))
    assert plots.op_class_points(item) == [{"op": "all_reduce", "name": "all_reduce decode attn /2",
                                           "measured": 2e-4, "model": 1.5e-4, "bound": (1e-5, 1e-3)}]


def test_text_is_escaped_and_errors_still_render(session_doc, tmp_path):
    doc = copy.deepcopy(session_doc)
    doc.items[0].spec = "<script>alert(1)</script>"
    broken = doc.items[1]
    broken.run, broken.error = None, "launch failed: rank 1 <exit 9> & more\nsecond line"
    broken.verdict = Verdict(broken.case_id, [VerdictRow("run", "launch", "fail", detail="rank 1 <exit 9>")])
    text = html_report.write_html(doc, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "rank 1 &lt;exit 9&gt; &amp; more" in text
    assert "ERROR" in text
    assert len(re.findall(r"<img ", text)) >= 5  # figures still drawn from the case that ran


def test_empty_session_renders():
    text = html_report.render(SessionReport({}, "gloo", "cpu-loopback", 0, {}, []))
    assert "0 cases" in text and "No case produced a run to draw" in text


def test_write_for_session_writes_into_the_report_dir(session_doc, tmp_path):
    report = SessionReport(session_doc.env, "gloo", "cpu-loopback", 4,
                           {"report_dir": str(tmp_path / "reports"), "repeats": 2}, session_doc.items, exitstatus=1)
    out = html_report.write_for_session(report, tmp_path / "reports")
    assert out == tmp_path / "reports" / "llmcomm-report.html" and out.is_file()
    broken = SessionReport({}, "gloo", "x", 1, {"report_dir": str(tmp_path / "broken")}, [{"run": 1}])
    with pytest.warns(UserWarning, match="HTML report not written"):
        assert html_report.write_for_session(broken, tmp_path / "broken") is None


# -- command line ----------------------------------------------------------------------------------


def test_llmcomm_report_command(session_doc, tmp_path):
    (tmp_path / "llmcomm-report.json").write_text(json.dumps(to_json(session_doc)))
    cmd = [sys.executable, "-m", "llmcomm_tests.commands", "report"]
    done = subprocess.run(cmd + [str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == tmp_path / "llmcomm-report.html"
    assert "Summary" in (tmp_path / "llmcomm-report.html").read_text(encoding="utf-8")
    out = tmp_path / "elsewhere" / "page.html"
    out.parent.mkdir()  # an output's folder must exist (a missing one is refused: tests/test_cli.py)
    done = subprocess.run(cmd + [str(tmp_path), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and out.is_file()
    done = subprocess.run(cmd + [str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not found" in done.stderr


# -- a real browser --------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} not installed (Debian: apt-get install -y chromium); the browser check needs it")


def _chromium(*args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="llmcomm-chromium-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@needs_chromium
def test_chromium_screenshot_is_a_readable_page(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", report.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        rgb = im.convert("RGB")
        raw = rgb.resize((320, 500)).tobytes()
    pixels = [tuple(raw[i:i + 3]) for i in range(0, len(raw), 3)]
    non_white = sum(1 for p in pixels if min(p) < 235) / len(pixels)
    assert non_white > 0.05, f"only {non_white:.1%} of the screenshot is not white"
    colourful = sum(1 for r, g, b in pixels if max(r, g, b) - min(r, g, b) > 60) / len(pixels)
    assert colourful > 0.005, "no coloured pixels: badges and figures did not render"
    if os.environ.get("LLMCOMM_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["LLMCOMM_KEEP_SCREENSHOT"])


@needs_chromium
def test_chromium_dom_holds_the_summary_table(session_doc, report):
    done = _chromium("--dump-dom", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "<table>" in dom and "TTFT p50" in dom and "bytes / token" in dom
    for item in session_doc.items:
        assert item.case_id in dom
    assert dom.count('class="badge fail"') >= len(session_doc.items)
