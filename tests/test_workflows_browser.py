"""The workflows in the real ComfyUI frontend (comfyui-frontend-package, served by a real server from
this checkout), in headless Chromium driven by Playwright.

The browser is the system's (Debian ``chromium``, /usr/bin/chromium); Playwright never downloads one.
Without it the module is skipped, with the reason; under CI=true it fails instead: CI must run it.
Each workflow is fetched from the server's template route (/api/workflow_templates/lotus_depth/
<name>.json, the file name put into the URL as the frontend does: the browser sends its spaces as %20)
and loaded with ``app.loadGraphData`` as the template browser does; then the test asserts:

* no dialog but, for the ControlNet and Lotus-2 workflows, the frontend's "Missing Models" list, which
  must offer exactly the third-party files with no error (an allowed source, an allowed suffix and a
  known model folder each); the Lotus loader names releases that it downloads itself (tiny stand-ins
  here), and Load Lotus-2 names no file (it downloads its LoRAs into models/lotus/Lotus-2);
* no error or warning toast (the frontend validates the file against its workflow schema on load);
* every node is a registered type (no missing/placeholder node), the Lotus nodes carry the widgets of
  their schema with the file's values, and the frontend's own ``app.graphToPrompt()`` gives exactly
  the API prompt that tests/workflow_support.py's converter gives (which test_workflows.py runs);
* the template browser (Workflow > Browse Templates) lists the nine under the category "Lotus Depth",
  each card titled by its readable file name (e.g. "Lotus Depth - image to depth map") with its
  thumbnail, fetched with the name URL-encoded; a workflow opened from its card is the file, and keeps
  its title and description (``extra.info``);
* for the basic workflow: queued with ``app.queuePrompt(0)`` as saved (768 processing resolution, on
  tiny random Lotus networks), the result reaches the Preview Image node as a loaded <img>.

Screenshots go to a folder printed in the terminal summary (LOTUS_SCREENSHOT_DIR sets it).
LOTUS_UPDATE_THUMBNAILS=1 also writes them, cropped to the graph, as the thumbnails workflows/<name>.jpg.
The template browser's screenshot is template_browser.png there.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest
from comfy_server import ComfyServer, history_error, history_status
from PIL import Image
from workflow_support import (
    BASIC,
    PACK_NODES,
    THIRD_PARTY_MODELS,
    WORKFLOW_NAMES,
    WORKFLOWS_DIR,
    load_workflow,
    prepare_server,
    ui_to_api,
    widget_values,
    workflow_info,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1000}
SETTINGS = {
    "Comfy.TutorialCompleted": True,  # else a first visit opens the template browser
    "Comfy.Minimap.Visible": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,  # draw node text at any zoom (screenshots)
}
EXPECTED_WIDGETS = {
    "LotusDepth_LoadModel": ["checkpoint", "vae", "precision", "quantity", "backend"],
    "LotusDepth_Depth": ["processing_resolution", "seed", "control_after_generate", "noise", "chunk_size"],
    "LotusDepth_Normals": ["processing_resolution", "seed", "control_after_generate", "noise", "chunk_size"],
    "LotusDepth_DepthTiled": ["processing_resolution", "seed", "control_after_generate", "chunk_size", "tile_size",
                              "overlap"],
    "LotusDepth_SaveDepth": ["quantity", "format", "filename_prefix"],
    "LotusDepth_LoadLotus2": ["task"],
    "LotusDepth_Lotus2Depth": ["processing_resolution", "sharpener_steps", "seed", "control_after_generate"],
    "LotusDepth_Lotus2Normals": ["processing_resolution", "sharpener_steps", "seed", "control_after_generate"],
}
THIRD_PARTY_FILES = {name: folder for folder, names in THIRD_PARTY_MODELS.items() for name in names}


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MISSING = None
if not CHROMIUM.is_file():
    MISSING = (f"{CHROMIUM} is missing: install Debian's chromium package "
               "(apt-get install -y --no-install-recommends chromium)")
else:
    try:
        from playwright import sync_api
    except ImportError:
        MISSING = "playwright is not installed (requirements-dev.txt)"
if MISSING and not IN_CI:  # in CI (CI=true) the tests fail instead (see the frontend fixture)
    pytest.skip(MISSING, allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if MISSING:
        pytest.fail(f"CI must run the browser test: {MISSING}", pytrace=False)
    srv = ComfyServer(tmp_path_factory.mktemp("comfy_browser"), require_nodes=PACK_NODES)
    srv.prepare()
    prepare_server(srv, third_party_placeholders=False)  # so the frontend reports them missing
    srv.start()
    status, body = srv.request("POST", "/settings", SETTINGS)
    assert status == 200, body
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def screenshots(request, tmp_path_factory) -> Path:
    folder = Path(os.environ.get("LOTUS_SCREENSHOT_DIR") or tmp_path_factory.mktemp("workflow_screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    # past pytest's output capture, so that it shows in every mode
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nworkflow screenshots: {folder}")


class Frontend:
    """One browser page on the server's frontend, with what it reported."""

    def __init__(self, page, server: ComfyServer):
        self.page, self.server = page, server
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    def open(self) -> None:
        # the "Nodes 2.0" banner is dismissed in local storage
        self.page.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        self.page.goto(self.server.url)
        self.page.wait_for_function("() => window.app?.graph && window.app.canvas && window.LiteGraph",
                                    timeout=90_000)
        self.page.wait_for_load_state("networkidle")

    def load_template(self, name: str) -> None:
        """As the template browser does: fetch from the pack's template route (the name put into the URL
        as it is, like the frontend's fetchTemplateJson: the browser encodes the spaces), loadGraphData."""
        self.page.evaluate("""async (name) => {
            const response = await fetch(`/api/workflow_templates/lotus_depth/${name}.json`);
            if (!response.ok) throw new Error(`template ${name}: HTTP ${response.status}`);
            await app.loadGraphData(await response.json(), true, true, name, {openSource: 'template'});
        }""", name)
        self.page.wait_for_timeout(800)  # dialogs, toasts and the first draws

    def dialogs(self) -> list[str]:
        return [d.inner_text() for d in self.page.locator("[role=dialog]").all() if d.is_visible()]

    def close_dialogs(self) -> None:
        for _ in range(3):
            if not self.dialogs():
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(300)
        assert not self.dialogs()

    def toasts(self) -> list[str]:
        return [t.inner_text() for t in self.page.locator(".p-toast-message").all() if t.is_visible()]

    def nodes(self) -> list[dict]:
        return self.page.evaluate("""() => app.graph._nodes.map(n => ({
            id: n.id, type: n.type, registered: !!LiteGraph.registered_node_types[n.type],
            has_errors: !!n.has_errors, size: [n.size[0], n.size[1]],
            widgets: (n.widgets || []).map(w => w.name),
            values: (n.widgets || []).map(w => w.value),
        }))""")

    def graph_to_prompt(self) -> dict:
        return json.loads(self.page.evaluate("async () => JSON.stringify((await app.graphToPrompt()).output)"))

    def screenshot(self, path: Path, graph_only: bool = False) -> None:
        clip = None
        if graph_only:  # the nodes' bounding box on screen, titles included
            clip = self.page.evaluate("""() => {
                const ds = app.canvas.ds, rect = app.canvas.canvas.getBoundingClientRect();
                let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
                const boxes = app.graph._nodes.map(n => [n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT,
                                                          n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
                for (const g of app.graph._groups) {
                    boxes.push([g.pos[0], g.pos[1], g.pos[0] + g.size[0], g.pos[1] + g.size[1]]);
                }
                for (const box of boxes) {
                    const [a, b] = ds.convertOffsetToCanvas([box[0], box[1]]);
                    const [c, d] = ds.convertOffsetToCanvas([box[2], box[3]]);
                    x0 = Math.min(x0, a); y0 = Math.min(y0, b); x1 = Math.max(x1, c); y1 = Math.max(y1, d);
                }
                const m = 16;
                const left = Math.max(rect.left, rect.left + x0 - m), top = Math.max(rect.top, rect.top + y0 - m);
                return {x: left, y: top, width: Math.min(rect.right, rect.left + x1 + m) - left,
                        height: Math.min(rect.bottom, rect.top + y1 + m) - top};
            }""")
        self.page.screenshot(path=str(path), clip=clip)


@pytest.fixture(scope="module")
def frontend(server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            ui = Frontend(page, server)
            ui.open()
            ui.close_dialogs()
            yield ui
        finally:
            browser.close()


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


def write_thumbnail(screenshot: Path, name: str) -> None:
    image = Image.open(screenshot).convert("RGB")
    image.thumbnail((1024, 1024), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=88, optimize=True)
    (WORKFLOWS_DIR / f"{name}.jpg").write_bytes(buffer.getvalue())


def test_frontend_knows_every_model_folder_the_workflows_name(frontend):
    """The missing-models dialog offers a download only into a folder the frontend knows."""
    folders = frontend.page.evaluate("async () => (await (await fetch('/api/experiment/models')).json())"
                                     ".map(f => f.name)")
    named = {m["directory"] for name in WORKFLOW_NAMES for n in load_workflow(name)["nodes"]
             for m in (n.get("properties") or {}).get("models", [])}
    assert named == set(THIRD_PARTY_MODELS) and named <= set(folders), folders


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_loads_cleanly_in_the_frontend(name, frontend, object_info, screenshots):
    workflow = load_workflow(name)
    frontend.page_errors.clear()
    frontend.load_template(name)

    # dialogs: only the missing third-party models, each offered for download
    expected_missing = sorted({f"{THIRD_PARTY_FILES[m['name']]} / {m['name']}"
                               for n in workflow["nodes"] for m in (n.get("properties") or {}).get("models", [])
                               if m["name"] in THIRD_PARTY_FILES})
    dialogs = frontend.dialogs()
    frontend.screenshot(screenshots / f"{name}_loaded.png")
    if expected_missing:
        assert len(dialogs) == 1 and "Missing Models" in dialogs[0], dialogs
        listed = sorted(line.strip() for line in dialogs[0].splitlines() if " / " in line)
        assert listed == expected_missing
        for phrase in ("not allowed", "Invalid directory", "Only allowed suffixes"):
            assert phrase not in dialogs[0], dialogs[0]
        frontend.close_dialogs()
    else:
        assert dialogs == []
    assert frontend.toasts() == []
    assert frontend.page_errors == []

    # nodes: all registered, ours with their widgets and the file's values
    nodes = {n["id"]: n for n in frontend.nodes()}
    assert sorted(nodes) == sorted(n["id"] for n in workflow["nodes"])
    for saved in workflow["nodes"]:
        node = nodes[saved["id"]]
        assert node["registered"] and not node["has_errors"], node
        if saved["type"] in EXPECTED_WIDGETS:
            assert node["widgets"] == EXPECTED_WIDGETS[saved["type"]]
            count = len(saved["widgets_values"])
            assert node["values"][:count] == saved["widgets_values"]
            # widgets added to the node after the file was saved: their defaults (what the converter sends)
            added = dict(zip(node["widgets"][count:], node["values"][count:]))
            defaults = widget_values(saved, object_info[saved["type"]])
            assert added == {name: defaults[name] for name in added}
            assert min(node["size"]) > 50
    assert set(PACK_NODES) & {n["type"] for n in nodes.values()}

    # the frontend's API prompt is the one the execution tests run
    from_frontend = frontend.graph_to_prompt()
    ignored = set()  # inputs the frontend sends that are no input of the node (the server drops them)
    for node in from_frontend.values():
        node.pop("_meta", None)
        schema = object_info[node["class_type"]]["input"]
        for key in [k for k in node["inputs"] if not any(k in schema.get(s, {}) for s in ("required", "optional"))]:
            ignored.add((node["class_type"], key, node["inputs"].pop(key)))
    assert ignored <= {("LoadVideo", "video-preview", "")}  # the frontend's video preview widget
    assert from_frontend == ui_to_api(workflow, object_info)

    shot = screenshots / f"{name}.png"
    frontend.screenshot(shot, graph_only=True)
    if os.environ.get("LOTUS_UPDATE_THUMBNAILS") == "1":
        write_thumbnail(shot, name)


def test_template_browser_lists_the_workflows_under_lotus_depth(frontend, screenshots):
    """Workflow > Browse Templates as a user opens it. The pack's category reads "Lotus Depth" (from the
    pack's locales/en/main.json; without it, the folder name lotus_depth), and shows the nine workflows
    with their thumbnails. Their cards: this frontend (1.32.9) titles a custom node's template by its file
    name and describes it by that name with '-' and '_' as spaces (workflowTemplatesStore: {name, title:
    name, description: name}; it reads no index.json and nothing in the file), so the files carry
    readable names with spaces, which the cards show as their titles. The frontend puts a name into the
    thumbnail and template URLs as it is; the browser sends the spaces as %20 and the server (aiohttp's
    static route) decodes them: every thumbnail and the workflow opened from its card arrive (HTTP 200).
    Opened from its card, the workflow is the file, and keeps its extra.info (title = file name, and the
    description), also when the frontend saves it."""
    page = frontend.page
    frontend.close_dialogs()
    fetched: list[tuple[int, str]] = []

    def on_response(response):
        if "/api/workflow_templates/lotus_depth/" in response.url:
            fetched.append((response.status, response.url.split("/api/workflow_templates/lotus_depth/", 1)[1]))

    page.on("response", on_response)
    try:
        page.evaluate("async () => { await app.extensionManager.command.execute('Comfy.BrowseTemplates'); }")
        dialog = page.locator(".workflow-template-selector-dialog")
        dialog.wait_for(state="visible", timeout=30_000)
        assert dialog.get_by_text("lotus_depth", exact=True).count() == 0
        dialog.get_by_text("Lotus Depth", exact=True).first.click()  # the category, in the left panel
        cards = dialog.locator("[data-testid^='template-workflow-']")
        cards.first.wait_for(state="visible", timeout=30_000)
        # The grid loads a thumbnail once its card has been in view (the nine do not fit in the dialog):
        # each card is scrolled to and read when its picture has loaded.
        shown = []
        for index in range(cards.count()):
            card = cards.nth(index)
            card.evaluate("c => c.scrollIntoView({block: 'center'})")
            card.locator("img").first.wait_for(state="attached", timeout=30_000)
            page.wait_for_function("c => c.querySelector('img').complete && c.querySelector('img').naturalWidth > 0",
                                   arg=card.element_handle(), timeout=30_000)
            shown.append(card.evaluate("""c => ({
                name: c.dataset.testid.replace('template-workflow-', ''),
                title: c.querySelector('h3').textContent.trim(),
                description: c.querySelector('p').textContent.trim(),
                thumbnail: c.querySelector('img').naturalWidth,
            })"""))
        cards.first.evaluate("c => c.scrollIntoView({block: 'center'})")
        assert dialog.get_by_text("Lotus Depth", exact=True).count() == 2  # the category and the panel's heading
        page.wait_for_timeout(300)
        page.screenshot(path=str(screenshots / "template_browser.png"))
        assert sorted(card["name"] for card in shown) == sorted(WORKFLOW_NAMES)
        for card in shown:
            assert card["thumbnail"] >= 256, card
            # the readable file name is the card's title; the description is that name with '-' as spaces
            assert card["title"] == card["name"] == workflow_info(card["name"])["title"], card
            assert card["description"] == card["name"].replace("-", " ").replace("_", " "), card
        for name in WORKFLOW_NAMES:  # e.g. 'Lotus Depth - image to depth map' as a card title
            assert dialog.locator("h3", has_text=name).count() == 1, name
        thumbnails = {url for status, url in fetched if url.endswith(".jpg") and status == 200}
        assert thumbnails == {f"{urllib.parse.quote(name)}.jpg" for name in WORKFLOW_NAMES}, fetched
        assert all(" " not in url for _, url in fetched), fetched

        cards.filter(has=page.locator("h3", has_text=BASIC)).click()
        dialog.wait_for(state="hidden", timeout=30_000)
        page.wait_for_timeout(500)
    finally:
        page.remove_listener("response", on_response)
    assert (200, f"{urllib.parse.quote(BASIC)}.json") in fetched, fetched
    assert frontend.dialogs() == [] and frontend.toasts() == []
    saved = load_workflow(BASIC)
    assert sorted(n["id"] for n in frontend.nodes()) == sorted(n["id"] for n in saved["nodes"])
    loaded = page.evaluate("""async () => ({
        graph: app.graph.extra.info,
        saved: app.graph.serialize().extra.info,
        queued: (await app.graphToPrompt()).workflow.extra.info,
    })""")
    assert loaded == {key: workflow_info(BASIC) for key in ("graph", "saved", "queued")}
    assert loaded["graph"]["title"] == BASIC


def test_basic_workflow_queued_from_the_frontend_shows_its_result(frontend, server, screenshots):
    frontend.load_template(BASIC)
    frontend.close_dialogs()
    before = set(server.history())
    frontend.page.evaluate("async () => { await app.queuePrompt(0); }")
    deadline = time.monotonic() + 30
    while True:  # the prompt the frontend queued: in the queue or already in the history
        state = server.queue_state()
        queued = {item[1] for item in state["queue_running"] + state["queue_pending"]}
        new = queued | (set(server.history()) - before)
        if new:
            [prompt_id] = new
            break
        assert time.monotonic() < deadline, "the frontend queued nothing"
        time.sleep(0.1)
    entry = server.wait(prompt_id, timeout=300)
    assert history_status(entry) == "success", history_error(entry)

    preview_id = next(n["id"] for n in load_workflow(BASIC)["nodes"] if n["type"] == "PreviewImage")
    frontend.page.wait_for_function("""(id) => {
        const imgs = app.graph.getNodeById(id)?.imgs;
        return imgs?.length > 0 && imgs[0].complete && imgs[0].naturalWidth > 0;
    }""", arg=preview_id, timeout=60_000)
    size = frontend.page.evaluate("(id) => { const i = app.graph.getNodeById(id).imgs[0];"
                                  " return [i.naturalWidth, i.naturalHeight]; }", preview_id)
    assert size == [56, 40]  # the input's size (tests/workflow_support.py writes example.png)
    assert frontend.toasts() == [] and frontend.dialogs() == []
    frontend.page.wait_for_timeout(300)
    frontend.screenshot(screenshots / f"{BASIC} (result).png")
    shutil.copy(server.output_images(entry, str(preview_id))[0], screenshots / f"{BASIC} (preview).png")
