"""Fetch the MIT 6.S191 lab file `train_face.h5` (CelebA faces + ImageNet non-faces) for full-scale training.

    python -m training.fetch                       # -> data/train_face.h5
    python -m training.fetch --url URL --sha256 HEX --out data/train_face.h5

Downloads to `<out>.part` and resumes from it with an HTTP Range request when run again; checks the size
the server announced, the SHA-256 when given, and that the file has the lab layout, before renaming it
into place. Needs internet access; says so in one line when there is none.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from training.environment import environment
from training.files import sha256_file

CHUNK = 1 << 20


class FetchError(Exception):
    pass


def _total_size(response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    m = re.match(r"bytes \d+-\d+/(\d+)", content_range)
    if m:
        return int(m.group(1))
    length = response.headers.get("Content-Length")
    return int(length) + offset if length is not None else None


def download(url: str, out: Path, sha256: str = "", timeout: float = 30.0, progress: bool = True) -> Path:
    out = Path(out)
    part = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part file already holds everything
            return _finish(part, out, offset, sha256)
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"cannot reach {url} ({reason}): are you offline? The file can also be copied in "
                         f"by hand and used with --source h5 --h5 PATH") from exc
    with response:
        if offset and response.status != 206:  # server ignored the Range header: start over
            offset = 0
        total = _total_size(response, offset)
        mode = "ab" if offset else "wb"
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                         desc=out.name, disable=not progress) as bar:
            while block := response.read(CHUNK):
                f.write(block)
                bar.update(len(block))
    return _finish(part, out, total, sha256)


def _finish(part: Path, out: Path, total: int | None, sha256: str) -> Path:
    size = part.stat().st_size
    if total is not None and size != total:
        raise FetchError(f"download incomplete: {size} of {total} bytes; run the same command again to resume")
    if sha256:
        got = sha256_file(part, CHUNK)
        if got != sha256.lower():
            part.unlink()
            raise FetchError(f"checksum mismatch: got {got}, expected {sha256.lower()}; the partial file was removed")
    from training.data.h5 import DataError, H5Source

    try:
        H5Source(part)
    except DataError as exc:
        raise FetchError(f"downloaded file is not in the lab layout: {exc}") from exc
    os.replace(part, out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.fetch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=environment().data_url, help="where to fetch from (default: FACEDET_DATA_URL, "
                    "else the lab's own address)")
    ap.add_argument("--out", default="data/train_face.h5", help="destination file")
    ap.add_argument("--sha256", default="", help="expected SHA-256 of the file (checked when given)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        path = download(args.url, Path(args.out), args.sha256, args.timeout, not args.no_progress)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"saved {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
