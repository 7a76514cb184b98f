"""`mooer-data report`: the page a build ends with, opened in headless Chromium.

The DOM Chromium renders must show the sources, their hours (equal to the manifest's)
and the budget table (equal to the recipe and sample.json); its screenshot must show the
plots — measured by the pixels drawn in the plots' colour, which the page itself never
uses, and which vanish when the PNGs are missing."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mooer_data import demo
from mooer_data.build import BuildOptions, build_mt5k
from mooer_data.cli import app
from mooer_data.labeling import RetryPolicy
from mooer_data.prepare import PrepareConfig, prepare_corpus
from mooer_data.recipe import load_recipe
from mooer_data.report import BAR_COLOR, write_report

CHROMIUM = "chromium-headless-shell"
CORPORA = ("librispeech", "wenetspeech", "inhouse")
NOTE = "labels in this test came from the emulator"


def chromium() -> str:
    found = shutil.which(CHROMIUM)
    if found is None:
        pytest.fail(f"{CHROMIUM} not found: the report test needs headless Chromium. Run `make test` (it installs the Debian "
                    f"package {CHROMIUM}) or `sudo apt-get install {CHROMIUM}`")
    return found


def run_chromium(*arguments: str) -> str:
    command = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def built(corpus_factory, tmp_path_factory):
    """A small build whose in-house labels are verified by a second (emulated) provider."""
    corpora = {name: corpus_factory(name) for name in CORPORA}
    directory = tmp_path_factory.mktemp("report-build")
    roots = "\n".join(f"  {name}: {{root: {corpora[name].root}}}" for name in CORPORA)
    path = directory / "recipe.yaml"
    path.write_text(f"""
name: report-test
seed: 11
corpora:
{roots}
budgets_minutes: {{librispeech: 0.1, wenetspeech: 0.2, inhouse: 0.5}}
providers: {{asr: [tencent], mt: [tencent]}}
pseudolabel: {{verify_with: openai}}
translate: {{rate: 100}}
shards: {{max_count: 3}}
output: {directory / 'out'}
""")
    recipe = load_recipe(path)
    with demo.emulated_services(corpora["inhouse"]):
        options = BuildOptions(show_progress=False, retry_policy=RetryPolicy(base_delay=0.02, max_delay=0.2), report_notes=(NOTE,))
        result = build_mt5k(recipe, options, log=lambda _: None)
    return recipe, result.report


class _Page(HTMLParser):
    """Tables (caption -> rows of cell texts), image sources and the visible text."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.text: list[str] = []
        self._caption = None
        self._in = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "caption":
            self._in = "caption"
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._in = "cell"
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.tables[self._caption].append(self._row)
            self._row = None
        if tag in ("caption", "td", "th"):
            self._in = None

    def handle_data(self, data):
        self.text.append(data)
        if self._in == "caption":
            self._caption = data
            self.tables[data] = []
        elif self._in == "cell":
            self._row[-1] += data


def rendered(page: Path) -> _Page:
    parsed = _Page()
    parsed.feed(run_chromium("--dump-dom", page.as_uri()))
    return parsed


def test_the_page_shows_sources_hours_and_budgets(built):
    recipe, page = built
    dom = rendered(page)
    output = Path(recipe.output)
    segments = pq.read_table(output / "segments.parquet").to_pylist()
    by_source = {}
    for segment in segments:
        hours, count = by_source.get(segment["source"], (0.0, 0))
        by_source[segment["source"]] = (hours + segment["duration"] / 3600, count + 1)
    shown = {row[0]: (float(row[1]), int(row[2])) for row in dom.tables["hours by source"][1:]}
    assert set(shown) == set(CORPORA)
    for source, (hours, count) in by_source.items():
        assert shown[source][0] == pytest.approx(hours, abs=1e-4) and shown[source][1] == count

    budgets = {row[0]: row for row in dom.tables["budget requested versus reached"][1:]}
    record = json.loads((output / "sample.json").read_text())["groups"]
    assert set(budgets) == set(recipe.budgets_hours)
    for source, hours in recipe.budgets_hours.items():
        assert float(budgets[source][1]) == pytest.approx(hours, abs=1e-4)
        assert float(budgets[source][2]) == pytest.approx(record[source]["reached_hours"], abs=1e-4)

    origins = {row[0] for row in dom.tables["hours by label origin"][1:]}
    assert origins == {"manual", "pseudo:tencent"}
    text = " ".join(dom.text)
    assert NOTE in text and f"{len(segments)} segments" in text
    assert "checked by a second provider" in text  # verify_with measured agreement
    assert any(caption.startswith("rejects by reason") for caption in dom.tables)
    assert dom.tables["shards"][1][0] == str(len(list(output.glob("*/shard-*.tar"))))
    expected_images = {"hours.png", "budgets.png", "durations.png", "confidence.png", "agreement.png", "rejects.png", "shards.png"}
    assert set(dom.images) == expected_images
    assert all((page.parent / image).is_file() for image in dom.images)


def plot_pixels(page: Path, screenshot: Path) -> tuple[int, float]:
    """(pixels in the plots' colour, grey-level spread) of a full-page screenshot."""
    from matplotlib.image import imread

    run_chromium(f"--screenshot={screenshot}", "--window-size=1100,7000", page.as_uri())
    pixels = (imread(screenshot)[..., :3] * 255).astype(int)
    target = np.array([int(BAR_COLOR[i : i + 2], 16) for i in (1, 3, 5)])
    close = np.abs(pixels - target).sum(axis=-1) < 30
    return int(close.sum()), float(pixels.std())


def test_the_screenshot_shows_the_plots(built, tmp_path):
    _, page = built
    with_plots, spread = plot_pixels(page, tmp_path / "page.png")
    assert spread > 10  # not a blank page
    assert with_plots > 20_000  # seven plots' worth of bars
    # the same page with its PNGs gone: the bar colour disappears, so the count above measures loaded images
    bare = tmp_path / "bare"
    shutil.copytree(page.parent, bare, ignore=shutil.ignore_patterns("*.png"))
    without, _ = plot_pixels(bare / page.name, tmp_path / "bare.png")
    assert without < with_plots / 100


def test_report_command_writes_markdown_and_handles_a_plain_manifest(built, corpus_factory, tmp_path):
    recipe, _ = built
    result = CliRunner().invoke(app, ["report", str(recipe.output), "-o", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "again" / "report.md").read_text()
    assert "| source | requested h | reached h |" in markdown and "![Shard sizes](shards.png)" in markdown
    for source in CORPORA:
        assert f"| {source} |" in markdown

    libri = corpus_factory("librispeech")
    prepare_corpus("librispeech", libri.root, tmp_path / "libri", PrepareConfig(show_progress=False), log=lambda _: None)
    page = write_report(tmp_path / "libri")
    text = " ".join(rendered(page).text)
    assert "no sample.json here: budgets unknown" in text and "no index.parquet: not sharded" in text

    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "expected a build output directory" in missing.output


def test_a_rerun_replaces_only_its_own_plots(corpus_factory, tmp_path):
    libri = corpus_factory("librispeech")
    prepare_corpus("librispeech", libri.root, tmp_path / "libri", PrepareConfig(show_progress=False), log=lambda _: None)
    out = tmp_path / "shared-folder"
    out.mkdir()
    (out / "holiday.png").write_bytes(b"the user's own picture")
    (out / "shards.png").write_bytes(b"a plot from an earlier, sharded report")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "libri"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "holiday.png").read_bytes() == b"the user's own picture"
    assert not (out / "shards.png").exists()  # nothing sharded this time: the stale plot must not linger
    assert (out / "durations.png").is_file()
