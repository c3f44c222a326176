"""Grounded-SAM prior: the real SAM and GroundingDINO code paths with random weights, offline.

SAM is the real ``vit_b`` architecture built by :func:`load_sam` with random weights (no checkpoint
exists offline) and run through ``SamPredictor``. GroundingDINO is built from its own SwinT OGC config,
shrunk to one encoder/decoder layer, with a tiny BERT folder created locally by ``transformers``
(config, vocabulary and random weights): nothing is mocked in either model, and no hub is asked.
Random weights make the masks and boxes meaningless, so the tests check shapes, types, the loading of
checkpoints and the fallback policy, not segmentation quality.
"""

import logging
import sys

import numpy as np
import pytest
import torch

from anomalib_ncd.priors import CachedObjectPrior, ObjectPriorError, ObjectPriorSettings, build_object_prior
from anomalib_ncd.priors import grounded_sam as gs


class FixedBoxes:
    """A detector that always returns the same boxes and counts its calls."""

    def __init__(self, boxes):
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.calls = 0

    def detect(self, image, prompt):
        assert image.ndim == 3
        assert image.shape[2] == 3
        assert prompt
        self.calls += 1
        return self.boxes


class FillBoxes:
    def segment(self, image, boxes):
        return gs.boxes_mask(image.shape[:2], boxes)


class EmptyMasks:
    def segment(self, image, boxes):
        return np.zeros(image.shape[:2], dtype=bool)


def _image(shape=(80, 120, 3), seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------- policy, with stand-in models


def test_union_of_the_boxes_masks():
    prior = gs.GroundedSamPrior(FixedBoxes([[0, 0, 10, 10], [20, 30, 40.5, 50]]), FillBoxes(), "bottle")
    result = prior.compute(_image(shape=(80, 120)))  # grey input is made RGB
    assert result.fallback is None
    assert result.mask.dtype == bool
    assert result.mask.shape == (80, 120)
    assert result.mask.sum() == 100 + 21 * 20
    assert prior.no_box_count == 0


def test_no_box_gives_the_whole_image_with_a_warning(caplog):
    detector = FixedBoxes(np.zeros((0, 4)))
    prior = gs.GroundedSamPrior(detector, FillBoxes(), "bottle")
    with caplog.at_level(logging.WARNING, logger="anomalib_ncd.priors"):
        first = prior.compute(_image(), "images/001.png")
        second = prior.mask(_image(seed=1))
    assert first.fallback == gs.NO_BOX
    assert first.mask.all()
    assert second.all()
    assert prior.no_box_count == 2
    assert prior.fallback_counts == {gs.NO_BOX: 2}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "images/001.png" in warnings[0].getMessage()
    assert "whole image" in warnings[0].getMessage()


def test_empty_sam_masks_fall_back_to_the_boxes(caplog):
    prior = gs.GroundedSamPrior(FixedBoxes([[10, 5, 30, 25]]), EmptyMasks(), "bottle")
    with caplog.at_level(logging.WARNING):
        result = prior.compute(_image())
    assert result.fallback == gs.EMPTY_SAM_MASK
    assert result.mask.sum() == 400
    assert "empty" in caplog.text


def test_fingerprint_follows_prompt_and_identity():
    def fingerprint(prompt, **identity):
        return gs.GroundedSamPrior(FixedBoxes([]), FillBoxes(), prompt, identity).fingerprint()

    assert fingerprint("bottle", box_threshold=0.3) == fingerprint("bottle", box_threshold=0.3)
    assert fingerprint("bottle", box_threshold=0.3) != fingerprint("bottle", box_threshold=0.4)
    assert fingerprint("bottle") != fingerprint("screw")
    with pytest.raises(ObjectPriorError, match="prompt"):
        fingerprint(" ")


def test_caption_and_boxes_mask():
    assert gs.caption_of(" Metal Nut ") == "metal nut."
    assert gs.caption_of("bottle.") == "bottle."
    mask = gs.boxes_mask((10, 10), np.array([[2.5, 1, 4, 3], [-5, 8, 20, 30]]))
    assert mask[1:3, 2:4].all()
    assert mask[8:, :].all()
    assert mask.sum() == 4 + 20


# ---------------------------------------------------------------- errors


def test_no_prompt_is_an_error():
    settings = ObjectPriorSettings(kind="grounded_sam")
    with pytest.raises(ObjectPriorError, match="prompt"):
        build_object_prior(settings)


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import fails as if not installed
    settings = ObjectPriorSettings(kind="grounded_sam", prompt="bottle")
    with pytest.raises(ObjectPriorError) as error:
        build_object_prior(settings)
    assert 'pip install "anomalib-ncd[sam]"' in str(error.value)
    assert "segment_anything" in str(error.value)


def test_missing_weight_files_are_all_named(monkeypatch, tmp_path):
    monkeypatch.setattr(gs, "require_sam_extra", lambda: None)
    settings = ObjectPriorSettings(
        kind="grounded_sam",
        prompt="bottle",
        sam_checkpoint=str(tmp_path / "sam_vit_h_4b8939.pth"),
        groundingdino_config=str(tmp_path / "GroundingDINO_SwinT_OGC.py"),
    )
    with pytest.raises(ObjectPriorError) as error:
        build_object_prior(settings)
    message = str(error.value)
    assert "sam_checkpoint file not found" in message
    assert "sam_vit_h_4b8939.pth" in message
    assert "groundingdino_checkpoint is not set" in message
    assert "groundingdino_config file not found" in message
    assert "bert_path is not set" in message


def test_bert_folder_problems(tmp_path):
    assert "not found" in gs.check_bert_folder(tmp_path / "absent")[0]
    problems = gs.check_bert_folder(tmp_path)
    assert len(problems) == 2
    assert "config.json" in problems[0]
    assert "vocab.txt" in problems[1]
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "vocab.txt").write_text("[PAD]\n")
    assert gs.check_bert_folder(tmp_path) == []


def test_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gs.resolve_device("auto").type == "cpu"
    assert gs.resolve_device("cpu").type == "cpu"
    with pytest.raises(ObjectPriorError, match="no CUDA GPU"):
        gs.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert gs.resolve_device("auto").type == "cuda"
    assert gs.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ObjectPriorError, match="only 1 CUDA GPU"):
        gs.resolve_device("cuda:2")


def test_unreadable_weight_files(tmp_path):
    with pytest.raises(ObjectPriorError, match="sam_checkpoint: file not found"):
        gs.load_weights_file(tmp_path / "absent.pth", "sam_checkpoint")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"\x00 not a checkpoint")
    with pytest.raises(ObjectPriorError, match="cannot read"):
        gs.load_weights_file(broken, "sam_checkpoint")


class Plant:
    """Unpickled, it creates a file: what a malicious weights file would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_weight_files_are_read_as_data_never_run(tmp_path):
    import argparse

    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"weight": torch.zeros(2)}, "payload": Plant(marker)}, evil)
    with pytest.raises(ObjectPriorError, match=r"sam_checkpoint: .*needs io.open to load.*could run code"):
        gs.load_weights_file(evil, "sam_checkpoint")
    assert not marker.exists()
    # a training script's arguments beside the weights are plain data
    with_arguments = tmp_path / "with_arguments.pth"
    torch.save({"model": {"weight": torch.ones(2)}, "args": argparse.Namespace(lr=0.1)}, with_arguments)
    content = gs.load_weights_file(with_arguments, "groundingdino_checkpoint")
    assert content["args"].lr == 0.1
    assert torch.equal(content["model"]["weight"], torch.ones(2))


# ---------------------------------------------------------------- the real SAM (random vit_b)


@pytest.fixture(scope="module")
def sam_vit_b():
    pytest.importorskip("segment_anything", reason="segment-anything (sam extra) is not installed")
    torch.manual_seed(0)
    return gs.load_sam("vit_b", None, "cpu")


@pytest.fixture(scope="module")
def sam_checkpoint(sam_vit_b, tmp_path_factory):
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_random.pth"
    torch.save(sam_vit_b.state_dict(), path)
    return path


def test_real_sam_predictor_masks_a_box(sam_vit_b):
    """SamPredictor on a real image with the random vit_b: one set_image (the costly 1024x1024 encoder)."""
    segmenter = gs.SamBoxSegmenter(sam_vit_b)
    image = _image(shape=(72, 130))
    prior = gs.GroundedSamPrior(FixedBoxes([[8, 6, 60, 40], [70, 30, 120, 70]]), segmenter, "bottle")
    result = prior.compute(image)
    assert result.mask.shape == (72, 130)
    assert result.mask.dtype == bool
    assert result.fallback in {None, gs.EMPTY_SAM_MASK}
    assert result.mask.any()


def test_sam_checkpoint_round_trip(sam_vit_b, sam_checkpoint):
    loaded = gs.load_sam("vit_b", sam_checkpoint, "cpu")
    assert not loaded.training
    for (name, expected), (_, actual) in zip(sam_vit_b.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(expected, actual), name


def test_sam_checkpoint_of_another_model_is_an_error(tmp_path):
    pytest.importorskip("segment_anything", reason="segment-anything (sam extra) is not installed")
    path = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(ObjectPriorError, match="does not fit sam_model_type 'vit_b'"):
        gs.load_sam("vit_b", path)


# ---------------------------------------------------------------- the real GroundingDINO (random, tiny)


@pytest.fixture(scope="module")
def groundingdino_model(tiny_groundingdino_config, tiny_bert):
    torch.manual_seed(0)
    return gs.load_groundingdino(tiny_groundingdino_config, tiny_bert, None, "cpu")


@pytest.fixture(scope="module")
def groundingdino_checkpoint(groundingdino_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("gdino") / "groundingdino_random.pth"
    state = {f"module.{key}": value for key, value in groundingdino_model.state_dict().items()}
    torch.save({"model": state}, path)
    return path


def test_groundingdino_detects_boxes(groundingdino_model):
    image = _image(shape=(60, 100, 3))
    detector = gs.GroundingDinoDetector(groundingdino_model, 0.0, 0.0, short_side=96, max_side=160)
    assert tuple(detector.preprocess(image).shape) == (3, 96, 160)
    boxes = detector.detect(image, "bottle")
    assert boxes.dtype == np.float32
    assert boxes.ndim == 2
    assert boxes.shape[1] == 4
    assert 1 <= len(boxes) <= 12
    assert (boxes[:, [0, 2]] >= 0).all()
    assert (boxes[:, [0, 2]] <= 100).all()
    assert (boxes[:, [1, 3]] <= 60).all()
    assert (boxes[:, 2] > boxes[:, 0]).all()
    strict = gs.GroundingDinoDetector(groundingdino_model, 1.0, 1.0, short_side=96, max_side=160)
    assert strict.detect(image, "bottle").shape == (0, 4)


def test_groundingdino_checkpoint_round_trip(
    groundingdino_model, groundingdino_checkpoint, tiny_groundingdino_config, tiny_bert
):
    torch.manual_seed(1)  # other random weights, replaced by the checkpoint's
    loaded = gs.load_groundingdino(tiny_groundingdino_config, tiny_bert, groundingdino_checkpoint, "cpu")
    for name, expected in groundingdino_model.state_dict().items():
        assert torch.equal(expected, loaded.state_dict()[name]), name
    image = _image(shape=(50, 70, 3), seed=4)
    sizes = {"short_side": 64, "max_side": 96}
    original = gs.GroundingDinoDetector(groundingdino_model, 0.0, 0.0, **sizes).detect(image, "screw")
    again = gs.GroundingDinoDetector(loaded, 0.0, 0.0, **sizes).detect(image, "screw")
    np.testing.assert_allclose(original, again, rtol=1e-4, atol=1e-3)


def test_groundingdino_checkpoint_of_another_model_is_an_error(tiny_groundingdino_config, tiny_bert, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"backbone.0.patch_embed.proj.weight": torch.zeros(1)}}, path)
    with pytest.raises(ObjectPriorError, match="does not fit groundingdino_config"):
        gs.load_groundingdino(tiny_groundingdino_config, tiny_bert, path)


def test_build_object_prior_from_local_files(
    sam_checkpoint, groundingdino_checkpoint, tiny_groundingdino_config, tiny_bert, tmp_path, caplog
):
    """The whole build from settings; box_threshold 1 (no box ever) keeps SAM's encoder out of it."""
    settings = ObjectPriorSettings(
        kind="grounded_sam",
        sam_checkpoint=str(sam_checkpoint),
        sam_model_type="vit_b",
        groundingdino_checkpoint=str(groundingdino_checkpoint),
        groundingdino_config=str(tiny_groundingdino_config),
        bert_path=str(tiny_bert),
        box_threshold=1.0,
        cache_dir=str(tmp_path / "cache"),
        device="cpu",
    )
    prior = build_object_prior(settings, category="bottle")
    assert isinstance(prior, CachedObjectPrior)
    assert prior.name == "grounded_sam"
    assert prior.prior.prompt == "bottle"
    assert '"prompt": "bottle"' in prior.fingerprint()
    assert "sam_vit_b_random.pth" in prior.fingerprint()
    detector = prior.prior.detector
    detector.short_side, detector.max_side = 64, 96  # the model's input, small for the test
    calls = []
    detect = detector.detect
    detector.detect = lambda image, prompt: calls.append(prompt) or detect(image, prompt)
    image = _image(shape=(40, 60, 3))
    with caplog.at_level(logging.WARNING):
        first = prior.compute(image, "bottle/000.png")
        second = prior.compute(image, "bottle/000.png")
    assert calls == ["bottle"]  # the second mask came from the cache
    assert first.mask.all()
    assert second.mask.all()
    assert second.fallback == gs.NO_BOX
    assert prior.no_box_count == 2
    assert caplog.text.count("no box for prompt 'bottle'") == 1
    assert caplog.text.count("no_box") == 2


def test_text_encoder_adapter_matches_bert(tiny_bert):
    """The adapter GroundingDINO runs BERT through gives BERT's own output for a padding mask."""
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(tiny_bert), local_files_only=True).eval()
    adapter = gs._TextEncoder(bert).eval()
    input_ids = torch.tensor([[2, 7, 5, 3, 0], [2, 8, 9, 10, 3]])
    padding = (input_ids != 0).long()
    with torch.no_grad():
        expected = bert(input_ids=input_ids, attention_mask=padding).last_hidden_state
        actual = adapter(input_ids=input_ids, attention_mask=padding)["last_hidden_state"]
        square = adapter(input_ids=input_ids, attention_mask=padding[:, None, :].expand(-1, 5, -1))
    torch.testing.assert_close(actual[padding.bool()], expected[padding.bool()])
    torch.testing.assert_close(square["last_hidden_state"], actual)
