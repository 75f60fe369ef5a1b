"""COCO instance annotations -> YOLO person boxes, the `labels/` layout `passkit filter eval --boxes` reads.

One `<out>/<image stem>.txt` per image of the annotation file, a line `0 cx cy w h` (normalised to
the image) per person annotation (`category_id == 1`), and an empty file for an image without one,
so that "no person box" is written down rather than guessed from a missing file. Crowd regions are
kept by default, because person_dev_coco's `has_person` counts them; `--no-crowd` drops them.

The output goes to a folder the user names: the labelled data under ../shared is read-only.

    python scripts/coco_person_boxes.py ../shared/data/person_dev_coco/annotations/instances_merged.json \\
        /tmp/coco_boxes
    passkit filter eval ../shared/data/person_dev_coco --boxes /tmp/coco_boxes
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

PERSON = 1  # COCO's category id of "person"


def convert(annotations: Path, out: Path, crowd: bool = True) -> dict[str, int]:
    """Write the label files; returns counts (images, files with a person, boxes)."""
    d = json.loads(Path(annotations).read_text(encoding="utf-8"))
    images = {im["id"]: im for im in d["images"]}
    boxes: dict[int, list[str]] = defaultdict(list)
    for a in d["annotations"]:
        if a["category_id"] != PERSON or (a.get("iscrowd") and not crowd):
            continue
        im = images.get(a["image_id"])
        if im is None:
            raise ValueError(f"{annotations}: annotation {a.get('id')} names image {a['image_id']}, "
                             "which the file does not list")
        w_img, h_img = float(im["width"]), float(im["height"])
        x, y, w, h = (float(v) for v in a["bbox"])  # COCO: top-left corner, width, height in pixels
        x0, y0 = max(0.0, x), max(0.0, y)
        x1, y1 = min(w_img, x + w), min(h_img, y + h)
        if x1 <= x0 or y1 <= y0:
            continue  # a box that lies outside its image (or has no area) has no size to report
        cx, cy = (x0 + x1) / 2 / w_img, (y0 + y1) / 2 / h_img
        boxes[im["id"]].append(f"0 {cx:.6f} {cy:.6f} {(x1 - x0) / w_img:.6f} {(y1 - y0) / h_img:.6f}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i, im in images.items():
        (out / Path(im["file_name"]).with_suffix(".txt").name).write_text(
            "".join(line + "\n" for line in boxes.get(i, [])), encoding="utf-8")
    return {"images": len(images), "with_person": sum(1 for i in images if boxes.get(i)),
            "boxes": sum(len(v) for v in boxes.values())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("annotations", help="COCO instances JSON, e.g. person_dev_coco/annotations/instances_merged.json")
    ap.add_argument("out", help="folder to write <image stem>.txt files into (created)")
    ap.add_argument("--no-crowd", action="store_true", help="leave out iscrowd person regions")
    args = ap.parse_args(argv)
    counts = convert(Path(args.annotations), Path(args.out), crowd=not args.no_crowd)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
