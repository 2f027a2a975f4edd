"""Continual metrics against hand-computed matrices, the record's JSON round trip, plots and TensorBoard tags."""

import json

import matplotlib.image
import numpy as np
import pytest

from cadence.evaluation.continual import (
    SUMMARY_KEYS,
    ContinualEvaluation,
    TaskReference,
    average_performance,
    forgetting,
    forgetting_chaudhry,
    forward_transfer,
    forward_transfer_auc,
    hold_best,
    libero_auc,
    libero_fwt,
    libero_fwt_per_task,
    libero_nbt,
    log_continual_row,
    log_continual_summary,
    min_acc,
    normalized_auc,
    stability_gap,
    summary,
    wc_acc,
)
from cadence.evaluation.plots import (
    panel_norms,
    plot_continual_curves,
    plot_continual_heatmap,
    plot_continual_methods,
)

NAN = np.nan

# success after training task i (row) on task j (column)
SUCCESS = np.array([[0.8, 0.1, 0.0],
                    [0.6, 0.9, 0.2],
                    [0.5, 0.7, 1.0]])
# prediction errors (lower is better)
ERRORS = np.array([[1.0, 5.0, 6.0],
                   [2.0, 0.5, 4.0],
                   [3.0, 1.5, 0.2]])

# 4 tasks of 100 steps, one periodic evaluation mid-task (NaN: not yet seen) and one at each task's end
ROWS_4 = [
    (0, 50, [0.4, NAN, NAN, NAN], False), (0, 100, [0.8, 0.1, 0.0, 0.1], True),
    (1, 150, [0.3, 0.5, NAN, NAN], False), (1, 200, [0.7, 0.9, 0.2, 0.1], True),
    (2, 250, [0.6, 0.4, 0.6, NAN], False), (2, 300, [0.65, 0.8, 0.9, 0.3], True),
    (3, 350, [0.2, 0.85, 0.5, 0.5], False), (3, 400, [0.6, 0.75, 0.7, 1.0], True),
]


def record_4(errors: bool = False) -> ContinualEvaluation:
    """The 4-task run; with ``errors`` the values are 1 - success and lower is better."""
    record = ContinualEvaluation(list("ABCD"), "model_error" if errors else "success", higher_is_better=not errors)
    for task, step, values, final in ROWS_4:
        record.add_row(task, 1.0 - np.array(values) if errors else values, step, final=final)
    return record


def test_matrix_metrics_higher_is_better():
    assert average_performance(SUCCESS) == pytest.approx((0.5 + 0.7 + 1.0) / 3)
    np.testing.assert_allclose(forgetting(SUCCESS), [0.8 - 0.5, 0.9 - 0.7])
    np.testing.assert_allclose(forward_transfer(SUCCESS, [0.7, 0.8, 0.6]), [0.1, 0.1, 0.4])
    # min over the later task-end rows: task 0 min(0.6, 0.5), task 1 0.7
    assert min_acc(SUCCESS) == pytest.approx((0.5 + 0.7) / 2)
    assert wc_acc(SUCCESS) == pytest.approx(1.0 / 3 + 2 / 3 * 0.6)
    assert wc_acc(SUCCESS, k=1) == pytest.approx(0.8)
    np.testing.assert_allclose(stability_gap(SUCCESS), [0.3, 0.2])


def test_chaudhry_forgetting_counts_a_gain_made_after_the_task_and_lost():
    # task 0 improves to 0.9 while task 1 trains, then drops to 0.6: Continual World's forgetting (from its own
    # end, 0.5) calls that -0.1, Chaudhry's (from its best earlier value) 0.3
    improved = np.array([[0.5, 0.0, 0.0],
                         [0.9, 0.8, 0.1],
                         [0.6, 0.7, 1.0]])
    np.testing.assert_allclose(forgetting(improved), [-0.1, 0.1])
    np.testing.assert_allclose(forgetting_chaudhry(improved), [0.3, 0.1])
    np.testing.assert_allclose(forgetting_chaudhry(SUCCESS), [0.3, 0.2])
    # errors: the final error minus the smallest earlier one; negated errors agree
    np.testing.assert_allclose(forgetting_chaudhry(ERRORS, higher_is_better=False), [2.0, 1.0])
    np.testing.assert_allclose(forgetting_chaudhry(-ERRORS), forgetting_chaudhry(ERRORS, higher_is_better=False))
    assert forgetting_chaudhry([[0.5]]).size == 0
    with pytest.raises(ValueError, match=r"Chaudhry forgetting needs p\[1, 0\]"):
        forgetting_chaudhry([[0.5, None], [None, 0.4]])


def test_matrix_metrics_lower_is_better():
    kw = {"higher_is_better": False}
    assert average_performance(ERRORS, **kw) == pytest.approx((3.0 + 1.5 + 0.2) / 3)
    np.testing.assert_allclose(forgetting(ERRORS, **kw), [3.0 - 1.0, 1.5 - 0.5])  # error grew: forgot
    np.testing.assert_allclose(forward_transfer(ERRORS, [1.5, 0.4, 0.3], **kw), [0.5, -0.1, 0.1])
    assert min_acc(ERRORS, **kw) == pytest.approx((3.0 + 1.5) / 2)  # the worst is the largest error
    assert wc_acc(ERRORS, **kw) == pytest.approx(0.2 / 3 + 2 / 3 * 2.25)
    np.testing.assert_allclose(stability_gap(ERRORS, **kw), [2.0, 1.0])
    # negated errors with higher-is-better give the same differences
    np.testing.assert_allclose(forgetting(-ERRORS), forgetting(ERRORS, **kw))
    assert libero_nbt(-ERRORS) == pytest.approx(libero_nbt(ERRORS, **kw))


def test_libero_metrics_from_the_matrix():
    assert libero_fwt(SUCCESS) == pytest.approx((0.8 + 0.9 + 1.0) / 3)  # no in-task curves: the diagonal
    # NBT_1 = mean(0.8-0.6, 0.8-0.5), NBT_2 = 0.9-0.7, averaged over the K-1 tasks with later tasks
    assert libero_nbt(SUCCESS) == pytest.approx((0.25 + 0.2) / 2)
    # AUC_k = (FWT_k + later values in column k) / (K-k+1)
    assert libero_auc(SUCCESS) == pytest.approx(((0.8 + 0.6 + 0.5) / 3 + (0.9 + 0.7) / 2 + 1.0) / 3)
    assert libero_nbt(ERRORS, higher_is_better=False) == pytest.approx((1.5 + 1.0) / 2)
    assert libero_auc(ERRORS, higher_is_better=False) == pytest.approx((2.0 + 1.0 + 0.2) / 3)
    assert np.isnan(libero_nbt([[0.5]]))


def test_libero_fwt_holds_the_best_value():
    np.testing.assert_allclose(hold_best([0.2, 0.6, 0.4, 0.6, 0.3]), [0.2, 0.6, 0.6, 0.6, 0.6])
    np.testing.assert_allclose(hold_best([3.0, 1.0, 2.0], higher_is_better=False), [3.0, 1.0, 1.0])
    curves = [[0.0, 0.8, 0.2], [0.5, 0.9], [1.0]]
    np.testing.assert_allclose(libero_fwt_per_task(SUCCESS, curves), [1.6 / 3, 0.7, 1.0])
    record = record_4()  # curves from the history: task 0 [0.4, 0.8], 1 [0.5, 0.9], 2 [0.6, 0.9], 3 [0.5, 1.0]
    np.testing.assert_allclose(libero_fwt_per_task(record), [0.6, 0.7, 0.75, 0.75])
    assert libero_auc(record) == pytest.approx(((0.6 + 0.7 + 0.65 + 0.6) / 4 + (0.7 + 0.8 + 0.75) / 3
                                                + (0.75 + 0.7) / 2 + 0.75) / 4)


def test_min_acc_wc_acc_and_stability_gap_use_periodic_rows():
    record = record_4()
    # worst after learning: A min(0.3, 0.7, 0.6, 0.65, 0.2, 0.6), B min(0.4, 0.8, 0.85, 0.75), C min(0.5, 0.7)
    assert min_acc(record) == pytest.approx((0.2 + 0.4 + 0.5) / 3)
    assert wc_acc(record) == pytest.approx(1.0 / 4 + 3 / 4 * (1.1 / 3))
    assert min_acc(record, k=2) == pytest.approx(0.3)
    assert wc_acc(record, k=2) == pytest.approx(0.9 / 2 + 0.3 / 2)
    assert wc_acc(record, k=3) == pytest.approx(0.9 / 3 + 2 / 3 * 0.35)
    assert np.isnan(min_acc(record, k=1)) and wc_acc(record, k=1) == pytest.approx(0.8)
    gap = stability_gap(record)
    np.testing.assert_allclose(gap, [0.8 - 0.2, 0.9 - 0.4, 0.9 - 0.5])
    np.testing.assert_allclose(gap - forgetting(record), [0.4, 0.35, 0.2])  # the dip that was recovered
    assert min_acc(record.matrix) == pytest.approx((0.6 + 0.75 + 0.7) / 3)  # task ends alone miss the dips


def test_min_acc_wc_acc_and_stability_gap_lower_is_better():
    record = record_4(errors=True)
    assert min_acc(record) == pytest.approx(1 - 1.1 / 3)  # the largest errors: 0.8, 0.6, 0.5
    assert wc_acc(record) == pytest.approx(1 - (1.0 / 4 + 3 / 4 * (1.1 / 3)))
    np.testing.assert_allclose(stability_gap(record), [0.6, 0.5, 0.4])
    np.testing.assert_allclose(forgetting(record), [0.2, 0.15, 0.2])


def test_forward_transfer_auc_against_single_task_runs():
    assert normalized_auc([0, 1, 3], [0.0, 1.0, 1.0]) == pytest.approx(2.5 / 3)
    assert normalized_auc([7], [0.4]) == pytest.approx(0.4)
    reference = TaskReference.from_curves([([0, 50, 100], [0.0, 0.4, 0.8])] * 4)
    np.testing.assert_allclose(reference.auc, [0.4] * 4)
    np.testing.assert_allclose(reference.final, [0.8] * 4)
    # continual AUCs over each task's rows: (0.4+0.8)/2, (0.5+0.9)/2, (0.6+0.9)/2, (0.5+1.0)/2
    np.testing.assert_allclose(forward_transfer_auc(record_4(), reference),
                               (np.array([0.6, 0.7, 0.75, 0.75]) - 0.4) / 0.6)
    np.testing.assert_allclose(forward_transfer(record_4(), reference), [0.0, 0.1, 0.1, 0.2], atol=1e-12)
    with pytest.raises(ValueError, match="higher better"):
        forward_transfer_auc(record_4(errors=True), reference)
    with pytest.raises(ValueError, match="reference AUC is 1"):
        forward_transfer_auc(record_4(), [0.5, 1.0, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        forward_transfer_auc(record_4(), [0.5, 1.5, 0.5, 0.5])


def test_summary_has_every_applicable_metric():
    record = record_4()
    reference = TaskReference.from_curves([([0, 50, 100], [0.0, 0.4, 0.8])] * 4)
    out = summary(record, reference)
    assert list(out) == list(SUMMARY_KEYS)
    assert out["average_performance"] == pytest.approx(0.7625)
    assert out["forgetting"] == pytest.approx(0.55 / 3)
    assert out["stability_gap"] == pytest.approx(0.5)
    assert out["forward_transfer"] == pytest.approx(0.1)
    plain = summary(ContinualEvaluation(["a", "b", "c"], "success", matrix=SUCCESS))
    assert "stability_gap" not in plain and "forward_transfer" not in plain  # no periodic rows, no reference
    assert list(summary(ContinualEvaluation(["a"], matrix=[[2.0]]))) == ["average_performance", "libero_fwt"]
    with pytest.raises(ValueError, match="prefix"):
        summary(ContinualEvaluation(list("AB")))
    partial = record_4().prefix(2)
    assert summary(partial)["forgetting"] == pytest.approx(0.8 - 0.7)


def test_add_row_fills_the_matrix_and_checks_its_input():
    record = ContinualEvaluation(["a", "b", "c"], "return")
    record.add_row(0, [1.0, NAN, NAN], step=10)
    record.add_row(0, [2.0, None, NAN], step=20, final=True)
    assert record.n_finished == 1 and len(record.periodic) == 1 and len(record.history) == 2
    np.testing.assert_array_equal(record.matrix[0], [2.0, NAN, NAN])
    with pytest.raises(ValueError, match="expected 3"):
        record.add_row(1, [1.0, 2.0], step=30)
    with pytest.raises(ValueError, match="already has its task-end row"):
        record.add_row(0, [1.0, 2.0, 3.0], step=30, final=True)
    with pytest.raises(ValueError, match="in training order"):
        record.add_row(2, [1.0, 2.0, 3.0], step=30, final=True)
    with pytest.raises(ValueError, match="must measure that task"):
        record.add_row(1, [1.0, NAN, 3.0], step=30, final=True)
    with pytest.raises(ValueError, match="before the last recorded step"):
        record.add_row(1, [1.0, 2.0, 3.0], step=5)
    with pytest.raises(ValueError, match="needs its global step"):
        record.add_row(1, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="task_index"):
        record.add_row(3, [1.0, 2.0, 3.0], step=40)
    with pytest.raises(ValueError, match="infinite"):
        record.add_row(1, [1.0, np.inf, 3.0], step=40)
    record.add_row(1, [1.5, 2.5, NAN], final=True)  # a task-end row without a step: the matrix only
    assert record.n_finished == 2 and len(record.history) == 2


def test_bad_matrices_raise_clear_errors():
    with pytest.raises(ValueError, match="square"):
        ContinualEvaluation(["a", "b"], matrix=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="expected 3x3"):
        ContinualEvaluation(["a", "b", "c"], matrix=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="square"):
        forgetting([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match="unique"):
        ContinualEvaluation(["a", "a"])
    holed = SUCCESS.copy()
    holed[2, 0] = NAN
    with pytest.raises(ValueError, match=r"p\[2, 0\].*NaN"):
        forgetting(holed)
    with pytest.raises(ValueError, match=r"p\[2, 0\]"):
        average_performance(holed)
    with pytest.raises(ValueError, match=r"p\[2, 0\]"):
        libero_nbt(holed)
    with pytest.raises(ValueError, match="expected 3"):
        forward_transfer(SUCCESS, [0.1, 0.2])
    with pytest.raises(ValueError, match="contradicts"):
        forgetting(record_4(), higher_is_better=False)


def test_json_round_trip_keeps_nans(tmp_path):
    record = record_4()
    text = json.dumps(record.to_dict(), allow_nan=False)  # NaN is written as null: strict JSON
    back = ContinualEvaluation.from_dict(json.loads(text))
    assert back.tasks == record.tasks and back.metric_name == "success" and back.higher_is_better
    np.testing.assert_array_equal(back.matrix, record.matrix)
    assert [(r.step, r.task_index, r.final) for r in back.history] == \
           [(r.step, r.task_index, r.final) for r in record.history]
    np.testing.assert_array_equal(back.history[0].values, [0.4, NAN, NAN, NAN])
    loaded = ContinualEvaluation.load(record.save(tmp_path / "continual.json"))
    assert summary(loaded) == summary(record)
    with pytest.raises(ValueError, match="expected 4"):
        ContinualEvaluation.from_dict({**record.to_dict(), "history": [{"step": 1, "task_index": 0,
                                                                        "values": [1.0]}]})
    with pytest.raises(ValueError, match="matrix"):
        ContinualEvaluation.from_dict({"tasks": ["a"]})


def test_plots_write_pngs(tmp_path):
    record = record_4()
    partial = ContinualEvaluation(["a", "b", "c"], "success", matrix=np.where(np.tril(np.ones((3, 3))) > 0,
                                                                              SUCCESS, NAN))
    paths = [
        plot_continual_heatmap(record, tmp_path / "matrix.png", title="4 tasks, seed 0, 400 steps"),
        plot_continual_heatmap(partial, tmp_path / "partial.png", title="lower triangle"),
        plot_continual_curves(record, tmp_path / "curves.png", title="4 tasks, seed 0"),
        plot_continual_methods({"finetune": record, "ewc": record_4()}, tmp_path / "methods.png", title="2 methods"),
        plot_continual_curves(record_4(errors=True), tmp_path / "errors.png"),
    ]
    for path in paths:
        assert path.stat().st_size > 1000
        assert matplotlib.image.imread(path).shape[0] > 100
    with pytest.raises(ValueError, match="one metric and direction"):
        plot_continual_methods({"a": record, "b": record_4(errors=True)}, tmp_path / "bad.png")
    # each panel on its own scale by default (a 10x larger record keeps its contrast), one scale on request
    big = ContinualEvaluation(list("ABCD"), "success", matrix=record.matrix * 10)
    own = panel_norms([record, big])
    assert (own[0].vmin, own[0].vmax) == (0.0, 1.0) and (own[1].vmin, own[1].vmax) == (0.0, 10.0)
    assert all((n.vmin, n.vmax) == (0.0, 10.0) for n in panel_norms([record, big], shared_scale=True))
    assert plot_continual_methods({"a": record, "b": big}, tmp_path / "shared.png", shared_scale=True).is_file()
    with pytest.raises(ValueError, match="no evaluation rows"):
        plot_continual_curves(partial, tmp_path / "none.png")


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_tags(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from cadence.logging import RunLogger

    record = record_4()
    writer = SummaryWriter(str(tmp_path / "plain"))
    tags = log_continual_row(writer, 150, record, [0.3, 0.5, NAN, NAN])
    log_continual_row(writer, 200, record, record.matrix[1])
    log_continual_summary(writer, 400, {"forgetting": 0.2, "stability_gap": NAN})
    writer.close()
    assert tags == ["continual/success/A", "continual/success/B"]  # NaN (not evaluated) is skipped
    scalars = _scalars(tmp_path / "plain")
    assert set(scalars) == {"continual/success/A", "continual/success/B", "continual/success/C",
                            "continual/success/D", "continual/forgetting"}
    assert scalars["continual/success/A"] == [(150, pytest.approx(0.3)), (200, pytest.approx(0.7))]
    assert scalars["continual/forgetting"] == [(400, pytest.approx(0.2))]

    logger = RunLogger(tmp_path / "run")  # cadence's wrapper holds the SummaryWriter
    log_continual_row(logger, 5, ["walk", "run"], [1.0, 2.0], metric_name="return")
    log_continual_summary(logger, 5, summary(record), prefix="continual")
    # two records of one run: the record's metric name keeps their summaries apart
    log_continual_summary(logger, 6, record)
    log_continual_summary(logger, 6, record_4(errors=True), {"forgetting": 0.3})
    logger.close()
    scalars = _scalars(tmp_path / "run")
    assert {"continual/return/walk", "continual/return/run", "continual/wc_acc", "continual/libero_auc",
            "continual/forgetting/success", "continual/stability_gap/success"} <= set(scalars)
    assert scalars["continual/forgetting/model_error"] == [(6, pytest.approx(0.3))]
    assert scalars["continual/forgetting/success"] == [(6, pytest.approx(0.55 / 3))]
    with pytest.raises(TypeError, match="a record and its metrics"):
        log_continual_summary(logger, 0, {"x": 1.0}, {"y": 2.0})
    with pytest.raises(TypeError, match="add_scalar"):
        log_continual_summary(object(), 0, {"x": 1.0})
    with pytest.raises(ValueError, match="expected 2"):
        log_continual_row(logger, 5, ["walk", "run"], [1.0])
