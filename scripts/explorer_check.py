"""Check the explorer in a real browser: JupyterLab from this environment, notebooks/explore.ipynb
opened in headless Chromium, Run All (it opens on the most significant cell, and shows no "nan"
t-test), one dropdown changed, the plot redrawn.

    .venv/bin/python scripts/explorer_check.py [--study outputs/demo] [--out outputs/explorer_check]

Needs Chromium (Debian: apt-get install -y chromium; or --chromium PATH) and the `playwright` Python
package (the dev extra). --study is the study to explore, relative to the repository or absolute;
without one (or when outputs/demo has no results.csv) a small finished study with known answers
(tests/fake_study.py) is written under --out and typed into the notebook's parameters cell.
JupyterLab runs token-less on a free port of 127.0.0.1 with autosave off, and the notebook is
closed without saving: notebooks/explore.ipynb is left as it was (checked at the end), and the
checkpoint folder JupyterLab writes beside it is removed unless it was there before.
Screenshots go to --out. Prints one line per step; exits 1 with the reason when a step fails.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "explore.ipynb"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(port: int, home: Path) -> subprocess.Popen:
    """JupyterLab from this interpreter's environment, token-less, root_dir = the repository, its
    settings (autosave off) and runtime files in `home`."""
    settings = home / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"),
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           "--ServerApp.token=", "--ServerApp.password=", f"--ServerApp.root_dir={REPO}",
           f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
           "--ServerApp.open_browser=False", "--LabApp.expose_app_in_browser=True", "--allow-root"]
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}; see {home / 'lab.log'}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"JupyterLab did not answer on port {port} within 180 s; see {home / 'lab.log'}")


def output_images(page) -> list[str]:
    """A digest of each image in the explorer's output widget, in order."""
    srcs = page.eval_on_selector_all(".jp-OutputArea-output .widget-output img, .jupyter-widgets-output-area img",
                                     "els => els.map(e => e.src)")
    return [hashlib.sha256(s.encode()).hexdigest()[:12] for s in srcs]


def widget_text(page) -> str:
    return page.eval_on_selector(".widget-vbox", "e => e.innerText")


def steps(page, port, study, before, out, timeout_s, t0) -> dict:
    """Open, Run All, change the method dropdown, wait for the redraw; screenshots in `out`."""
    page.goto(f"http://127.0.0.1:{port}/lab/tree/notebooks/explore.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                           "#jp-main-statusbar :text('Idle')", timeout=timeout_s * 1000)
    print(f"opened notebooks/explore.ipynb, kernel idle after {time.time() - t0:.0f} s")
    if study is not None:  # type the study into the parameters cell (the first code cell)
        cell = page.locator(".jp-CodeCell").first
        cell.locator(".cm-content").click()
        page.keyboard.press("Control+a")
        source = "".join(json.loads(before)["cells"][1]["source"]).splitlines()
        source[0] = f"study_dir = {json.dumps(study)}  # set by scripts/explorer_check.py"
        page.keyboard.insert_text("\n".join(source))
        page.keyboard.press("Escape")
        print(f"parameters cell: study_dir = {json.dumps(study)}")
    # Run > Run All Cells, by its command; again until a cell starts ([*] or [1]): a request made
    # before the kernel's connection is ready can be dropped
    started = "[...document.querySelectorAll('.jp-InputPrompt')].some(e => /\\[(\\*|\\d+)\\]/.test(e.innerText))"
    for _ in range(int(timeout_s // 10)):
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        try:
            page.wait_for_function(started, timeout=10_000)
            break
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: ask again
            print("run all: no cell started within 10 s; asking again")
    page.wait_for_selector(".widget-dropdown select")
    page.wait_for_function("document.querySelectorAll('.widget-output img').length > 0")
    time.sleep(1)
    first = output_images(page)
    text1 = widget_text(page)
    selects = page.locator(".widget-dropdown select")
    labels = page.locator(".widget-dropdown label").all_inner_texts()
    values = [selects.nth(i).input_value() for i in range(selects.count())]
    print(f"run all: {selects.count()} dropdowns {dict(zip(labels, values))}, {len(first)} images "
          f"in the output, after {time.time() - t0:.0f} s")
    box = page.locator(".widget-vbox").first
    box.scroll_into_view_if_needed()
    page.screenshot(path=str(out / "explorer_1_run_all.png"))
    box.screenshot(path=str(out / "explorer_1_widget.png"))
    method = selects.nth(labels.index("method")) if "method" in labels else selects.nth(2)
    options = method.locator("option").all_inner_texts()
    new = next(o for o in options if o != method.input_value())
    method.select_option(label=new)
    deadline = time.time() + timeout_s
    second = first
    while time.time() < deadline and (second == first or not second):
        time.sleep(0.5)
        second = output_images(page)
    text2 = widget_text(page)
    box.scroll_into_view_if_needed()
    page.screenshot(path=str(out / "explorer_2_changed.png"))
    box.screenshot(path=str(out / "explorer_2_widget.png"))
    redrawn = bool(second) and second != first
    print(f"method: {values[labels.index('method')] if 'method' in labels else values[2]} -> {new}: "
          f"images {first} -> {second}: {'redrawn' if redrawn else 'NOT redrawn'}")
    shows_nan = "=nan" in text1
    print(f"first choice {dict(zip(labels, values))}: {'a nan t-test shown' if shows_nan else 'no nan shown'}")
    result = {"dropdowns": dict(zip(labels, values)), "changed_to": new, "images_before": first,
              "images_after": second, "redrawn": redrawn, "text_before": text1, "text_after": text2,
              "shows_nan": shows_nan}
    return result  # the notebook is closed with the browser, unsaved: its file stays as it was


def check(study: str | None, out: Path, chromium: str, timeout_s: float = 300) -> dict:
    from playwright.sync_api import sync_playwright

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    before = NOTEBOOK.read_bytes()
    checkpoints = NOTEBOOK.parent / ".ipynb_checkpoints"  # JupyterLab writes one on opening a notebook
    had_checkpoints = checkpoints.exists()
    default = REPO / "outputs" / "demo"
    if study is None and not (default / "results.csv").is_file():
        sys.path.insert(0, str(REPO / "tests"))
        from fake_study import make_study

        shutil.rmtree(out / "study", ignore_errors=True)
        study = os.path.relpath(make_study(out / "study", name="fake", ablation=False), REPO)
        print(f"study: no finished study in {default}; wrote the test study to {REPO / study}")
    else:
        print(f"study: {study or 'outputs/demo (the notebook default)'}")
    home = Path(tempfile.mkdtemp(prefix="explorer_check_"))
    port = free_port()
    lab = start_lab(port, home)
    print(f"jupyterlab: http://127.0.0.1:{port}/lab (root_dir {REPO}), up after {time.time() - t0:.0f} s")
    result = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            failed_shot = out / "explorer_failed.png"
            page.set_default_timeout(timeout_s * 1000)
            try:
                result = steps(page, port, study, before, out, timeout_s, t0)
            except Exception:
                page.screenshot(path=str(failed_shot))
                print(f"screenshot of the failure: {failed_shot}")
                raise
            browser.close()
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
        shutil.rmtree(home, ignore_errors=True)
        if not had_checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
    result["notebook_unchanged"] = NOTEBOOK.read_bytes() == before
    result["seconds"] = round(time.time() - t0, 1)
    print(f"notebooks/explore.ipynb unchanged: {result['notebook_unchanged']}; screenshots in {out}; "
          f"{result['seconds']} s")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", help="study folder to explore (relative to the repository or absolute)")
    ap.add_argument("--out", default=str(REPO / "outputs" / "explorer_check"), help="screenshots go here")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"no Chromium at {args.chromium} (Debian: apt-get install -y chromium)", file=sys.stderr)
        return 1
    try:
        result = check(args.study, Path(args.out), args.chromium)
    except Exception as e:  # noqa: BLE001 - one line naming the failed step
        print(f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        return 1
    ok = result["redrawn"] and result["notebook_unchanged"] and not result["shows_nan"]
    print("OK: the explorer ran and redrew its plot" if ok else "FAILED: see the lines above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
