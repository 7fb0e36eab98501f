"""Screenshot a study report's index page in headless Chromium (Debian's `chromium` package).

    python scripts/report_screenshot.py [outputs/demo/report/index.html] [--out report.png] [--height 6000]

Writes a full-width PNG of the page's first `--height` pixels (default: outputs/<study>/report/index.png)
and prints its path. Exit 2 with one line when the page or the browser is missing.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 6000, timeout: int = 120) -> Path:
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        raise FileNotFoundError("no chromium on PATH (apt-get install -y chromium)")
    if not page.is_file():
        raise FileNotFoundError(f"{page}: no such report page (run `mtlstudy report PROFILE` first)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no state, no first-run dialogs
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={out.resolve()}", page.resolve().as_uri()]
        subprocess.run(cmd, check=True, timeout=timeout, capture_output=True)
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot to {out}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("page", nargs="?", default="outputs/demo/report/index.html")
    p.add_argument("--out")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=6000)
    a = p.parse_args(argv)
    page = Path(a.page)
    try:
        print(screenshot(page, Path(a.out) if a.out else page.with_suffix(".png"), a.width, a.height))
    except (FileNotFoundError, RuntimeError) as e:
        print(f"report_screenshot: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
