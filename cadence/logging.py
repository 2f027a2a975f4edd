"""TensorBoard logging for runs: scalars, a custom-scalars layout and hparams."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

#: Groups the run's tags (docs/ARCHITECTURE.md, "TensorBoard") in TensorBoard's Custom Scalars tab. The tab smooths
#: every chart by its slider (0.6 by default): the return-against-ASL chart's title asks for 0, since smoothing
#: across ASL turns a peak of 32 into 27 (the image ``fas/return_vs_asl`` is the same sweep, never smoothed).
CUSTOM_SCALARS_LAYOUT = {
    "returns": {
        "episode and evaluation return": ["Multiline", ["train/episode_return", "eval/return"]],
        "frequency-averaged score": ["Multiline", ["eval/fas"]],
        "return against action-sequence length (x axis: ASL; set Smoothing to 0 and untick Ignore outliers)": [
            "Multiline", ["fas/return_by_asl"]],
        "evaluation at the training decision interval": ["Multiline", ["eval/return_asl.*"]],
    },
    "learning": {
        "losses": ["Multiline", ["train/critic_loss", "train/actor_loss", "train/alpha_loss"]],
        "entropy and temperature": ["Multiline", ["train/entropy", "train/alpha"]],
        "model": ["Multiline", ["model/.*"]],
        "speed": ["Multiline", ["train/steps_per_second"]],
    },
}


class RunLogger:
    """A SummaryWriter bound to one run folder.

    Args:
        run_dir: the run folder; event files are written there.
        resume_step: on resume, the step of the checkpoint: events the interrupted process logged
            after it are discarded so curves are not double-counted. Those logged at that step came
            before the checkpoint was written, so they stay.
        write_layout: write the custom-scalars dashboard layout (once, at a run's start).
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, write_layout: bool = False):
        self.run_dir = Path(run_dir)
        purge_step = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(self.run_dir), purge_step=purge_step)
        if write_layout:
            self.writer.add_custom_scalars(CUSTOM_SCALARS_LAYOUT)

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"{prefix}{key}", value, step)

    def hparams(self, config: Mapping[str, Any], metric_tags: Sequence[str]) -> None:
        """Record the run's config in the HParams tab, against scalar tags the run logs (``eval/return``,
        ``eval/fas``): the table shows each tag's latest value, so a FAS sweep made later appears too, and no
        extra scalar card is written. Columns follow ``config``'s order."""
        from torch.utils.tensorboard.summary import hparams

        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}
        for summary in hparams(clean, dict.fromkeys(metric_tags, 0.0)):
            self.writer.file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
