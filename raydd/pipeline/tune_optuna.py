"""Tune's Optuna searcher, telling Optuna the truth about trials that ASHA stopped early.

Tune's ``OptunaSearch`` reports a trial ASHA stopped as complete, with the score it had when stopped,
so TPE learns from a short run's accuracy as from a finished one and favours settings that start fast.
Here such a trial is told to Optuna as pruned: its reported scores stay as intermediate values, and TPE
ranks it by how far it got, as it does for trials Optuna's own pruners stop. A module of its own so the
class is importable (Tune saves the searcher with the experiment and loads it on ``--resume``).
"""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch


class StoppedTrialsAsPruned(OptunaSearch):
    """``OptunaSearch`` where a trial that ended before ``total`` iterations without an error is pruned."""

    def __init__(self, *args, total: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.total = total

    def stopped_early(self, trial_id: str, result: dict | None, error: bool) -> bool:
        return (not error and result is not None and trial_id not in self._completed_trials
                and int(result.get("iterations", self.total)) < self.total)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if not self.stopped_early(trial_id, result, error):
            return super().on_trial_complete(trial_id, result, error)
        import optuna

        self._ot_study.tell(self._ot_trials[trial_id], None, state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)
