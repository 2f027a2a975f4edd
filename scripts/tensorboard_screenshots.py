"""Screenshots of TensorBoard on a runs folder, taken with headless Chromium (docs/tensorboard/*.png).

Starts TensorBoard on ``--logdir`` (default: the demo's runs), opens each dashboard that shows cadence's main
result (return against ASL as scalars and as an image, FAS and the config in HParams, the evaluation curves)
and saves one PNG per view. Needs Chromium (Debian: ``apt-get install chromium``).

    python scripts/tensorboard_screenshots.py --logdir runs/demo --out docs/tensorboard
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

#: file name -> (TensorBoard URL fragment, window size); smoothing off, so curves show the measured points
VIEWS = {
    "fas_return_by_asl_scalars.png": ("#scalars&_smoothingWeight=0&tagFilter=fas%2Freturn_by_asl", "1500,900"),
    "fas_return_vs_asl_image.png": ("#images&tagFilter=return_vs_asl", "1500,1000"),
    "hparams_fas.png": ("#hparams", "2300,600"),
    "eval_returns.png": ("#scalars&_smoothingWeight=0&tagFilter=eval%2F", "1500,1000"),
    "fas_returns_text.png": ("#text&tagFilter=fas%2Freturns", "1500,900"),  # each sweep's table of returns per ASL
}


def wait_for(url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"TensorBoard did not answer at {url} within {seconds:.0f} s") from None
            time.sleep(1.0)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("headless Chromium is needed: apt-get install chromium")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", type=Path, default=Path("runs/demo"), help="runs folder to show")
    parser.add_argument("--out", type=Path, default=Path("docs/tensorboard"), help="where the PNGs go")
    parser.add_argument("--port", type=int, default=6077, help="TensorBoard port (localhost only)")
    args = parser.parse_args()
    if not args.logdir.is_dir():
        raise SystemExit(f"no runs in {args.logdir}: run `make demo` first")
    browser = chromium()
    args.out.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(args.logdir),
                               "--port", str(args.port), "--host", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{args.port}/"
    try:
        wait_for(base)
        for name, (fragment, size) in VIEWS.items():
            path = args.out / name
            subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--window-size={size}", "--virtual-time-budget=20000",
                            f"--screenshot={path.resolve()}", base + fragment],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
            print(f"wrote {path}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
