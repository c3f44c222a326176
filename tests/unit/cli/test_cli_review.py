"""`anomalib-ncd review` and `export`: a run's classes named, merged and corrected, then reused.

The loop an engineer runs: discover, rename / merge / move in the report (``review.json``), apply it
as a new run version, export the images per class, classify new images into the reviewed names
(``predict``), and discover again with the reviewed classes as known ones (``--known RUN``).
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from anomalib_ncd.cli import main
from anomalib_ncd.results import read_run_state
from tests.unit.cli.test_cli_discover import discover_args


@pytest.fixture(scope="module")
def discovered(tmp_path_factory):
    from anomalib_ncd.data import generate_synthetic_dataset
    from tests.unit.cli.conftest import SHAPE, write_detector_like_maps

    root = tmp_path_factory.mktemp("review")
    table = generate_synthetic_dataset(
        root / "data", "brick", image_size=SHAPE, n_train_good=2, n_test_good=3, n_per_type=3, seed=1
    )
    maps = write_detector_like_maps(table, root / "maps")
    two_regions = _add_a_second_spot(table, maps)
    torch.set_num_threads(1)
    assert main(discover_args(root / "data" / "brick", maps, root / "out")) == 0
    run = (root / "out" / "NCD" / "data" / "brick" / "latest").resolve()
    return {"root": root, "run": run, "maps": maps, "two_regions": two_regions}


def _add_a_second_spot(table, maps):
    """One defect image's map gets a second hot spot far from its defect, so the image has two regions."""
    has_mask = table["mask_path"].fillna("").astype(str) != ""
    row = table[(table["split"] == "test") & has_mask].iloc[0]
    mask = cv2.imread(row["mask_path"], cv2.IMREAD_GRAYSCALE) > 127
    path = maps / row["defect_type"] / f"{Path(row['image_path']).stem}.png"
    anomaly_map = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    height, width = mask.shape
    rows, columns = np.nonzero(mask)
    # the corner farthest from the defect's centre
    y = height // 6 if rows.mean() > height / 2 else 5 * height // 6
    x = width // 6 if columns.mean() > width / 2 else 5 * width // 6
    spot = np.zeros_like(anomaly_map)
    spot[y - 6 : y + 6, x - 6 : x + 6] = 1.0
    spot = cv2.GaussianBlur(spot, (0, 0), 4)
    anomaly_map = np.maximum(anomaly_map, 255.0 * spot / spot.max())
    cv2.imwrite(str(path), np.clip(anomaly_map, 0, 255).astype(np.uint8))
    return str(Path(row["image_path"]).resolve())


def _review_file(run, path, **fields):
    content = {"format": "anomalib-ncd-review", "version": 1, "run": "/".join(run.parts[-3:]), **fields}
    path.write_text(json.dumps(content))
    return path


@pytest.fixture(scope="module")
def reviewed(discovered):
    run, root = discovered["run"], discovered["root"]
    assignments = pd.read_csv(run / "assignments.csv")
    defects = [name for name in assignments["class_name"].unique() if name not in ("normal", "unknown")]
    assert len(defects) >= 2
    renames = {defects[0]: "scratch", defects[1]: "scratch"}  # two classes merged under one name
    renames |= {name: f"kind {number}" for number, name in enumerate(defects[2:])}
    moved = str(assignments.loc[assignments["class_name"] == "normal", "image_path"].iloc[0])
    edits = _review_file(run, root / "review.json", classes=renames, images={moved: "stain"})
    before = {path.name: path.read_bytes() for path in run.glob("*.csv")}
    assert main(["review", "--run", str(run), "--edits", str(edits)]) == 0
    new_run = (run.parent / "latest").resolve()
    return {**discovered, "new_run": new_run, "renames": renames, "moved": moved, "before": before}


def test_review_writes_a_new_version_with_the_reviewed_names(reviewed):
    run, new_run, renames = reviewed["run"], reviewed["new_run"], reviewed["renames"]
    assert new_run.parent == run.parent and new_run != run
    assert {path.name: path.read_bytes() for path in run.glob("*.csv")} == reviewed["before"]  # run untouched
    assert read_run_state(new_run)["command"] == "review"
    images = pd.read_csv(new_run / "assignments.csv")
    original = pd.read_csv(run / "assignments.csv")
    for old, new in zip(original["class_name"], images["class_name"], strict=True):
        if old in renames:
            assert new == renames[old]
    row = images.set_index("image_path").loc[reviewed["moved"]]
    assert (row["class_name"], row["review"], row["model_class_name"]) == ("stain", "moved", "normal")
    summary = json.loads((new_run / "summary.json").read_text())
    assert summary["classes"]["scratch"] == int((images["class_name"] == "scratch").sum())
    assert (new_run / "review.json").is_file()
    assert (new_run / "maps" / "index.csv").is_file()
    page = (new_run / "report" / "index.html").read_text()
    assert 'data-class="scratch"' in page and 'id="review-data"' in page
    metrics = json.loads((new_run / "metrics.json").read_text())  # the reviewed classes against the truth
    assert 0.0 <= metrics["image"]["nmi"] <= 1.0


def test_predict_on_the_reviewed_run_names_classes_as_reviewed(reviewed):
    new_run, root, maps = reviewed["new_run"], reviewed["root"], reviewed["maps"]
    images = root / "data" / "brick" / "test"
    assert main(["predict", "--run", str(new_run), "--images", str(images), "--maps", str(maps)]) == 0
    predictions = pd.read_csv(new_run / "predictions" / "v0" / "predictions.csv")
    names = set(predictions["class_name"])
    assert not names & set(reviewed["renames"])  # no model name the review replaced
    assert "scratch" in names


def test_export_writes_one_folder_per_reviewed_class(reviewed, tmp_path):
    new_run = reviewed["new_run"]
    assert main(["export", "--run", str(new_run), "--to", str(tmp_path / "export")]) == 0
    index = pd.read_csv(tmp_path / "export" / "index.csv")
    images = pd.read_csv(new_run / "assignments.csv")
    assert len(index) == len(images)
    assert (tmp_path / "export" / "scratch").is_dir()
    assert (tmp_path / "export" / "stain" / "000.png").exists() or any((tmp_path / "export" / "stain").iterdir())
    assert all((tmp_path / "export" / file).is_file() for file in index["file"])
    assert main(["export", "--run", str(new_run), "--to", str(tmp_path / "export")]) == 2  # never mixed
    assert main(["export", "--run", str(new_run), "--to", str(tmp_path / "links"), "--link", "true"]) == 0
    linked = pd.read_csv(tmp_path / "links" / "index.csv")["file"]
    assert all((tmp_path / "links" / file).is_symlink() for file in linked)


def test_a_review_naming_what_the_run_lacks_fails_in_one_line(reviewed, capsys):
    run, root = reviewed["run"], reviewed["root"]
    bad = _review_file(run, root / "bad.json", classes={"novel_99": "x"})
    versions = sorted(path.name for path in run.parent.iterdir())
    assert main(["review", "--run", str(run), "--edits", str(bad)]) == 2
    assert "novel_99" in capsys.readouterr().err
    assert sorted(path.name for path in run.parent.iterdir()) == versions  # nothing half-made


def test_discover_with_the_reviewed_run_as_known_classes(reviewed):
    new_run, root, maps = reviewed["new_run"], reviewed["root"], reviewed["maps"]
    args = discover_args(root / "data" / "brick", maps, root / "again", "--known", str(new_run))
    assert main(args) == 0
    again = (root / "again" / "NCD" / "data" / "brick" / "latest").resolve()
    images = pd.read_csv(again / "assignments.csv")
    reviewed_names = set(pd.read_csv(new_run / "regions.csv")["class_name"]) - {"normal", "unknown"}
    assert reviewed_names <= {"scratch", "stain", *(f"kind {n}" for n in range(5))}
    assert set(images["class_name"]) & reviewed_names  # new images fall into the engineer's names


def _browser():
    """Playwright driving Debian's chromium (no browser download); skip locally, fail in CI, without it."""
    import os
    import shutil

    executable = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if executable is None or sync_playwright is None:
        message = "needs playwright and chromium (scripts/install.sh installs both)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return sync_playwright, executable


def test_the_review_loop_in_a_real_browser(discovered, tmp_path):
    """Rename, merge and move in the report with clicks, download review.json, reload, apply it."""
    from tests.unit.cli.conftest import SHAPE

    sync_playwright, executable = _browser()
    run = discovered["run"]
    assignments = pd.read_csv(run / "assignments.csv")
    defects = [name for name in assignments["class_name"].unique() if name not in ("normal", "unknown")]
    first, second = defects[0], defects[1]
    two_regions = discovered["two_regions"]
    candidates = assignments.loc[(assignments["class_name"] == first) & (assignments["image_path"] != two_regions)]
    moved = str(candidates["image_path"].iloc[0])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_context(accept_downloads=True).new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((run / "report" / "index.html").as_uri())
        rename = page.locator(f'section.gallery[data-class="{first}"] input.rename')
        rename.fill("scratch")
        rename.press("Enter")
        rename.blur()
        page.locator(f'section.gallery[data-class="{second}"] select.merge').select_option(first)
        card = page.locator(f'.card[data-image="{moved}"]').first
        card.locator("select.move").select_option("normal")
        region_items = page.locator(f'.card[data-image="{two_regions}"] .regions li[data-region]')
        assert region_items.count() == 2  # an image with two regions lists them, each with its own menu
        region = region_items.first.get_attribute("data-region")
        region_items.first.locator("select.move-region").select_option("unknown")
        assert page.locator("#review-count").text_content() == "4 edits"
        region_point = page.locator(f'#embedding-points circle[data-region="{region}"]')
        region_point.click()  # a region's point flashes its card and its row
        assert page.locator(f'.regions li.flash[data-region="{region}"]').count() >= 1
        assert "moved to normal" in card.text_content()
        point = page.locator(f'#embedding-points circle[data-image="{moved}"]').first
        point.click()  # a point shows its image in its gallery
        assert page.locator(f'.card.flash[data-image="{moved}"]').count() >= 1
        card.locator(".name").click()  # and the reverse: the image's points are outlined
        assert page.locator(f'#embedding-points circle.picked[data-image="{moved}"]').count() >= 1
        card.locator(".frame img").first.click()  # enlarge: the image file itself, at full resolution
        large = "document.querySelector('#lightbox img')"
        page.wait_for_function(f"{large} && {large}.complete && {large}.naturalWidth > 0")
        size = page.evaluate(f"[{large}.naturalWidth, {large}.naturalHeight]")
        assert tuple(size) == (SHAPE[1], SHAPE[0])  # the file's own size (the thumbnail's would be smaller)
        assert page.locator("#lightbox").is_visible()
        page.locator("#lightbox").click()
        assert not page.locator("#lightbox").is_visible()
        page.fill("#review-filter", "no such image")
        assert page.locator(".card:visible").count() == 0
        page.fill("#review-filter", "")
        page.reload()  # the edits survive a reload (local storage)
        assert page.locator("#review-count").text_content() == "4 edits"
        with page.expect_download() as download:
            page.click("#review-download")
        edits = tmp_path / "review.json"
        download.value.save_as(edits)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
        browser.close()
    assert errors == []
    content = json.loads(edits.read_text())
    assert content["classes"] == {first: "scratch", second: "scratch"}
    assert content["images"] == {moved: "normal"}
    assert content["regions"] == {region: "unknown"}
    assert main(["review", "--run", str(run), "--edits", str(edits)]) == 0
    new_run = (run.parent / "latest").resolve()
    images = pd.read_csv(new_run / "assignments.csv").set_index("image_path")
    assert images.loc[moved, "class_name"] == "normal"
    original = assignments.set_index("image_path")["class_name"]
    merged = [path for path, name in original.items() if name in (first, second) and path != moved]
    assert (images.loc[merged, "class_name"] == "scratch").all()
    regions = pd.read_csv(new_run / "regions.csv").set_index("region")
    assert regions.loc[int(region), "class_name"] == "unknown"
    assert regions.loc[int(region), "review"] == "moved"
