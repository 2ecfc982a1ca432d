"""LlamaBoard (`llamafactory-cli webui`) in a real headless Chromium: our models, templates and datasets show up.

The server is the real `llamafactory-cli webui` (Gradio) on loopback, with the plugin loaded by its autoload
hook exactly as a user gets it; the browser is Debian's `/usr/bin/chromium` driven by Playwright (installed by
`tests/install_browser.sh`; Playwright's own browser download is never used). Every request that leaves
127.0.0.1 is aborted, so the page renders offline and the same way every time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers import BIN, REPO, cli_env, free_port
from PIL import Image, ImageStat

from vlmrecipes.plugins.registry import model_groups, templates
from vlmrecipes.recipes import load, training_recipes

MODEL_GROUPS = model_groups()
TEMPLATES = templates()

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Locator, Page

# One LlamaBoard server per xdist worker: `--dist loadgroup` keeps both tests on one worker and one server.
pytestmark = pytest.mark.xdist_group("llamaboard")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright missing: run tests/install_browser.sh")

CHROMIUM = Path("/usr/bin/chromium")
# A clean, quiet headless browser: no sandbox (CI containers run as root), no GPU, and none of the background
# traffic (QUIC, component updates, sync) that would try to reach the network.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER_START_S = 240  # LlamaBoard imports torch and builds ~600 model choices; CI machines are shared
UI_TIMEOUT_MS = 60_000
OPTION_TIMEOUT_MS = 10_000  # how long a dropdown gets to show a choice before we call it missing
DATASET_INFO = REPO / "dataset_info"
# The model our brief names; the test also covers every other entry of MODEL_GROUPS.
SIGLIP_MODEL = "SigLIP-Qwen2.5-0.5B-Instruct"


def _log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


@pytest.fixture(scope="module")
def webui_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `llamafactory-cli webui` on a free loopback port; yield its URL; stop it (and its children)."""
    workdir = tmp_path_factory.mktemp("llamaboard")  # it writes llamaboard_cache/ and saves/ into its cwd
    port = free_port()
    log = workdir / "webui.log"
    env = cli_env(
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        # LlamaBoard launches with inbrowser=True; `true` is the browser Python's webbrowser module then runs,
        # instead of a second, headed Chromium that has no display.
        BROWSER="true",
    )
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "llamafactory-cli"), "webui"], cwd=workdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llamafactory-cli webui exited {proc.returncode} before serving; log {log}:\n"
                            f"{_log_tail(log)}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llamafactory-cli webui did not serve {url} within {SERVER_START_S} s; log {log}:\n"
                            f"{_log_tail(log)}")
            time.sleep(1)
        yield url
    finally:
        # Its own session: the group is exactly the server and whatever it spawned.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """A headless Debian Chromium with a fresh profile that can reach only 127.0.0.1."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed: run tests/install_browser.sh (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1400, "height": 1000},
        )
        context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("http://127.0.0.1:")
                      else route.abort())
        yield context
        context.close()


@pytest.fixture
def page(browser: BrowserContext, webui_url: str) -> Iterator[Page]:
    """A freshly loaded LlamaBoard page (English labels; it resumes the last model the module picked)."""
    page = browser.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(webui_url, wait_until="domcontentloaded")
    # The labels come from LlamaBoard's locale table once the page's load event has run on the server.
    sync_api.expect(page.get_by_label("Model name", exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    yield page
    page.close()


def _field(page: Page, label: str) -> Locator:
    """The visible Gradio field labelled `label`, of the Train tab where Evaluate has the same field.

    A dropdown's accessible name is its label; a textbox's is its label followed by its info line.
    """
    return page.get_by_label(re.compile(rf"^\s*{re.escape(label)}(\s|$)")).filter(visible=True).first


def _has_option(page: Page, label: str, value: str) -> bool:
    """Type `value` into dropdown `label` (Gradio filters its choices) and say whether it is a choice."""
    box = _field(page, label)
    box.click()
    box.fill(value)
    try:  # the list re-filters after the input event: wait for it, not just count
        page.get_by_role("option", name=value, exact=True).wait_for(state="visible", timeout=OPTION_TIMEOUT_MS)
        return True
    except sync_api.TimeoutError:
        return False
    finally:
        box.blur()  # closes the list and puts the selected value back (Escape keeps the typed text)


def _choose(page: Page, label: str, value: str) -> None:
    """Pick `value` in dropdown `label` the way a user does: type to filter, click the choice."""
    box = _field(page, label)
    box.click()
    box.fill(value)
    page.get_by_role("option", name=value, exact=True).click()


def _expect_model_fills(page: Page, model: str, hub_id: str, template: str | None) -> None:
    """Selecting `model` fills the model path with `hub_id` and (if given) the template field with `template`."""
    _choose(page, "Model name", model)
    sync_api.expect(_field(page, "Model name")).to_have_value(model, timeout=UI_TIMEOUT_MS)
    sync_api.expect(_field(page, "Model path")).to_have_value(hub_id, timeout=UI_TIMEOUT_MS)
    if template is not None:
        sync_api.expect(_field(page, "Chat template")).to_have_value(template, timeout=UI_TIMEOUT_MS)


def _expected_datasets() -> list[str]:
    """What LlamaBoard's SFT stage lists for dataset_info/: every entry that is not a preference (ranking) set."""
    with open(DATASET_INFO / "dataset_info.json") as f:
        info = json.load(f)
    return [name for name, entry in info.items() if not entry.get("ranking", False)]


def _assert_not_blank(screenshot: Path) -> None:
    """A rendered LlamaBoard has text, borders and buttons: many grey levels and a clear spread around white.

    Measured on the real page: standard deviation ~22 over 200+ grey levels; a blank or loading page is ~0.
    """
    gray = Image.open(screenshot).convert("L")
    stddev = ImageStat.Stat(gray).stddev[0]
    levels = len(gray.getcolors(256) or [])
    assert stddev > 10 and levels > 64, f"{screenshot} looks blank: grey stddev {stddev:.1f}, {levels} grey levels"


def test_siglip_model_fills_its_template_and_dataset_dir_lists_ours(page: Page, tmp_path: Path) -> None:
    """The user path of issue 4: pick our SigLIP model, point the data dir at ours, see our datasets."""
    assert SIGLIP_MODEL in MODEL_GROUPS, f"{SIGLIP_MODEL} left the model_groups of plugins/siglip_qwen/__init__.py"
    hub_id, template = MODEL_GROUPS[SIGLIP_MODEL]
    assert template == "siglip_qwen"
    _expect_model_fills(page, SIGLIP_MODEL, hub_id, template)

    _field(page, "Data dir").fill(str(DATASET_INFO))
    # LlamaBoard lists the datasets of the data dir when the dataset dropdown gets focus.
    _field(page, "Dataset").click()
    expected = _expected_datasets()
    assert {"demo_shapes_train", "demo_shapes_test"} <= set(expected), "dataset_info.json lost the demo datasets"
    sync_api.expect(page.get_by_role("option", name=expected[-1], exact=True)).to_be_visible(timeout=UI_TIMEOUT_MS)
    listed = [option.get_attribute("aria-label") for option in page.get_by_role("option").all()]
    assert sorted(listed) == sorted(expected), f"LlamaBoard lists {listed}, dataset_info.json has {expected}"

    # Pick the demo pair so the closed dropdown shows them and the template field is not hidden by the list.
    for name in ("demo_shapes_train", "demo_shapes_test"):
        page.get_by_role("option", name=name, exact=True).click()
    _field(page, "Dataset").blur()
    sync_api.expect(page.get_by_role("option")).to_have_count(0, timeout=UI_TIMEOUT_MS)
    screenshot = tmp_path / "llamaboard.png"
    page.screenshot(path=str(screenshot), full_page=True)
    _assert_not_blank(screenshot)


def _is_hub_id(name: str) -> bool:
    """`org/model` on the Hub, as opposed to a local folder such as `saves/siglip_qwen/stage1`."""
    parts = name.split("/")
    return len(parts) == 2 and parts[0] not in ("saves", "models", ".", "..") and not name.startswith("/")


def test_our_models_and_templates_are_in_the_dropdowns(page: Page) -> None:
    """Every registered model group and template, and every training recipe's hub model and template."""
    from llamafactory.extras.constants import SUPPORTED_MODELS, DownloadSource

    recipes = {path.relative_to(REPO): load(path) for path in training_recipes()}
    templates = sorted(set(TEMPLATES) | {recipe["template"] for recipe in recipes.values()})
    missing = [name for name in templates if not _has_option(page, "Chat template", name)]
    assert not missing, f"templates missing from LlamaBoard's Chat template dropdown: {missing}"

    # Our own groups carry our template; a recipe's hub model must be listed under some display name.
    for model, (hub_id, template) in MODEL_GROUPS.items():
        _expect_model_fills(page, model, hub_id, template)
    by_hub_id = {paths.get(DownloadSource.DEFAULT): name for name, paths in SUPPORTED_MODELS.items()}
    for path, recipe in recipes.items():
        hub_id = recipe["model_name_or_path"]
        if not _is_hub_id(hub_id):  # a checkpoint our own commands write (saves/..., models/...)
            continue
        assert hub_id in by_hub_id, (
            f"{path}: model_name_or_path {hub_id} is not in LlamaBoard's model list; register it in "
            "the model_groups of its architecture's record (plugins/<architecture>/__init__.py)"
        )
        _expect_model_fills(page, by_hub_id[hub_id], hub_id, None)
