"""The documentation: the site builds strictly (a broken link or anchor, or a page outside the
nav, fails it) into pages that fetch nothing from outside, every `KEEL_*` setting is in the
configuration page with its real default, and the README's links reach files that exist."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from graph.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# A row of the configuration page's tables: | `KEEL_NAME` | default | what |
SETTING_ROW = re.compile(r"^\| `KEEL_(\w+)` \| (.+?) \| .+ \|$", re.M)


def build_site(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    # NO_MKDOCS_2_WARNING: Material prints a banner about its successor on every build.
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_site_builds_strictly_and_fetches_nothing(tmp_path: Path):
    done = build_site(ROOT / "mkdocs.yml", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr
    for page in [
        "index.html",
        "getting-started/index.html",
        "concepts/streaming/index.html",
        "configuration/index.html",
        "benchmarks/index.html",
        "security/index.html",
        "design/index.html",
    ]:
        assert (tmp_path / page).is_file(), page
    assert "KEEL_DATABASE_URL" in (tmp_path / "configuration/index.html").read_text()
    assert (tmp_path / "search/search_index.json").is_file()  # the offline search index
    # Offline: no stylesheet, script, font or image from another host (theme font: false).
    for html in tmp_path.rglob("*.html"):
        text = html.read_text()
        assert not re.search(r"<(link|script|img)[^>]+(href|src)=\"(https?:)?//", text), html
        assert "fonts.googleapis" not in text, html


def test_a_broken_link_or_a_page_outside_the_nav_fails_the_build(tmp_path: Path):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    with (tmp_path / "docs" / "index.md").open("a") as index:
        index.write("\n[gone](cache.md#no-such-section) and [lost](no-such-page.md)\n")
    (tmp_path / "docs" / "orphan.md").write_text("# Reachable from no menu\n")
    done = build_site(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 1
    assert "does not contain an anchor '#no-such-section'" in done.stderr
    assert "'no-such-page.md', but the target is not found" in done.stderr
    assert 'not included in the "nav" configuration:\n  - orphan.md' in done.stderr


def test_every_setting_is_documented_with_its_default():
    page = (ROOT / "docs" / "configuration.md").read_text()
    rows = {name.lower(): default for name, default in SETTING_ROW.findall(page)}
    fields = Settings.model_fields
    assert not set(fields) - set(rows), "settings missing from docs/configuration.md"
    assert not set(rows) - set(fields), "docs/configuration.md names settings that do not exist"
    for name, documented in rows.items():
        default = fields[name].get_default(call_default_factory=True)
        if documented == "unset":
            assert default in (None, "", [], {}), name
        else:
            value = documented.strip("`")
            # Read the documented value as the environment would be, then compare.
            assert getattr(Settings.model_validate({name: value}), name) == default, name


def test_the_readme_is_a_front_page_whose_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    # .ci/run and CI rely on these two commands.
    two = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    assert "make run " in two and "make test " in two
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert len(targets) >= 10
    for target in targets:
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).is_file(), target
