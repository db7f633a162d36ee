"""Task metrics: how well a converted or quantized model agrees with its FP32 reference on the task.

Every metric takes the reference's and the candidate's output arrays (samples on axis 0) and returns a
:class:`Score` (``value``, whether higher is better, a detail dict). :func:`task_metric` picks one by the name
a corpus manifest gives (``top1``, ``detection``, ``mask_iou``, ``cosine``, ``psnr``, ``ctc_text``, ``rel_l2``).

Detections come from raw YOLO outputs (``[B, 4 + C, N]`` as YOLOv8 exports it, or ``[B, N, 5 + C]`` with an
objectness column as YOLOv5 does), from post-processed rows (``[K, 6]``: x1, y1, x2, y2, score, class) or from
probability maps (``[B, 1, H, W]``: PaddleOCR's DB text detector; regions are the connected components above
0.3, matched by mask IoU). A detection is kept when the candidate has one of the same class with IoU >= 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Score", "METRICS", "top1_agreement", "detection_agreement", "yolo_detections", "prob_map_regions",
           "mask_iou", "embedding_cosine", "psnr", "ctc_decode", "ctc_text_agreement", "rel_l2", "task_metric",
           "box_iou", "connected_components", "anchor_detections",
           "anchor_agreement", "anchor_pairs"]

METRICS = ("top1", "detection", "mask_iou", "cosine", "psnr", "ctc_text", "rel_l2")
PSNR_CAP_DB = 100.0  # identical outputs: report this instead of infinity (JSON has no inf)


@dataclass(frozen=True)
class Score:
    """One task metric's result: ``value`` (higher is better unless ``higher_is_better`` is False)."""

    metric: str
    value: float
    higher_is_better: bool = True
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": float(self.value), "higher_is_better": self.higher_is_better,
                **self.detail}


def _f64(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _same_shape(ref: np.ndarray, cand: np.ndarray, what: str) -> None:
    if ref.shape != cand.shape:
        raise ValueError(f"{what}: reference shape {ref.shape} differs from candidate shape {cand.shape}")


# --- classification ----------------------------------------------------------------------------------


def top1_agreement(ref: Any, cand: Any, *, axis: int = 1) -> Score:
    """Share of samples (and positions, for per-position outputs) whose arg-max class is the same.

    ``axis`` is the class axis (1: ``[B, C]``, ``[B, C, H, W]``); with a single class (a probability per
    sample, as voice-activity detectors give) the decision is ``p >= 0.5``.
    """
    r, c = _f64(ref), _f64(cand)
    _same_shape(r, c, "top1")
    if r.ndim == 1:
        r, c = r[:, None], c[:, None]
    if r.shape[axis] == 1:
        rd, cd = np.squeeze(r >= 0.5, axis=axis), np.squeeze(c >= 0.5, axis=axis)
    else:
        rd, cd = r.argmax(axis=axis), c.argmax(axis=axis)
    same = rd == cd
    per_sample = same.reshape(same.shape[0], -1).mean(axis=1)
    return Score("top1", float(same.mean()), detail={"samples": int(same.shape[0]),
                                                     "worst_sample": float(per_sample.min())})


# --- detection ---------------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` [N, 4] and ``b`` [M, 4] in (x1, y1, x2, y2)."""
    a, b = _f64(a).reshape(-1, 4), _f64(b).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        overlap = box_iou(boxes[i:i + 1], boxes[rest])[0]
        order = rest[(overlap < iou) | (classes[rest] != classes[i])]
    return np.asarray(keep, dtype=np.int64)


def yolo_detections(raw: Any, *, score: float = 0.25, nms_iou: float = 0.45, objectness: bool | None = None
                    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image (boxes x1y1x2y2 [K, 4], scores [K], classes [K]) from a raw YOLO head.

    ``raw``: ``[B, 4 + C, N]`` (YOLOv8: no objectness, the longer axis holds the anchors) or ``[B, N, 4 + C]``;
    ``objectness``: True for YOLOv5's ``[B, N, 5 + C]`` (score = objectness x class score); None guesses False.
    """
    x = _f64(raw)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"a raw YOLO output is [B, 4 + C, N] or [B, N, 4 + C], got shape {x.shape}")
    if x.shape[1] < x.shape[2]:  # [B, 4 + C, N] -> [B, N, 4 + C]
        x = x.transpose(0, 2, 1)
    out = []
    for img in x:
        cx, cy, w, h = img[:, 0], img[:, 1], img[:, 2], img[:, 3]
        cls_scores = img[:, 5:] * img[:, 4:5] if objectness else img[:, 4:]
        cls = cls_scores.argmax(axis=1)
        sc = cls_scores[np.arange(len(cls)), cls]
        m = sc >= score
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)[m]
        sc, cls = sc[m], cls[m]
        keep = _nms(boxes, sc, cls, nms_iou)
        out.append((boxes[keep], sc[keep], cls[keep]))
    return out


def connected_components(mask: Any) -> tuple[np.ndarray, int]:
    """(labels, count) of the 4-connected components of a 2-D boolean mask (labels 1..count, 0 = background)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"connected components need a 2-D mask, got shape {m.shape}")
    h, w = m.shape
    big = h * w + 1
    lab = np.where(m, np.arange(1, h * w + 1).reshape(h, w), big)
    while True:  # propagate the smallest label to 4-neighbours until nothing changes
        prev = lab
        cur = lab.copy()
        cur[1:, :] = np.minimum(cur[1:, :], lab[:-1, :])
        cur[:-1, :] = np.minimum(cur[:-1, :], lab[1:, :])
        cur[:, 1:] = np.minimum(cur[:, 1:], lab[:, :-1])
        cur[:, :-1] = np.minimum(cur[:, :-1], lab[:, 1:])
        lab = np.where(m, cur, big)
        # pointer jumping: a pixel takes the label its label's pixel holds (halves the chain lengths)
        flat = lab.reshape(-1)
        inside = flat < big
        flat[inside] = np.minimum(flat[inside], flat[flat[inside] - 1])
        lab = flat.reshape(h, w)
        if np.array_equal(lab, prev):
            break
    uniq = np.unique(lab[m])
    relabel = np.zeros(big + 1, dtype=np.int64)
    relabel[uniq] = np.arange(1, len(uniq) + 1)
    return np.where(m, relabel[np.where(m, lab, 0)], 0), len(uniq)


def prob_map_regions(prob: Any, *, threshold: float = 0.3, min_pixels: int = 3) -> list[np.ndarray]:
    """Boolean masks of the connected regions above ``threshold`` in a 2-D probability map (DB text detection)."""
    p = _f64(prob)
    p = p.reshape(p.shape[-2:]) if p.ndim > 2 else p
    labels, count = connected_components(p > threshold)
    regions = [labels == i for i in range(1, count + 1)]
    return [r for r in regions if r.sum() >= min_pixels]


def _mask_iou_matrix(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)))
    fa = np.stack([x.reshape(-1) for x in a]).astype(np.float64)
    fb = np.stack([x.reshape(-1) for x in b]).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match(iou: np.ndarray, same_class: np.ndarray, threshold: float) -> int:
    """Greedy one-to-one matching by descending IoU; pairs need IoU >= threshold and the same class."""
    if iou.size == 0:
        return 0
    cand = np.where(same_class & (iou >= threshold), iou, -1.0)
    matched = 0
    used_r, used_c = set(), set()
    for flat in np.argsort(-cand, axis=None, kind="stable"):
        i, j = divmod(int(flat), cand.shape[1])
        if cand[i, j] < 0:
            break
        if i in used_r or j in used_c:
            continue
        used_r.add(i)
        used_c.add(j)
        matched += 1
    return matched


def _detections(x: np.ndarray, kind: str, score: float, threshold: float, objectness: bool | None
                ) -> list[tuple[list[np.ndarray] | np.ndarray, np.ndarray]]:
    """Per image: (boxes [K, 4] or region masks, classes [K])."""
    if kind == "auto":
        if x.ndim == 4 and x.shape[1] == 1:
            kind = "prob_map"
        elif x.ndim == 2 and x.shape[-1] in (6, 7):
            kind = "rows"
        else:
            kind = "yolo"
    if kind == "prob_map":
        maps = x.reshape(x.shape[0], *x.shape[-2:]) if x.ndim >= 3 else x[None]
        out = []
        for m in maps:
            regions = prob_map_regions(m, threshold=threshold)
            out.append((regions, np.zeros(len(regions), dtype=np.int64)))
        return out
    if kind == "rows":  # [K, 6]: x1 y1 x2 y2 score class ([K, 7]: batch index first)
        rows = x[:, 1:] if x.shape[-1] == 7 else x
        rows = rows[rows[:, 4] >= score]
        return [(rows[:, :4], rows[:, 5].astype(np.int64))]
    if kind == "yolo":
        return [(b, c) for b, _s, c in yolo_detections(x, score=score, objectness=objectness)]
    raise ValueError(f"unknown detection output kind '{kind}' (auto, yolo, prob_map, rows)")


def anchor_detections(scores: Any, boxes: Any, *, threshold: float = 0.5, logits: bool | None = None
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image (anchor indices [K], boxes [K, 4]) of an anchor-based head without NMS (SSD, BlazeFace):
    ``scores`` [B, N, 1] and ``boxes`` [B, N, >=4] (cx, cy, w, h offsets against anchor N); an anchor fires when
    its score (a sigmoid of it when ``logits``; None: when any score is outside [0, 1]) reaches ``threshold``."""
    s, b = _f64(scores), _f64(boxes)
    s = s.reshape(s.shape[0], -1)
    if logits is None:
        logits = bool(s.min() < 0 or s.max() > 1)
    p = 1.0 / (1.0 + np.exp(-np.clip(s, -60.0, 60.0))) if logits else s
    out = []
    for pi, bi in zip(p, b):
        idx = np.flatnonzero(pi >= threshold)
        cx, cy, w, h = (bi[idx, k] for k in range(4))
        out.append((idx, np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)))
    return out


def anchor_agreement(ref: Mapping[str, Any], cand: Mapping[str, Any], pairs: list[tuple[str, str]], *,
                     threshold: float = 0.5, iou: float = 0.5) -> Score:
    """Detection agreement of anchor-based heads: a reference detection is kept when the candidate fires on the
    same anchor with a box of IoU >= ``iou``; value = matched / max(reference, candidate) over all pairs."""
    matched = n_ref = n_cand = 0
    worst = 1.0
    for sname, bname in pairs:
        logits = bool(np.min(ref[sname]) < 0 or np.max(ref[sname]) > 1)
        rd = anchor_detections(ref[sname], ref[bname], threshold=threshold, logits=logits)
        cd = anchor_detections(cand[sname], cand[bname], threshold=threshold, logits=logits)
        for (ri, rb), (ci, cb) in zip(rd, cd):
            common, ra, ca = np.intersect1d(ri, ci, return_indices=True)
            ious = np.array([box_iou(rb[a:a + 1], cb[c:c + 1])[0, 0] for a, c in zip(ra, ca)])
            m = int((ious >= iou).sum()) if len(common) else 0
            matched, n_ref, n_cand = matched + m, n_ref + len(ri), n_cand + len(ci)
            worst = min(worst, m / max(len(ri), len(ci)) if max(len(ri), len(ci)) else 1.0)
    denom = max(n_ref, n_cand)
    return Score("detection", matched / denom if denom else 1.0,
                 detail={"matched": matched, "reference": n_ref, "candidate": n_cand,
                         "kept": matched / n_ref if n_ref else 1.0, "worst_image": worst, "kind": "anchors"})


def anchor_pairs(outputs: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(scores, boxes) output pairs of an anchor head: [B, N, 1] beside [B, N, >=4] with the same N."""
    shapes = {k: np.shape(v) for k, v in outputs.items()}
    scores = [k for k, s in shapes.items() if len(s) == 3 and s[2] == 1]
    pairs = []
    for k in scores:
        box = [b for b, s in shapes.items() if len(s) == 3 and s[1] == shapes[k][1] and s[2] >= 4]
        if len(box) == 1:
            pairs.append((k, box[0]))
    return pairs


def detection_agreement(ref: Any, cand: Any, *, kind: str = "auto", iou: float = 0.5, score: float = 0.25,
                        threshold: float = 0.3, objectness: bool | None = None) -> Score:
    """Matched detections / max(reference count, candidate count), over all images (1.0 when both find none).

    A reference detection is matched by a candidate one of the same class with IoU >= ``iou`` (boxes, or masks
    for probability maps thresholded at ``threshold``). Detail: ``kept`` (matched / reference count),
    ``reference`` and ``candidate`` counts, the worst image's agreement.
    """
    r, c = _f64(ref), _f64(cand)
    _same_shape(r, c, "detection")
    rd = _detections(r, kind, score, threshold, objectness)
    cd = _detections(c, kind, score, threshold, objectness)
    matched = n_ref = n_cand = 0
    worst = 1.0
    for (rb, rc), (cb, cc) in zip(rd, cd):
        if isinstance(rb, list):
            m = _match(_mask_iou_matrix(rb, cb), np.ones((len(rb), len(cb)), dtype=bool), iou)
        else:
            m = _match(box_iou(rb, cb), rc[:, None] == cc[None, :], iou)
        matched, n_ref, n_cand = matched + m, n_ref + len(rc), n_cand + len(cc)
        worst = min(worst, m / max(len(rc), len(cc)) if max(len(rc), len(cc)) else 1.0)
    denom = max(n_ref, n_cand)
    return Score("detection", matched / denom if denom else 1.0,
                 detail={"matched": matched, "reference": n_ref, "candidate": n_cand,
                         "kept": matched / n_ref if n_ref else 1.0, "worst_image": worst})


# --- dense outputs -----------------------------------------------------------------------------------


def _masks(x: np.ndarray, axis: int) -> np.ndarray:
    if x.shape[axis] == 1:  # one channel: a logit (threshold 0) or a probability (threshold 0.5)
        t = 0.5 if x.min() >= 0 and x.max() <= 1 else 0.0
        return np.squeeze(x > t, axis=axis).astype(np.int64)
    return x.argmax(axis=axis)


def mask_iou(ref: Any, cand: Any, *, axis: int = 1) -> Score:
    """Mean over samples of the mean IoU over classes present in either label map (class axis ``axis``)."""
    r, c = _f64(ref), _f64(cand)
    _same_shape(r, c, "mask_iou")
    rl, cl = _masks(r, axis), _masks(c, axis)
    per_sample = []
    for a, b in zip(rl, cl):
        ious = []
        for k in np.union1d(np.unique(a), np.unique(b)):
            inter = np.logical_and(a == k, b == k).sum()
            union = np.logical_or(a == k, b == k).sum()
            ious.append(inter / union)
        per_sample.append(float(np.mean(ious)) if ious else 1.0)
    return Score("mask_iou", float(np.mean(per_sample)), detail={"worst_sample": float(np.min(per_sample))})


def embedding_cosine(ref: Any, cand: Any) -> Score:
    """Mean over samples of the cosine similarity of each sample's flattened output."""
    r, c = _f64(ref), _f64(cand)
    _same_shape(r, c, "cosine")
    r, c = r.reshape(r.shape[0], -1) if r.ndim else r.reshape(1, 1), c.reshape(c.shape[0], -1) if c.ndim else c.reshape(1, 1)
    nr, nc = np.linalg.norm(r, axis=1), np.linalg.norm(c, axis=1)
    both_zero = (nr == 0) & (nc == 0)
    cos = np.where(both_zero, 1.0, (r * c).sum(1) / np.where((nr * nc) > 0, nr * nc, np.inf))
    return Score("cosine", float(cos.mean()), detail={"worst_sample": float(cos.min())})


def psnr(ref: Any, cand: Any, *, peak: float | None = None) -> Score:
    """PSNR of the candidate against the reference in dB; ``peak`` defaults to the reference's value range
    (1.0 for images in [0, 1], 255 for [0, 255]). Identical outputs give ``PSNR_CAP_DB``."""
    r, c = _f64(ref), _f64(cand)
    _same_shape(r, c, "psnr")
    if peak is None:
        lo, hi = float(r.min()), float(r.max())
        peak = 255.0 if hi > 1.5 and lo >= 0 else (1.0 if lo >= 0 else hi - lo)
    mse = float(np.mean((r - c) ** 2))
    value = PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10.0 * np.log10(peak * peak / mse))
    return Score("psnr", float(value), detail={"peak": float(peak), "mse": mse})


def ctc_decode(probs: Any, *, blank: int = 0) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of ``[B, T, C]`` scores: arg-max per step, repeats merged, blanks dropped."""
    p = _f64(probs)
    if p.ndim == 2:
        p = p[None]
    best = p.argmax(axis=2)
    out = []
    for seq in best:
        keep = np.ones(len(seq), dtype=bool)
        keep[1:] = seq[1:] != seq[:-1]
        out.append(tuple(int(s) for s in seq[keep] if s != blank))
    return out


def _edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def ctc_text_agreement(ref: Any, cand: Any, *, blank: int = 0) -> Score:
    """Share of samples whose greedy CTC text is identical; detail: character agreement (1 - CER)."""
    r, c = _f64(ref), _f64(cand)
    _same_shape(r, c, "ctc_text")
    rt, ct = ctc_decode(r, blank=blank), ctc_decode(c, blank=blank)
    exact = [a == b for a, b in zip(rt, ct)]
    chars = sum(max(len(a), 1) for a in rt)
    errors = sum(_edit_distance(a, b) for a, b in zip(rt, ct))
    return Score("ctc_text", float(np.mean(exact)), detail={"char_agreement": max(0.0, 1.0 - errors / chars),
                                                             "samples": len(rt)})


def rel_l2(ref: Any, cand: Any) -> Score:
    """||cand - ref|| / ||ref|| over the whole output (lower is better; 0 when identical); outputs whose
    data-dependent length differs are compared zero-padded, as the workbench's compare does."""
    from workbench.compare.metrics import align

    r, c, _ = align(_f64(ref), _f64(cand), "rel_l2")  # a data-dependent length (a decoder's steps) zero-padded
    den = float(np.linalg.norm(r))
    num = float(np.linalg.norm(c - r))
    return Score("rel_l2", num / den if den else (0.0 if num == 0 else float("inf")), higher_is_better=False)


_BY_NAME = {"top1": top1_agreement, "detection": detection_agreement, "mask_iou": mask_iou,
            "cosine": embedding_cosine, "psnr": psnr, "ctc_text": ctc_text_agreement, "rel_l2": rel_l2}


def task_metric(name: str, ref: Mapping[str, Any], cand: Mapping[str, Any], *, output: str | None = None,
                **options: Any) -> Score:
    """The metric ``name`` on one output (``output``; None: the first) of reference and candidate outputs.

    ``rel_l2`` with ``output=None`` is taken over all outputs (the largest one's error)."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown task metric '{name}' (one of {METRICS})")
    if name == "rel_l2" and output is None:
        scores = [rel_l2(ref[k], cand[k]) for k in ref]
        return max(scores, key=lambda s: s.value)
    if name == "detection" and output is None and len(ref) > 1:
        pairs = anchor_pairs(ref)
        if pairs:
            return anchor_agreement(ref, cand, pairs, **options)
    key = output if output is not None else next(iter(ref))
    if key not in ref or key not in cand:
        raise KeyError(f"output '{key}' is not among the outputs {sorted(ref)}")
    return _BY_NAME[name](ref[key], cand[key], **options)
