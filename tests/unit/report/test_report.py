"""The HTML report: validation, self-contained page, figures, thumbnails and atomic writes."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pandas as pd
import pytest

from anomalib_ncd.report import ReportData, write_report
from anomalib_ncd.report.html import FIGURE_FILES, render_figures
from anomalib_ncd.report.plots import class_sizes_plot, embed_2d, mebin_curves_plot
from anomalib_ncd.report.thumbnails import load_rgb, make_thumbnails, normalise_map

IMG_SRC = re.compile(r"<img\b[^>]*?\bsrc=\"([^\"]*)\"")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def decode_uri(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/")
    payload = base64.b64decode(uri.split(",", 1)[1])
    image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None
    return image


def fields_of(data: ReportData) -> dict:
    return {name: getattr(data, name) for name in data.__dataclass_fields__}


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.update(images=f["images"].drop(columns="confidence")), "images table is missing columns: conf"),
        (lambda f: f.update(regions=f["regions"].drop(columns=["x1", "score"])), "missing columns: x1, score"),
        (lambda f: f["regions"].__setitem__("image_index", [0, 1, 1, 1, 2, 3, 4]), "image_index out of range"),
        (lambda f: f["regions"].__setitem__("image_index", [0, -1, 1, 1, 2, 3, 3]), "image_index out of range"),
        (lambda f: f.update(maps=f["maps"][:3]), r"len\(maps\) = 3 but there are 4 images"),
        (lambda f: f.update(features=f["features"][:5]), "features has 5 rows but there are 7 regions"),
        (lambda f: f.update(features=f["features"][0]), "features must be a 2-D"),
        (lambda f: f["images"].__setitem__("pred_class", [0, 1, 3, 0]), "images.pred_class out of range"),
        (lambda f: f.update(map_range=(1.0, 0.0)), "map_range"),
        (lambda f: f["mebin_curves"][0].pop("thresholds"), r"mebin_curves\[0\] is missing keys: thresholds"),
        (lambda f: f.update(max_per_class=0), "max_per_class"),
    ],
)
def test_invalid_data_is_rejected_with_a_message(report_data, change, message):
    fields = fields_of(report_data)
    fields["images"] = fields["images"].copy()
    fields["regions"] = fields["regions"].copy()
    fields["mebin_curves"] = [dict(curve) for curve in fields["mebin_curves"]]
    change(fields)
    with pytest.raises(ValueError, match=message):
        ReportData(**fields)


def test_tables_get_a_positional_index(make_report_data):
    data = make_report_data()
    shuffled = make_report_data(images=data.images.set_axis([10, 11, 12, 13]))
    assert list(shuffled.images.index) == [0, 1, 2, 3]
    assert shuffled.images_per_class() == [2, 2, 0]
    assert shuffled.regions_per_class() == [4, 3, 0]


# --- the page -------------------------------------------------------------------------------------


def test_report_is_self_contained_with_a_section_per_class(report_data, tmp_path):
    page = write_report(report_data, tmp_path / "report")
    assert page == tmp_path / "report" / "index.html"
    html = page.read_text(encoding="utf-8")
    for index in range(3):
        assert f'id="class-{index}"' in html
    assert html.count('class="gallery"') == 3
    sources = IMG_SRC.findall(html)
    assert len(sources) == 4 * 3 + 3  # three thumbnails per image, three figures (the embedding is an SVG)
    assert html.count("<circle") == len(report_data.regions)  # one clickable point per region
    assert all(src.startswith("data:image/") for src in sources)
    assert html.count("<img") == len(sources)
    external_references = ('src="http', 'src="file', 'href="http', "<link", "<script src", "url(", "fetch(")
    for external in (*external_references, "XMLHttpRequest"):
        assert external not in html
    # the review panel's script and its data are inline: the page needs no server and no network
    assert html.count("<script") == 2
    assert '<script type="application/json" id="review-data">' in html


def test_empty_class_says_so_and_galleries_follow_confidence(report_data, tmp_path):
    html = write_report(report_data, tmp_path / "report").read_text(encoding="utf-8")
    empty = html[html.index('id="class-2"') :]
    assert "This class is empty" in empty[: empty.index("</section>")]
    novel = html[html.index('id="class-1"') : html.index('id="class-2"')]
    assert "showing 2 of 2 images" in novel
    assert novel.index("strip.png") < novel.index("colour.png")  # 0.95 before 0.8


def test_max_per_class_limits_the_gallery(make_report_data, tmp_path):
    html = write_report(make_report_data(max_per_class=1), tmp_path / "report").read_text(encoding="utf-8")
    assert html.count("showing 1 of 2 images") == 2
    assert len(IMG_SRC.findall(html)) == 2 * 3 + 3


def test_text_is_escaped(make_report_data, tmp_path):
    html = write_report(make_report_data(title="<b>run</b> & co"), tmp_path / "report").read_text(encoding="utf-8")
    assert "&lt;b&gt;run&lt;/b&gt; &amp; co" in html
    assert "<b>run</b>" not in html
    assert "a&amp;b &lt;odd&gt;.png" in html
    assert "&#34;/tmp/&lt;root&gt;&#34;" in html  # settings appendix (Jinja2 escapes quotes as &#34;)


def test_ground_truth_metrics_and_confusion_are_shown(report_data, tmp_path):
    html = write_report(report_data, tmp_path / "report").read_text(encoding="utf-8")
    metrics = html[html.index('id="metrics"') : html.index('id="sizes"')]
    for heading in ("NMI", "ARI", "F1", ">image<", ">region<", "Image-level confusion"):
        assert heading in metrics
    assert 'class="diag"' in metrics
    # columns named as the galleries name the classes, each with the true type it was matched to
    mapping = report_data.metrics["image"]["mapping"]
    for cluster, kind in mapping.items():
        if kind is not None:
            assert f"<th>{cluster} = {kind}</th>" in metrics
    assert "<dt>ground truth</dt><dd>crack</dd>" in html
    assert "not available" not in html


def test_without_ground_truth_the_page_says_so(make_report_data, tmp_path):
    data = make_report_data(metrics=None, confusion=None)
    data = make_report_data(images=data.images.drop(columns="defect_type"), metrics=None, confusion=None)
    html = write_report(data, tmp_path / "report").read_text(encoding="utf-8")
    assert "Ground truth was not available" in html
    assert "ground truth</dt>" not in html
    assert not data.has_ground_truth


def test_confusion_is_rebuilt_from_the_metrics(make_report_data, tmp_path):
    html = write_report(make_report_data(confusion=None), tmp_path / "report").read_text(encoding="utf-8")
    assert "Image-level confusion" in html


def test_unreadable_image_gives_a_placeholder_not_a_failure(make_report_data, tmp_path):
    data = make_report_data()
    images = data.images.copy()
    images.loc[1, "image_path"] = str(tmp_path / "gone.png")
    html = write_report(make_report_data(images=images), tmp_path / "report").read_text(encoding="utf-8")
    assert "image not found" in html
    assert len(IMG_SRC.findall(html)) == 3 * 3 + 3


# --- files ----------------------------------------------------------------------------------------


def test_figures_are_written_as_png_and_nothing_else_is_left(report_data, tmp_path):
    folder = tmp_path / "report"
    write_report(report_data, folder)
    write_report(report_data, folder)  # overwriting an earlier report leaves no temporary file either
    assert sorted(path.name for path in folder.iterdir()) == sorted(["index.html", *FIGURE_FILES.values()])
    for name in FIGURE_FILES.values():
        content = (folder / name).read_bytes()
        assert content.startswith(PNG_MAGIC)
        assert cv2.imdecode(np.frombuffer(content, dtype=np.uint8), cv2.IMREAD_COLOR) is not None


def test_figures_that_cannot_be_drawn_are_left_out(make_report_data, tmp_path):
    folder = tmp_path / "report"
    write_report(make_report_data(), folder)
    bare = make_report_data(features=None, mebin_curves=[], class_count=None)
    html = write_report(bare, folder).read_text(encoding="utf-8")
    assert sorted(path.name for path in folder.iterdir()) == ["class_sizes.png", "index.html"]  # stale ones removed
    assert "No embedding" in html
    assert "No MEBin curves" in html
    assert len(IMG_SRC.findall(html)) == 4 * 3 + 1


def test_failed_render_keeps_the_previous_page(make_report_data, tmp_path, monkeypatch):
    folder = tmp_path / "report"
    page = write_report(make_report_data(), folder)
    before = page.read_text(encoding="utf-8")

    def broken(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr("anomalib_ncd.report.html._metrics", broken)
    with pytest.raises(RuntimeError):
        write_report(make_report_data(title="new"), folder)
    assert page.read_text(encoding="utf-8") == before
    assert not [path for path in folder.iterdir() if path.name.startswith(".")]


def test_figures_are_deterministic(report_data):
    assert render_figures(report_data) == render_figures(report_data)
    assert class_sizes_plot([3, 0], [5, 0], ["a", "b"]) == class_sizes_plot([3, 0], [5, 0], ["a", "b"])
    assert mebin_curves_plot([]) is None


@pytest.mark.parametrize("features", [np.zeros((6, 1)), np.ones((6, 3)), np.ones((6, 80)), np.full((6, 3), np.inf)])
def test_identical_features_skip_tsne(features):
    points, method = embed_2d(features)  # sklearn's t-SNE segfaults on identical points
    assert method == "PCA"
    np.testing.assert_array_equal(points, np.zeros((6, 2)))


def test_one_dimensional_features_still_get_tsne():
    points, method = embed_2d(np.arange(6.0)[:, None])
    assert method == "t-SNE"
    assert points.shape == (6, 2)
    assert np.isfinite(points).all()


# --- thumbnails -----------------------------------------------------------------------------------


def test_large_photo_thumbnails_have_the_requested_long_side(tmp_path):
    path = tmp_path / "photo.jpg"
    assert cv2.imwrite(str(path), np.full((2000, 3000, 3), 120, dtype=np.uint8))
    regions = pd.DataFrame(
        {"x0": [100, 0], "y0": [200, 0], "x1": [1100, 3000], "y1": [700, 2000], "pred_class": [1, 0]}
    )
    regions["whole_image"] = [False, True]
    thumbs = make_thumbnails(path, np.random.default_rng(0).random((64, 96)), regions, (0.0, 1.0), 128)
    assert decode_uri(thumbs.boxes).shape == (85, 128, 3)
    assert decode_uri(thumbs.overlay).shape == (85, 128, 3)
    assert decode_uri(thumbs.crop).shape == (64, 128, 3)  # the 1000x500 region
    assert not thumbs.crop_is_whole_image


def test_strip_and_grey_images(tmp_path):
    strip = tmp_path / "strip.png"
    grey = tmp_path / "grey.png"
    assert cv2.imwrite(str(strip), np.zeros((630, 100), dtype=np.uint8))
    assert cv2.imwrite(str(grey), np.zeros((40, 300), dtype=np.uint8))
    assert load_rgb(grey).shape == (40, 300, 3)
    whole = pd.DataFrame({"x0": [0], "y0": [0], "x1": [100], "y1": [630], "pred_class": [2], "whole_image": [True]})
    thumbs = make_thumbnails(strip, np.ones((10, 10)), whole, (0.0, 0.0), 64)  # a flat map range must not fail
    assert decode_uri(thumbs.boxes).shape == (64, 10, 3)
    assert decode_uri(thumbs.crop).shape == (64, 10, 3)
    assert thumbs.crop_is_whole_image


def test_overlay_normalisation_clips_and_ignores_nan():
    unit = normalise_map(np.array([[np.nan, -1.0, 2.0, 3.0, 9.0]]), (2.0, 4.0))
    np.testing.assert_allclose(unit, [[0.0, 0.0, 0.0, 0.5, 1.0]])


def test_display_names_keep_the_type_folders():
    import numpy as np
    import pandas as pd

    from anomalib_ncd.report import ReportData

    images = pd.DataFrame(
        {
            "image_path": ["/d/MT_Blowhole/Imgs/a.jpg", "/d/MT_Free/Imgs/a.jpg"],
            "pred_class": [0, 1],
            "class_name": ["normal", "novel_1"],
            "confidence": [1.0, 0.5],
            "anomaly_score": [0.1, 0.2],
            "n_regions": [0, 0],
        }
    )
    regions = pd.DataFrame(
        {"region": [0, 1], "image_index": [0, 1], "x0": [0, 0], "y0": [0, 0], "x1": [4, 4], "y1": [4, 4],
         "pred_class": [0, 1], "confidence": [1.0, 0.5], "score": [0.0, 0.1], "whole_image": [True, True]}
    )  # fmt: skip
    data = ReportData("t", images, regions, [np.zeros((4, 4), np.float32)] * 2, (0.0, 1.0), ["normal", "novel_1"])
    assert [data.display_name(i) for i in range(2)] == ["MT_Blowhole/Imgs/a.jpg", "MT_Free/Imgs/a.jpg"]


def test_scores_are_read_against_the_run_and_the_threshold(make_report_data, tmp_path):
    """Raw detector scores get their rank in the run; unknown scores their threshold; the header its facts."""
    data = make_report_data(unknown_threshold=0.25, run_id="synthetic/brick/v3", detector="Patchcore")
    html = write_report(data, tmp_path / "report").read_text(encoding="utf-8")
    assert "(top 33%)" in html  # the highest of three finite anomaly scores
    if "unknown_score" in data.images:
        assert "/ threshold 0.250" in html
    header = html[: html.index("</header>")]
    assert "run synthetic/brick/v3" in header and "detector Patchcore" in header and "written 20" in header
