"""corpus.metrics on hand-made arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from corpus import metrics as M


def test_top1_counts_flipped_samples():
    ref = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    cand = ref.copy()
    cand[1] = [0.2, 0.8]  # one of four flipped
    s = M.top1_agreement(ref, cand)
    assert s.value == pytest.approx(0.75)
    assert s.detail["worst_sample"] == 0.0


def test_top1_single_probability_thresholds_at_half():
    ref = np.array([[0.9], [0.1], [0.55]])
    cand = np.array([[0.8], [0.2], [0.45]])
    assert M.top1_agreement(ref, cand).value == pytest.approx(2 / 3)


def test_top1_per_position_outputs():
    ref = np.zeros((2, 3, 4))
    ref[:, 0] = 1  # class 0 everywhere
    cand = ref.copy()
    cand[0, 2, 1] = 5  # one position of 8 moves to class 2
    assert M.top1_agreement(ref, cand).value == pytest.approx(7 / 8)


def test_box_iou_known_values():
    a = np.array([[0, 0, 2, 2]])
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    np.testing.assert_allclose(M.box_iou(a, b), [[1 / 7, 1.0, 0.0]])


def _yolo(boxes_cls: list[tuple[float, float, float, float, int, float]], anchors: int = 100, classes: int = 80):
    """A raw YOLOv8 output [1, 4 + C, N]: (cx, cy, w, h, class, score) per anchor, the rest empty."""
    x = np.zeros((1, 4 + classes, anchors), dtype=np.float32)
    for i, (cx, cy, w, h, c, s) in enumerate(boxes_cls):
        x[0, :4, i] = [cx, cy, w, h]
        x[0, 4 + c, i] = s
    return x


def test_yolo_raw_output_decodes_and_suppresses_duplicates():
    raw = _yolo([(50, 50, 20, 20, 3, 0.9), (51, 50, 20, 20, 3, 0.8), (10, 10, 4, 4, 7, 0.5), (90, 90, 4, 4, 1, 0.1)])
    [(boxes, scores, classes)] = M.yolo_detections(raw)
    assert sorted(classes.tolist()) == [3, 7]  # the duplicate is suppressed, the 0.1 one is below 0.25
    np.testing.assert_allclose(boxes[np.argmax(scores)], [40, 40, 60, 60])


def test_yolo_transposed_layout_is_the_same():
    raw = _yolo([(50, 50, 20, 20, 3, 0.9), (10, 10, 4, 4, 7, 0.5)])
    a = M.yolo_detections(raw)[0]
    b = M.yolo_detections(raw.transpose(0, 2, 1))[0]
    np.testing.assert_allclose(a[0], b[0])


def test_detection_agreement_on_yolo_raw():
    ref = _yolo([(50, 50, 20, 20, 3, 0.9), (10, 10, 4, 4, 7, 0.5), (80, 20, 10, 10, 2, 0.6)])
    cand = _yolo([(51, 50, 20, 20, 3, 0.85),  # same box, IoU ~0.9
                  (10, 10, 4, 4, 5, 0.5),  # right box, wrong class
                  (80, 40, 10, 10, 2, 0.6)])  # right class, no overlap
    s = M.detection_agreement(ref, cand)
    assert s.detail["matched"] == 1 and s.detail["reference"] == 3 and s.detail["candidate"] == 3
    assert s.value == pytest.approx(1 / 3)
    assert M.detection_agreement(ref, ref).value == 1.0


def test_detection_agreement_counts_spurious_candidates():
    ref = _yolo([(50, 50, 20, 20, 3, 0.9)])
    cand = _yolo([(50, 50, 20, 20, 3, 0.9), (10, 10, 4, 4, 7, 0.5)])
    s = M.detection_agreement(ref, cand)
    assert s.value == pytest.approx(0.5) and s.detail["kept"] == 1.0


def test_connected_components_counts_regions():
    m = np.zeros((8, 10), dtype=bool)
    m[1:3, 1:9] = True  # a long line
    m[5:7, 1:3] = True
    m[5:7, 6:8] = True
    m[7, 9] = True  # a single pixel
    lab, n = M.connected_components(m)
    assert n == 4
    assert len(np.unique(lab[1:3, 1:9])) == 1
    assert lab[5, 1] != lab[5, 6]


def test_connected_components_spiral_converges():
    m = np.zeros((9, 9), dtype=bool)  # a snake that turns back on itself: one component
    m[0, :] = m[:, 8] = m[8, :] = True
    m[2:8, 0] = m[2, :7] = True
    lab, n = M.connected_components(m)
    assert n == 1


def test_prob_map_detection_matches_regions_by_mask_iou():
    ref = np.zeros((1, 1, 20, 20), dtype=np.float32)
    ref[0, 0, 2:6, 2:12] = 0.9
    ref[0, 0, 10:14, 2:12] = 0.8
    cand = ref.copy()
    cand[0, 0, 10:14, 2:12] = 0.25  # the second text line falls below 0.3: lost
    cand[0, 0, 2:6, 10:12] = 0.2  # the first shrinks to 8/10 of its width: IoU 0.8, still kept
    s = M.detection_agreement(ref, cand)
    assert s.detail["reference"] == 2 and s.detail["candidate"] == 1 and s.detail["matched"] == 1
    assert s.value == pytest.approx(0.5)


def test_mask_iou_known_value():
    ref = np.zeros((1, 2, 4, 4))
    ref[0, 1, :2, :] = 1  # class 1 on the top half (8 px), class 0 below
    cand = np.zeros((1, 2, 4, 4))
    cand[0, 1, :1, :] = 1  # class 1 only on the top row (4 px)
    # class 1: 4/8; class 0: 8/12
    assert M.mask_iou(ref, cand).value == pytest.approx((0.5 + 8 / 12) / 2)


def test_cosine_and_rel_l2():
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    cand = np.array([[1.0, 1.0], [0.0, 3.0]])
    assert M.embedding_cosine(ref, cand).value == pytest.approx((1 / np.sqrt(2) + 1) / 2)
    assert M.rel_l2(ref, cand).value == pytest.approx(np.sqrt(2) / np.sqrt(5))
    assert M.rel_l2(ref, ref).value == 0.0


def test_psnr_known_value_and_cap():
    ref = np.zeros((1, 3, 4, 4))
    ref[0, 0, 0, 0] = 1.0  # range [0, 1]: peak 1
    cand = ref + 0.1
    assert M.psnr(ref, cand).value == pytest.approx(20.0)
    assert M.psnr(ref, ref).value == M.PSNR_CAP_DB


def test_ctc_decoding_and_agreement():
    def onehot(seq, c=5):
        return np.eye(c)[seq]

    ref = np.stack([onehot([1, 1, 0, 2, 2, 0, 2]), onehot([3, 0, 3, 3, 0, 0, 4])])
    assert M.ctc_decode(ref) == [(1, 2, 2), (3, 3, 4)]
    cand = ref.copy()
    cand[1] = onehot([3, 0, 3, 3, 0, 0, 0])  # last char lost: 1 error in 3
    s = M.ctc_text_agreement(ref, cand)
    assert s.value == 0.5
    assert s.detail["char_agreement"] == pytest.approx(1 - 1 / 6)


def test_task_metric_dispatch():
    ref = {"a": np.array([[0.0, 1.0]]), "b": np.array([[1.0, 1.0]])}
    cand = {"a": np.array([[1.0, 0.0]]), "b": np.array([[1.0, 2.0]])}
    assert M.task_metric("top1", ref, cand, output="a").value == 0.0
    assert M.task_metric("rel_l2", ref, cand).value == pytest.approx(np.sqrt(2))  # the worst output (a)
    with pytest.raises(ValueError, match="unknown task metric"):
        M.task_metric("bleu", ref, cand)


def test_anchor_head_detection_agreement():
    scores = np.full((1, 6, 1), -5.0)
    boxes = np.zeros((1, 6, 16))
    boxes[0, :, 2:4] = 10.0  # every anchor's box is 10 x 10 around its own offset
    scores[0, [1, 3, 4], 0] = 3.0  # three anchors fire (sigmoid > 0.5)
    ref = {"s": scores, "b": boxes}
    cand = {"s": scores.copy(), "b": boxes.copy()}
    cand["s"][0, 4, 0] = -1.0  # anchor 4 falls below 0.5
    cand["b"][0, 3, 0] = 8.0  # anchor 3's box moves by 8 of 10: IoU 2/18 < 0.5
    assert M.anchor_pairs(ref) == [("s", "b")]
    s = M.task_metric("detection", ref, cand)
    assert s.detail["matched"] == 1 and s.detail["reference"] == 3 and s.detail["candidate"] == 2
    assert s.value == pytest.approx(1 / 3)


def test_report_anchor_table_names_both_placements_and_the_models_below():
    from corpus.report import anchor_tables

    bench = {"tools": ["ours_trt", "ours_ort", "ort_minmax_u8"], "models": [
        {"model": "a", "metric": "top1", "calib": 16, "eval": 8,
         "accuracy": {"ours_trt": 1.0, "ours_ort": 0.75, "ort_minmax_u8": 0.875},
         "rel_l2": {"ours_trt": 0.1, "ours_ort": 0.2, "ort_minmax_u8": 0.3},
         "qdq_nodes": {"ours_trt": 4, "ours_ort": 6, "ort_minmax_u8": 0},
         "shortfall": 0.125, "shortfall_ort": -0.125},
        {"model": "b", "metric": "rel_l2", "error": "no data", "accuracy": {}}]}
    text = "\n".join(anchor_tables(bench))
    assert "| `a` | top1 | 16/8 | 1 | 0.75 | 0.875 (nothing quantized) | +0.125 | -0.125 |" in text
    assert "ONNX Runtime minus the best anchor: mean -0.1250 over 1 models; below the best on 1 (a)." in text
    assert "TensorRT minus the best anchor: mean +0.1250 over 1 models; below the best on 0." in text
    assert "| `b` | rel_l2 | | not run: no data |" in text
    assert "| `a` | 0.1 | 0.2 | 0.3 |" in text


def test_report_cells_keep_the_table_whole():
    from corpus.report import anchor_tables

    bench = {"tools": ["ours_trt"], "models": [
        {"model": "z", "metric": "top1", "accuracy": {"ours_trt": 1.0}},
        {"model": "a", "metric": "top1", "accuracy": {"ours_trt": {"error": "exit 1: x | y"}}}]}
    lines = anchor_tables(bench)
    rows = [ln for ln in lines if ln.startswith("| `")]
    assert rows[0].startswith("| `a`") and rows[1].startswith("| `z`")  # by model name
    assert rows[0].count("|") == rows[1].count("|")  # the error's '|' does not split its cell
