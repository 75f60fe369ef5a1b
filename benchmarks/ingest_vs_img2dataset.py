"""passkit's crawler vs img2dataset 1.47 on the same URL list, served by nginx on loopback.

    .venv/bin/python benchmarks/ingest_vs_img2dataset.py                   # 3000 images, 3 runs each
    .venv/bin/python benchmarks/ingest_vs_img2dataset.py --images 600 --runs 1 --no-people   # quick look
    .venv/bin/python benchmarks/ingest_vs_img2dataset.py --modes keep_ratio --no-people --no-planar  # RGB path

Setup (done by the script when missing, or do it by hand):
    apt-get update && apt-get install -y nginx-light
    python3.11 -m venv /tmp/i2d-venv && /tmp/i2d-venv/bin/pip install img2dataset==1.47.0
passkit's planar JPEG path needs a libturbojpeg: the system's (apt-get install libturbojpeg0) or the
one in the turbojpeg wheel that `make setup` installs; the script prints which one ran.

The corpus: `--images` JPEGs (deterministic: image i depends on i only) of 640-1600 px on the longer
side, random aspect 3:4..16:9, quality 85-95, cut from photos that scikit-image and scikit-learn
ship (real photo statistics, no people), kept under `--work` between runs.

The contestants, each a full command in fresh processes, wall-clock timed, 2 processes each, paired
so that each pair writes images of the same size:
- img2dataset --resize_mode keep_ratio (what the issue names: the *shorter* side becomes 512) against
  passkit with image.fit: shorter (the same);
- img2dataset --resize_mode keep_ratio_largest (the *longer* side becomes 512) against passkit's
  default, image.fit: longer (the same).
img2dataset: --input_format txt --output_format webdataset --image_size 512 --processes_count 2
--number_sample_per_shard 250 --encode_quality 90 --resize_only_if_bigger True (a fifth of the corpus
has a shorter side under 512: neither tool enlarges it, so the outputs match exactly).
passkit: `passkit build` of a urllist spec: image.max_side 512, jpeg_quality 90, people filter off,
work.workers 2, unit_size 250, robots.txt on, SSRF guard on (127.0.0.1 allowlisted), per-host
limits lifted for the single loopback host (img2dataset has none). Its time includes writing the
release (shards, index, rejected list, attribution, report, manifest).

images/s = images written / wall seconds; medians of `--runs` runs, contestants interleaved.
CPU-ms/image (user + system time of the whole process tree per image) is printed beside it: on a
shared machine it is the steadier number, since wall time also measures the neighbours' load.
One more passkit run with the people filter on (default detectors) is reported unless --no-people.
The last line, `ratio passkit/img2dataset: X.XX`, is the pair the issue names (keep_ratio, shorter
side 512); the keep_ratio_largest pair is printed on the line before.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PASSKIT = Path(sys.executable).with_name("passkit")
CORPUS_VERSION = "1"


def say(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- setup


def ensure_nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if found:
        return found
    cmd = "apt-get update && apt-get install -y nginx-light"
    if os.geteuid() != 0:
        sys.exit(f"nginx is not installed; run as root: {cmd}")
    say(f"installing nginx: {cmd}")
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def ensure_img2dataset(venv: Path) -> Path:
    exe = venv / "bin" / "img2dataset"
    if exe.exists():
        return exe
    py = shutil.which("python3.11") or sys.executable
    say(f"creating {venv} with img2dataset 1.47.0: {py} -m venv {venv} && {venv}/bin/pip install img2dataset==1.47.0")
    subprocess.run([py, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "img2dataset==1.47.0"], check=True)
    return exe


# ----------------------------------------------------------------------------- corpus


def _sources() -> list[np.ndarray]:
    from skimage import data as skd
    from sklearn.datasets import load_sample_image

    out = [load_sample_image("china.jpg"), load_sample_image("flower.jpg")]
    for name in ("chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"):
        try:
            img = getattr(skd, name)()
        except Exception:  # noqa: BLE001 - some need a download; skip those
            continue
        if img.ndim == 3 and img.shape[2] == 3:
            out.append(img)
    return out


_SRC: list[np.ndarray] = []


def _make(args: tuple[int, str]) -> int:
    """Image i: a random crop of a source photo, resized to 640-1600 px, colour-shifted, JPEG."""
    global _SRC
    i, folder = args
    if not _SRC:
        _SRC = _sources()
    rng = np.random.default_rng(i)
    src = _SRC[i % len(_SRC)]
    h0, w0 = src.shape[:2]
    long_side = int(rng.integers(640, 1601))
    aspect = float(rng.uniform(3 / 4, 16 / 9))
    if rng.random() < 0.3:
        aspect = 1 / aspect
    w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    cw = min(w0, int(h0 * w / h))
    ch = min(h0, int(cw * h / w))
    x = int(rng.integers(0, w0 - cw + 1))
    y = int(rng.integers(0, h0 - ch + 1))
    im = Image.fromarray(src[y : y + ch, x : x + cw]).resize((w, h), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    px = np.asarray(im).astype(np.int16) + rng.integers(-20, 21, size=3)
    px += rng.integers(-6, 7, size=px.shape, dtype=np.int16)  # sensor-like noise: realistic file sizes
    buf = io.BytesIO()
    Image.fromarray(px.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=int(rng.integers(85, 96)))
    (Path(folder) / f"{i:06d}.jpg").write_bytes(buf.getvalue())
    return len(buf.getvalue())


def make_corpus(work: Path, n: int) -> Path:
    folder = work / f"corpus-v{CORPUS_VERSION}-{n}"
    stamp = folder / ".complete"
    if stamp.exists():
        return folder
    (folder / "img").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with Pool(os.cpu_count() or 2) as pool:
        sizes = pool.map(_make, [(i, str(folder / "img")) for i in range(n)], chunksize=16)
    stamp.write_text(json.dumps({"images": n, "bytes": sum(sizes)}))
    say(f"corpus: {n} JPEGs, {sum(sizes) / 1e6:.0f} MB, written in {time.monotonic() - t0:.0f}s to {folder}")
    return folder


# ----------------------------------------------------------------------------- nginx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(nginx: str, corpus: Path, run_dir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    prefix = run_dir / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/tmp_body;
    proxy_temp_path {prefix}/tmp_proxy;
    fastcgi_temp_path {prefix}/tmp_fastcgi;
    uwsgi_temp_path {prefix}/tmp_uwsgi;
    scgi_temp_path {prefix}/tmp_scgi;
    types {{ image/jpeg jpg; text/plain txt; }}
    server {{
        listen 127.0.0.1:{port};
        root {corpus};
    }}
}}
""")
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"nginx failed: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
    proc.kill()
    sys.exit("nginx did not start listening within 10 s")


# ----------------------------------------------------------------------------- contestants


def _child_cpu() -> float:
    """CPU seconds used by finished child processes (and their waited-for children) so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_img2dataset(exe: Path, urls: Path, out: Path, mode: str, threads: int) -> tuple[float, int, float]:
    if out.exists():
        shutil.rmtree(out)
    cmd = [str(exe), f"--url_list={urls}", "--input_format=txt", "--output_format=webdataset",
           f"--output_folder={out}", "--image_size=512", f"--resize_mode={mode}", "--processes_count=2",
           f"--thread_count={threads}", "--number_sample_per_shard=250", "--encode_quality=90",
           "--timeout=10", "--retries=0", "--enable_wandb=False", "--distributor=multiprocessing",
           "--resize_only_if_bigger=True"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    t0, c0 = time.monotonic(), _child_cpu()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds, cpu = time.monotonic() - t0, _child_cpu() - c0
    if p.returncode != 0:
        sys.exit(f"img2dataset failed ({p.returncode}):\n{p.stderr[-3000:]}")
    ok = sum(json.loads(f.read_text())["successes"] for f in out.glob("*_stats.json"))
    return seconds, ok, cpu


def passkit_spec(run_dir: Path, urls_csv: Path, people: bool, fit: str = "longer") -> Path:
    spec: dict[str, Any] = {
        "name": "ingestbench", "version": "1.0.0",
        "source": {"kind": "urllist", "paths": [str(urls_csv)]},
        "license": {"policy": "cc-by"},
        "fetch": {"threads": 16, "allow_private": ["127.0.0.1"], "per_host_connections": 64,
                  "per_host_rate": 0, "retries": 0, "read_timeout": 10, "total_timeout": 30},
        "image": {"max_side": 512, "jpeg_quality": 90, "fit": fit},
        "work": {"workers": 2, "unit_size": 250},
        "release": {"shard_max_samples": 1000},
    }
    if not people:
        spec["people"] = {"enabled": False}
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_passkit(run_dir: Path, urls_csv: Path, people: bool, fit: str = "longer") -> tuple[float, int, float, dict[str, Any]]:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    spec = passkit_spec(run_dir, urls_csv, people, fit)
    env = {**os.environ, "COLUMNS": "160"}
    env.setdefault("PASSKIT_MODELS", str(ROOT.parent / "shared" / "models"))
    t0, c0 = time.monotonic(), _child_cpu()
    p = subprocess.run([str(PASSKIT), "build", str(spec)], cwd=run_dir, env=env, capture_output=True, text=True)
    seconds, cpu = time.monotonic() - t0, _child_cpu() - c0
    if p.returncode != 0:
        sys.exit(f"passkit build failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    manifest = json.loads((run_dir / "releases" / "ingestbench-1.0.0" / "manifest.json").read_text())
    stats = json.loads((run_dir / "work" / "ingestbench" / "stats.json").read_text())
    stats["release_kept"] = int(manifest["counts"]["kept"])
    # Images downloaded, checked and written to staging: what img2dataset counts as successes. The
    # release then drops near-duplicates (the corpus is cut from a handful of photos), a step
    # img2dataset does not have; its time is included all the same.
    return seconds, int(stats["kept"]), cpu, stats


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "passkit-ingest-bench")
    ap.add_argument("--i2d-venv", type=Path, default=Path(tempfile.gettempdir()) / "i2d-venv")
    ap.add_argument("--i2d-threads", type=int, default=32, help="img2dataset --thread_count (per process)")
    ap.add_argument("--no-people", action="store_true", help="skip the passkit run with the people filter on")
    ap.add_argument("--no-planar", action="store_true",
                    help="passkit without its planar JPEG path (PASSKIT_TURBOJPEG=off): the RGB path's numbers")
    ap.add_argument("--modes", default="keep_ratio,keep_ratio_largest",
                    help="img2dataset resize modes to run, comma-separated ('' for passkit alone)")
    args = ap.parse_args()
    if args.no_planar:
        os.environ["PASSKIT_TURBOJPEG"] = "off"  # inherited by every passkit run below

    nginx = ensure_nginx()
    i2d = ensure_img2dataset(args.i2d_venv)
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(args.work, args.images)
    run_dir = args.work / "runs"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    proc, port = start_nginx(nginx, corpus, run_dir)
    try:
        base = f"http://127.0.0.1:{port}/img"
        urls = [f"{base}/{i:06d}.jpg" for i in range(args.images)]
        (run_dir / "urls.txt").write_text("\n".join(urls) + "\n")
        rows = ["id,url,license,license_version,license_url,title,creator,landing_url,provider"]
        for i, u in enumerate(urls):
            rows.append(f"b{i:06d},{u},by,2.0,https://creativecommons.org/licenses/by/2.0/,Photo {i},"
                        f"Photographer {i % 17},https://example.org/photos/{i},bench")
        (run_dir / "urls.csv").write_text("\n".join(rows) + "\n")
        for f in sorted((corpus / "img").iterdir()):  # page cache warm for everyone
            f.read_bytes()
        say(f"{args.images} images, nginx on 127.0.0.1:{port}, {os.cpu_count()} CPUs, "
            f"img2dataset at {i2d}, passkit at {PASSKIT}")
        planes = subprocess.run([str(PASSKIT.with_name("python")), "-c",
                                 "from passkit import jpeg_planes; print(jpeg_planes.library())"],
                                capture_output=True, text=True).stdout.strip()
        say(f"passkit's planar JPEG path (people filter off) uses libturbojpeg: {planes}")

        results: dict[str, list[tuple[float, int, float]]] = {
            "i2d_keep_ratio": [], "i2d_keep_ratio_largest": [], "passkit_shorter": [], "passkit": []}
        pairs = {"keep_ratio": "shorter", "keep_ratio_largest": "longer"}
        for r in range(args.runs):
            for mode in [m for m in args.modes.split(",") if m]:
                s, ok, cpu = run_img2dataset(i2d, run_dir / "urls.txt", run_dir / f"i2d-{mode}", mode,
                                             args.i2d_threads)
                results[f"i2d_{mode}"].append((s, ok, cpu))
                say(f"run {r + 1}: img2dataset {mode:<18}  {ok:5d} images in {s:6.1f}s = {ok / s:7.1f} images/s, "
                    f"{1000 * cpu / max(ok, 1):5.1f} CPU-ms/image (load {os.getloadavg()[0]:.1f})")
                fit = pairs[mode]
                s, ok, cpu, stats = run_passkit(run_dir / "passkit", run_dir / "urls.csv", people=False, fit=fit)
                results["passkit" if fit == "longer" else "passkit_shorter"].append((s, ok, cpu))
                say(f"run {r + 1}: passkit fit {fit:<7} (people off) {ok:5d} images in {s:6.1f}s = {ok / s:7.1f} "
                    f"images/s, {1000 * cpu / max(ok, 1):5.1f} CPU-ms/image (load {os.getloadavg()[0]:.1f}) "
                    f"(crawl {stats['seconds']:.1f}s, release {stats['release_seconds']:.1f}s, "
                    f"{stats['release_kept']} in the release after near-duplicate removal)")

        nan = float("nan")
        med = {k: statistics.median(ok / s for s, ok, _ in v) if v else nan for k, v in results.items()}
        cpu_ms = {k: statistics.median(1000 * c / max(ok, 1) for _, ok, c in v) if v else nan
                  for k, v in results.items()}
        people_line = None
        if not args.no_people:
            s, ok, _cpu, stats = run_passkit(run_dir / "passkit-people", run_dir / "urls.csv", people=True)
            people_line = (f"passkit (people filter on, 1 run): {args.images / s:.1f} candidates/s, {ok} passed the "
                           f"people filter in {s:.1f}s (crawl {stats['seconds']:.1f}s)")
        print()
        for label, k in (("img2dataset 1.47 keep_ratio          ", "i2d_keep_ratio"),
                         ("passkit fit shorter, people off      ", "passkit_shorter"),
                         ("img2dataset 1.47 keep_ratio_largest  ", "i2d_keep_ratio_largest"),
                         ("passkit fit longer (default), off    ", "passkit")):
            print(f"{label}: {med[k]:8.1f} images/s, {cpu_ms[k]:5.1f} CPU-ms/image (medians of {args.runs})")
        print(f"CPU-time ratios img2dataset/passkit: keep_ratio {cpu_ms['i2d_keep_ratio'] / cpu_ms['passkit_shorter']:.2f}, "
              f"keep_ratio_largest {cpu_ms['i2d_keep_ratio_largest'] / cpu_ms['passkit']:.2f}")
        if people_line:
            print(people_line)
        print(f"ratio passkit(longer side 512)/img2dataset(keep_ratio_largest): "
              f"{med['passkit'] / med['i2d_keep_ratio_largest']:.2f}")
        print(f"ratio passkit/img2dataset: {med['passkit_shorter'] / med['i2d_keep_ratio']:.2f}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
