"""An NNI evaluator backed by the ground-truth table, as NNI's ``NasBench201Benchmark`` is for the real NAS-Bench-201.

NNI's multi-trial strategies (``Random``, ``RegularizedEvolution``, ...) run against it in seconds: each trial
queries the table instead of training, reports the cell's *validation* accuracy (the search never sees test
accuracy) and is charged the recorded training seconds of its cell, so a search's cost is simulated as if every
cell had been trained with the table's recipe.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import nni
from nni.mutable import Categorical, Sample, label_scope
from nni.nas.benchmark.evaluator import BenchmarkEvaluator
from nni.nas.benchmark.space import SlimBenchmarkSpace
from nni.nas.execution import SequentialExecutionEngine

from .space import CELL_LABEL, EDGES, OPS, edge_label
from .table import GroundTruthTable

__all__ = ["SimulatedTimeEngine", "TableEvaluator", "TableTrial", "run_multi_trial"]

_logger = logging.getLogger(__name__)


@dataclass
class TableTrial:
    """One query: the arch, what the search saw (``valid_acc``), the ground truth (``test_acc``), the seconds charged
    and the search's simulated time after it."""

    arch: Dict[str, str]
    valid_acc: float
    test_acc: float
    seconds: float
    elapsed: float


class TableEvaluator(BenchmarkEvaluator):
    """Query ``table`` for each sample of NNI's NAS-Bench-201 space (labels ``cell/0_1`` ... ``cell/2_3``).

    ``train_missing``: a cell the table lacks is trained with the table's recipe (``missing_seeds``) and added,
    instead of raising :class:`~nni_darts_ext.groundtruth.table.NotInTableError`. ``trials`` lists every query with
    its simulated elapsed time.
    """

    def __init__(self, table: GroundTruthTable, *, metric: str = "valid_acc", train_missing: bool = False,
                 missing_seeds: tuple = (0,), data: Any = None):
        super().__init__()
        if metric not in ("valid_acc", "train_acc"):
            raise ValueError(f"metric={metric!r}: a search may see valid_acc or train_acc, never the test accuracy")
        self.table, self.metric, self.train_missing = table, metric, train_missing
        self.missing_seeds, self.data = tuple(missing_seeds), data
        self.trials: List[TableTrial] = []

    @classmethod
    def default_space(cls) -> SlimBenchmarkSpace:
        with label_scope(CELL_LABEL):
            choices = [Categorical(list(OPS), label=f"{s}_{t}") for s, t in EDGES]
        return SlimBenchmarkSpace({c.label: c for c in choices})

    def evaluate(self, sample: Sample) -> float:
        arch = {edge_label(*e): sample[edge_label(*e)] for e in EDGES}
        if self.train_missing and arch not in self.table and self.data is None:
            from .recipe import GroundTruthRecipe, load_data
            self.data = load_data(GroundTruthRecipe(**self.table.meta["recipe"]))
        record = self.table.query(arch, train_missing=self.train_missing, seeds=self.missing_seeds, data=self.data)
        value = float(getattr(record, self.metric))
        elapsed = (self.trials[-1].elapsed if self.trials else 0.0) + record.seconds
        self.trials.append(TableTrial(arch, value, record.test_acc, record.seconds, elapsed))
        nni.report_final_result(value)
        return value

    def best_within(self, budget_seconds: float) -> Optional[TableTrial]:
        """The trial a search with ``budget_seconds`` of simulated training would return: the best validation
        accuracy among the trials that finished within the budget (None if none did)."""
        done = [t for t in self.trials if t.elapsed <= budget_seconds]
        return max(done, key=lambda t: t.valid_acc) if done else None


class SimulatedTimeEngine(SequentialExecutionEngine):
    """NNI's sequential engine whose clock is the table's: each trial adds the recorded training seconds of its
    cell (not the milliseconds the query took), so NNI's own ``max_duration`` budget stops the strategy."""

    def __init__(self, evaluator: TableEvaluator, budget_seconds: Optional[float], max_model_count: Optional[int]):
        super().__init__(max_model_count=max_model_count, max_duration=budget_seconds)
        self.table_evaluator = evaluator

    def _run_single_model(self, model: Any) -> None:
        before, count = self._total_duration, len(self.table_evaluator.trials)
        super()._run_single_model(model)
        charged = self.table_evaluator.trials[-1].seconds if len(self.table_evaluator.trials) > count else 0.0
        self._total_duration = before + charged


def run_multi_trial(strategy: Any, evaluator: TableEvaluator, *, budget_seconds: Optional[float] = None,
                    max_trials: Optional[int] = None) -> TableEvaluator:
    """Run an NNI multi-trial ``strategy`` on the table through ``NasExperiment`` until ``budget_seconds`` of
    simulated training (or ``max_trials``) are spent; trials are queries of milliseconds. Returns ``evaluator``,
    whose ``trials`` list every query."""
    import warnings

    from nni.nas.experiment import NasExperiment
    from nni.nas.experiment.config import NasExperimentConfig

    from .space import NasBench201Grey

    if budget_seconds is None and max_trials is None:
        raise ValueError("run_multi_trial needs budget_seconds or max_trials (else the search never ends)")

    class _Experiment(NasExperiment):
        def execution_engine_factory(self, config: Any) -> SimulatedTimeEngine:
            return SimulatedTimeEngine(evaluator, budget_seconds, max_trials)

    config = NasExperimentConfig("sequential", "raw")
    config.trial_concurrency = 1
    exp = _Experiment(NasBench201Grey(), evaluator, strategy, config=config)
    with warnings.catch_warnings():
        # NNI suggests its BenchmarkModelSpace, which NasExperiment itself does not accept (it needs a ModelSpace)
        warnings.filterwarnings("ignore", message="It would be better to use BenchmarkModelSpace")
        exp.run()
    return evaluator
