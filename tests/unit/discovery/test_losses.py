"""Discovery losses against plain loop implementations and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anomalib_ncd.discovery.losses import (
    DiscoveryLoss,
    LossWeights,
    correct_pseudo_labels,
    distill_loss,
    info_nce_loss,
    mean_entropy_maximisation,
    pseudo_label_weights,
    sup_con_loss,
    teacher_temperature_schedule,
)

# ----------------------------------------------------------------------------------------------
# Naive references, one sample / one pair at a time.
# ----------------------------------------------------------------------------------------------


def loop_teacher(logits, temperature, n_known, normal_index, weights):
    probs = []
    for row, weight in zip(logits.tolist(), weights, strict=True):
        exps = [math.exp(v / temperature) for v in row]
        for k in range(n_known):
            exps[k] = 0.0
        total = sum(exps)
        q = [e / total for e in exps]
        if normal_index is not None:
            q = [(1 - weight) * v + (weight if k == normal_index else 0.0) for k, v in enumerate(q)]
        probs.append(q)
    return probs


def loop_distill(student, teacher, n_views, t_temp, s_temp=0.1, n_known=0, normal_index=None, weights=None):
    batch = student.shape[0] // n_views
    per_sample = [0.0] * batch if weights is None else [num(w) for w in weights]
    q = loop_teacher(teacher, t_temp, n_known, normal_index, per_sample * n_views)
    terms = []
    for i in range(n_views):
        for j in range(n_views):
            if i == j:
                continue
            total = 0.0
            for b in range(batch):
                row = student[j * batch + b].tolist()
                scaled = [v / s_temp for v in row]
                lse = math.log(sum(math.exp(v) for v in scaled))
                total += -sum(qk * (sk - lse) for qk, sk in zip(q[i * batch + b], scaled, strict=True))
            terms.append(total / batch)
    return sum(terms) / len(terms)


def loop_sup_con(projections, labels, temperature=0.07, base_temperature=0.07):
    n, v, _ = projections.shape
    feats = F.normalize(projections.double(), dim=-1)
    rows = [(feats[b, view], int(labels[b])) for view in range(v) for b in range(n)]
    losses = []
    for a, (anchor, label) in enumerate(rows):
        denom = sum(math.exp(num(anchor @ other) / temperature) for c, (other, _) in enumerate(rows) if c != a)
        pos = [num(anchor @ other) / temperature for c, (other, lab) in enumerate(rows) if c != a and lab == label]
        if not pos:
            continue
        losses.append(-(temperature / base_temperature) * sum(p - math.log(denom) for p in pos) / len(pos))
    return sum(losses) / len(losses)


def num(value):
    """A Python float of a tensor (detached first: no autograd warning) or number."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def cosine_logits(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1


# ----------------------------------------------------------------------------------------------
# Schedule and pseudo-label correction
# ----------------------------------------------------------------------------------------------


def test_schedule_endpoints_and_constant_tail():
    schedule = teacher_temperature_schedule(50, 40, 0.07, 0.04)
    assert schedule.shape == (50,)
    assert schedule[0] == pytest.approx(0.07)
    assert schedule[39] == pytest.approx(0.04)
    np.testing.assert_allclose(schedule[40:], 0.04)
    assert np.all(np.diff(schedule[:40]) < 0)


def test_schedule_without_warmup_and_truncated_warmup():
    np.testing.assert_allclose(teacher_temperature_schedule(5, 0, 0.07, 0.04), [0.04] * 5)
    truncated = teacher_temperature_schedule(3, 10, 0.07, 0.04)
    np.testing.assert_allclose(truncated, np.linspace(0.07, 0.04, 10)[:3])
    assert teacher_temperature_schedule(0, 4).shape == (0,)
    with pytest.raises(ValueError, match="epoch"):
        teacher_temperature_schedule(-1)


def test_pseudo_label_weights_and_clipping():
    scores = torch.tensor([0.0, 0.1, 0.5, 0.7, 1.0, -2.0])
    weights = pseudo_label_weights(scores, threshold=0.5)
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.4, 0.0, 0.0, 0.0, 1.0]))
    assert pseudo_label_weights(scores.double()).dtype == torch.float64


def test_correct_pseudo_labels_weights():
    q = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    corrected = correct_pseudo_labels(q, torch.tensor([0.0, 0.5, 1.0]), normal_index=1)
    torch.testing.assert_close(corrected[0], q[0])
    torch.testing.assert_close(corrected[1], torch.tensor([0.3, 0.65, 0.05]))
    torch.testing.assert_close(corrected[2], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(corrected.sum(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="normal_index"):
        correct_pseudo_labels(q, torch.zeros(3), normal_index=3)
    with pytest.raises(ValueError, match="shape|expected"):
        correct_pseudo_labels(q, torch.zeros(2), normal_index=0)


# ----------------------------------------------------------------------------------------------
# Distillation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_views", [2, 3])
def test_distill_matches_double_loop(n_views):
    student = cosine_logits(n_views * 4, 5, seed=1)
    teacher = cosine_logits(n_views * 4, 5, seed=2)
    loss = distill_loss(student, teacher, n_views, teacher_temperature=0.05)
    assert num(loss) == pytest.approx(loop_distill(student, teacher, n_views, 0.05), rel=1e-10)


def test_distill_known_columns_and_correction_match_loop():
    student = cosine_logits(6, 5, seed=3)
    teacher = cosine_logits(6, 5, seed=4)
    weights = torch.tensor([0.0, 0.3, 0.5], dtype=torch.float64)
    loss = distill_loss(student, teacher, 2, 0.04, n_known=2, normal_index=2, plc_weights=weights)
    expected = loop_distill(student, teacher, 2, 0.04, n_known=2, normal_index=2, weights=weights)
    assert num(loss) == pytest.approx(expected, rel=1e-10)


def test_known_column_zeroing():
    # Teacher puts all its mass on known class 0; once zeroed, the target is novel class 2.
    teacher = torch.tensor([[1.0, -1.0, 0.5, -1.0]] * 4)
    student_good = torch.tensor([[-1.0, -1.0, 1.0, -1.0]] * 4)
    student_known = torch.tensor([[1.0, -1.0, -1.0, -1.0]] * 4)
    with_zeroing = distill_loss(student_good, teacher, 2, 0.01, n_known=2)
    assert num(with_zeroing) < num(distill_loss(student_known, teacher, 2, 0.01, n_known=2))
    assert num(distill_loss(student_known, teacher, 2, 0.01)) < num(distill_loss(student_good, teacher, 2, 0.01))
    with pytest.raises(ValueError, match="n_known"):
        distill_loss(student_good, teacher, 2, 0.04, n_known=4)


def test_distill_teacher_is_detached_and_plc_needs_normal():
    logits = cosine_logits(4, 3, seed=5).requires_grad_()
    loss = distill_loss(logits, logits, 2, 0.04)
    loss.backward()
    grad_shared = logits.grad.clone()
    student = logits.detach().clone().requires_grad_()
    distill_loss(student, logits.detach(), 2, 0.04).backward()
    torch.testing.assert_close(grad_shared, student.grad)
    with pytest.raises(ValueError, match="normal_index"):
        distill_loss(logits, logits, 2, 0.04, plc_weights=torch.zeros(2))
    with pytest.raises(ValueError, match="views"):
        distill_loss(logits, logits, 1, 0.04)
    with pytest.raises(ValueError, match="views"):
        distill_loss(logits[:3], logits[:3], 2, 0.04)


def test_distill_empty_batch_is_zero_with_graph():
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = distill_loss(empty, empty, 2, 0.04)
    assert num(loss.detach()) == 0.0
    loss.backward()


# ----------------------------------------------------------------------------------------------
# Mean-entropy maximisation
# ----------------------------------------------------------------------------------------------


def test_memax_uniform_and_one_hot():
    assert num(mean_entropy_maximisation(torch.zeros(3, 5))) == pytest.approx(0.0, abs=1e-6)
    balanced = torch.eye(4) * 10  # every class predicted once: uniform mean
    assert num(mean_entropy_maximisation(balanced, 0.01)) == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.tensor([[1.0, -1.0, -1.0, -1.0]] * 3)
    assert num(mean_entropy_maximisation(collapsed, 0.001)) == pytest.approx(math.log(4), abs=1e-6)


def test_memax_matches_formula_and_is_nonnegative():
    logits = cosine_logits(7, 6, seed=6)
    p_bar = torch.softmax(logits / 0.1, dim=1).mean(dim=0).tolist()
    expected = sum(p * math.log(p) for p in p_bar) + math.log(6)
    assert num(mean_entropy_maximisation(logits)) == pytest.approx(expected, rel=1e-10)
    assert expected >= 0


def test_memax_gradient_finite_at_underflow():
    logits = torch.tensor([[1.0, -1.0, -1.0]] * 2, requires_grad=True)
    loss = mean_entropy_maximisation(logits, 0.001)  # other classes underflow to exactly 0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


# ----------------------------------------------------------------------------------------------
# InfoNCE
# ----------------------------------------------------------------------------------------------


def test_info_nce_two_samples_two_views_by_hand():
    # rows: sample0 view0, sample1 view0, sample0 view1, sample1 view1
    projections = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0], [-2.0, 0.0]], dtype=torch.float64)
    unit = F.normalize(projections, dim=1)
    sim = (unit @ unit.T).tolist()
    positive = {0: 2, 1: 3, 2: 0, 3: 1}
    expected = 0.0
    for a in range(4):
        denom = sum(math.exp(sim[a][c] / 0.5) for c in range(4) if c != a)
        expected += -(sim[a][positive[a]] / 0.5 - math.log(denom))
    expected /= 4
    assert num(info_nce_loss(projections, 2, temperature=0.5)) == pytest.approx(expected, rel=1e-12)


def test_info_nce_matches_simgcd_cross_entropy_form():
    projections = cosine_logits(10, 8, seed=7)
    batch = 5
    unit = F.normalize(projections, dim=1)
    sim = unit @ unit.T
    mask = ~torch.eye(10, dtype=torch.bool)
    sample = torch.arange(10) % batch
    same = (sample[:, None] == sample[None, :])[mask].view(10, -1)
    sim = sim[mask].view(10, -1)
    logits = torch.cat([sim[same].view(10, -1), sim[~same].view(10, -1)], dim=1)
    expected = F.cross_entropy(logits, torch.zeros(10, dtype=torch.long))
    torch.testing.assert_close(info_nce_loss(projections, 2), expected)


def test_info_nce_three_views_loop():
    projections = cosine_logits(9, 4, seed=8)
    unit = F.normalize(projections, dim=1)
    sim = (unit @ unit.T).tolist()
    terms = []
    for a in range(9):
        denom = sum(math.exp(sim[a][c]) for c in range(9) if c != a)
        terms += [-(sim[a][p] - math.log(denom)) for p in range(9) if p != a and p % 3 == a % 3]
    assert num(info_nce_loss(projections, 3)) == pytest.approx(sum(terms) / len(terms), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# SupCon
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [[0, 1, 0, 2, 1], [3, 3, 3, 3, 3], [0, 1, 2, 3, 4]])
def test_sup_con_matches_loop(labels):
    projections = cosine_logits(5, 2, 6, seed=9)
    labels = torch.tensor(labels)
    assert num(sup_con_loss(projections, labels)) == pytest.approx(loop_sup_con(projections, labels), rel=1e-9)


def test_sup_con_excludes_anchors_without_positive():
    projections = cosine_logits(4, 1, 3, seed=10)  # one view: singleton classes have no positive
    labels = torch.tensor([0, 0, 1, 2])
    loss = sup_con_loss(projections, labels, temperature=0.5, base_temperature=0.07)
    assert torch.isfinite(loss)
    assert num(loss) == pytest.approx(loop_sup_con(projections, labels, 0.5, 0.07), rel=1e-9)
    alone = cosine_logits(3, 1, 3, seed=11).requires_grad_()
    zero = sup_con_loss(alone, torch.tensor([0, 1, 2]))
    assert num(zero.detach()) == 0.0
    zero.backward()
    assert torch.isfinite(alone.grad).all()


def test_sup_con_empty_batch():
    assert num(sup_con_loss(torch.zeros(0, 2, 4), torch.zeros(0, dtype=torch.long))) == 0.0


# ----------------------------------------------------------------------------------------------
# DiscoveryLoss
# ----------------------------------------------------------------------------------------------


def make_batch(labels, n_heads=3, n_classes=5, dim=8, seed=0, views=2):
    batch = len(labels)
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.rand(n_heads, views * batch, n_classes, generator=generator) * 2 - 1).requires_grad_()
    projections = torch.randn(views * batch, dim, generator=generator).requires_grad_()
    scores = torch.rand(batch, generator=generator)
    return logits, projections, torch.tensor(labels), scores


def test_discovery_loss_combines_parts_as_in_paper():
    criterion = DiscoveryLoss(n_known=2, n_classes=5, normal_index=2)
    logits, projections, labels, scores = make_batch([0, 1, -1, -1, 1, -1])
    total, parts = criterion(logits, projections, labels, scores, teacher_temperature=0.05)

    unlabeled = labels < 0
    view_logits = logits.view(3, 2, 6, 5)
    distills, memaxes, ces = [], [], []
    for head in range(3):
        unl = view_logits[head][:, unlabeled].reshape(-1, 5)
        weights = pseudo_label_weights(scores[unlabeled])
        distills.append(distill_loss(unl, unl, 2, 0.05, n_known=2, normal_index=2, plc_weights=weights))
        memaxes.append(mean_entropy_maximisation(unl))
        lab = view_logits[head][:, ~unlabeled].reshape(-1, 5)
        ces.append(F.cross_entropy(lab / 0.1, labels[~unlabeled].repeat(2)))
        assert num(parts[f"cluster_head_{head}"]) == pytest.approx(num(distills[-1] + 4 * memaxes[-1]), rel=1e-6)
    distill = sum(distills) / 3
    memax = sum(memaxes) / 3
    ce = sum(ces) / 3
    info = info_nce_loss(projections, 2)
    sup = sup_con_loss(projections.view(2, 6, -1)[:, ~unlabeled].transpose(0, 1), labels[~unlabeled])
    expected = 0.7 * (distill + 4 * memax) + 0.3 * ce + 0.7 * info + 0.3 * sup
    assert num(total) == pytest.approx(num(expected), rel=1e-6)
    for name, value in {"distill": distill, "memax": memax, "ce": ce, "info_nce": info, "sup_con": sup}.items():
        assert num(parts[name]) == pytest.approx(num(value), rel=1e-6)
    assert num(parts["total"]) == num(total)
    assert not any(value.requires_grad for value in parts.values())
    total.backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(projections.grad).all()


@pytest.mark.parametrize("labels", [[0, 1, 1, 0], [-1, -1, -1, -1], [2, -1, -1, -1]])
def test_discovery_loss_edge_batches_have_no_nan(labels):
    criterion = DiscoveryLoss(n_known=2, n_classes=5, normal_index=2)
    logits, projections, labels, scores = make_batch(labels)
    total, parts = criterion(logits, projections, labels, scores, teacher_temperature=0.04)
    assert all(torch.isfinite(value) for value in parts.values())
    total.backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(projections.grad).all()
    if (labels >= 0).all():
        assert num(parts["distill"]) == 0.0 and num(parts["memax"]) == 0.0
    if (labels < 0).all():
        assert num(parts["ce"]) == 0.0 and num(parts["sup_con"]) == 0.0


def test_fully_unsupervised_mode_uses_full_weight():
    logits, projections, labels, scores = make_batch([-1, -1, -1])
    criterion = DiscoveryLoss(n_known=0, n_classes=5, normal_index=0, has_labeled=False)
    total, parts = criterion(logits, projections, labels, scores, teacher_temperature=0.04)
    expected = parts["distill"] + 4 * parts["memax"] + parts["info_nce"]
    assert num(total) == pytest.approx(num(expected), rel=1e-6)
    semi = DiscoveryLoss(n_known=0, n_classes=5, normal_index=0)
    semi_total, _ = semi(logits, projections, labels, scores, teacher_temperature=0.04)
    assert num(semi_total) == pytest.approx(0.7 * num(expected), rel=1e-6)
    with pytest.raises(ValueError, match="has_labeled"):
        criterion(logits, projections, torch.tensor([0, -1, -1]), scores, teacher_temperature=0.04)


def test_plc_only_with_normal_index_and_scores():
    logits, projections, labels, scores = make_batch([-1, -1, -1, 0])
    weights = LossWeights(plc_threshold=1.0)
    with_plc = DiscoveryLoss(1, 5, normal_index=1, weights=weights)
    without_scores, _ = with_plc(logits, projections, labels, None, 0.04)
    no_normal = DiscoveryLoss(1, 5, normal_index=None, weights=weights)
    without_normal, _ = no_normal(logits, projections, labels, scores, 0.04)
    corrected, _ = with_plc(logits, projections, labels, scores, 0.04)
    assert num(without_scores) == pytest.approx(num(without_normal))
    assert num(corrected) != pytest.approx(num(without_scores))


def test_discovery_loss_validation():
    with pytest.raises(ValueError, match="n_known"):
        DiscoveryLoss(5, 5, None)
    with pytest.raises(ValueError, match="normal_index"):
        DiscoveryLoss(1, 5, 7)
    with pytest.raises(ValueError, match="views"):
        DiscoveryLoss(1, 5, None, n_views=1)
    criterion = DiscoveryLoss(1, 5, None)
    logits, projections, labels, scores = make_batch([0, -1])
    with pytest.raises(ValueError, match="labels"):
        criterion(logits, projections, labels[:1], scores, 0.04)
    with pytest.raises(ValueError, match="head_logits"):
        criterion(logits[..., :4], projections, labels, scores, 0.04)
    with pytest.raises(ValueError, match="scores"):
        criterion(logits, projections, labels, scores[:1], 0.04)


def test_discovery_loss_is_deterministic_and_keeps_dtype():
    criterion = DiscoveryLoss(n_known=1, n_classes=5, normal_index=1)
    logits, projections, labels, scores = make_batch([0, -1, -1, 2], seed=3)
    first, _ = criterion(logits, projections, labels, scores, 0.05)
    second, _ = criterion(logits, projections, labels, scores, 0.05)
    assert num(first) == num(second)
    total64, _ = criterion(logits.double(), projections.double(), labels, scores.double(), 0.05)
    assert total64.dtype == torch.float64
    assert num(total64) == pytest.approx(num(first), rel=1e-5)
