"""Studies on Optuna: one study in a storage that many worker processes and machines share.

The storage is any database URL Optuna's RDBStorage takes: by default an SQLite file in the study's folder
(one machine, any number of processes), or a server such as PostgreSQL for several machines. Workers take
trials until the study's budget of distinct trials is taken, then wait for the ones other workers hold. A
worker records a heartbeat while it trains; one whose heartbeat stops (killed) has its trial failed by the
next worker that looks and queued again with the same settings. A trial that raised fails and is queued
again when a worker next starts, so rerunning the command retries it.

A trial's identity (its key) is its grid point for a grid, or the number of the trial it retries or is;
two workers that raced to the same key (or past the budget) keep the earlier trial and end the other
as surplus, pruned without running, and left out of every table.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import IntegrityError, OperationalError

log = logging.getLogger("training")

SWEEP_FORMAT = 2     # what a study in storage holds; 1 was the process pool with result files in trials/
HEARTBEAT_S = 20     # a training worker records it is alive this often
GRACE_S = 120        # a trial whose worker was silent this long is taken for killed, failed and queued again
MAX_RETRIES = 3      # queued again at most this many times after its worker died
OPEN_TRIES = 3       # attempts at creating a new storage's tables
POLL_S = 5           # how often a worker with nothing left to take looks whether the others are done
SURPLUS = "surplus"  # user attribute of a trial ended without running (another worker holds its key)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _stable(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call one of Optuna's heartbeat functions: experimental since Optuna 2.8 and still so in 5.1, which
    warns at every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return fn(*args, **kwargs)


class SweepError(RuntimeError):
    """A study that cannot start or finish as asked; the message says why (and, for failed trials, that a
    rerun retries only those)."""


def default_storage(folder: Path) -> str:
    """The study's own SQLite file: every process on this machine can share it."""
    return f"sqlite:///{(Path(folder) / 'study.db').resolve()}"


def _shown(url: str) -> str:
    """The URL as messages show it: its password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (it does not parse: shown as given)
        return url


def _lost_race(err: Exception) -> bool:
    """Whether another worker created the storage's tables (or its schema version row) first."""
    return isinstance(err, IntegrityError) or isinstance(err, OperationalError) and "already exists" in str(err)


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S) -> RDBStorage:
    """Optuna's storage at `url`; one SweepError naming it when the URL does not parse or cannot be reached.

    Workers started together race to create a new storage's tables: the loser tries again.
    """
    for attempt in range(OPEN_TRIES):
        try:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # writers wait their turn
            retry = _stable(RetryHeartbeatStaleTrialCallback, max_retry=MAX_RETRIES)
            return _stable(RDBStorage, url, engine_kwargs=engine, heartbeat_interval=heartbeat_s,
                           grace_period=grace_s, heartbeat_stale_trial_callback=retry)
        except Exception as err:  # noqa: BLE001  (SQLAlchemy's, a driver's or the network's: one message)
            failure = err
            if not _lost_race(err):
                break
            time.sleep(0.5 * (attempt + 1))
    reason = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
    raise SweepError(f"cannot open the study storage {_shown(url)}: {type(failure).__name__}: {reason}")


def _normal(value: Any) -> Any:
    """As the storage keeps it: through JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def open_study(storage: RDBStorage, name: str, definition: Mapping[str, Any], sampler: optuna.samplers.BaseSampler,
               pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """The study `name` in `storage`, created if new; refused when it was made to another definition (another
    version of the sweep, other settings or another study under the same name), saying what differs."""
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    wanted, saved = _normal(dict(definition)), study.user_attrs.get("definition")
    if saved is None and study.get_trials(deepcopy=False):
        raise SweepError(f"the study {name!r} in {_shown(storage.url)} was not made by this sweep; "
                         "give another --storage or --out")
    if saved is None:
        study.set_user_attr("definition", wanted)
    elif saved != wanted:
        differs = "; ".join(f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} now"
                            for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k))
        raise SweepError(f"the study {name!r} in {_shown(storage.url)} was made by another version of the sweep "
                         f"or with other settings ({differs}); give another --out or --storage, or delete it "
                         f"(optuna delete-study --study-name {name} --storage URL)")
    return study


def key(trial: FrozenTrial) -> str:
    """What a trial runs: its grid point, or the trial it first was (a retry keeps the original's number)."""
    attrs = trial.system_attrs
    return f"grid{attrs['grid_id']}" if "grid_id" in attrs else f"t{attrs.get('failed_trial', trial.number)}"


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Every trial but the surplus ones."""
    return [t for t in trials if not t.user_attrs.get(SURPLUS)]


def _surplus(number: int, mine: str, trials: list[FrozenTrial], budget: int) -> bool:
    """Whether another trial already holds the key `mine` of trial `number`, or other keys took the budget."""
    rivals = [t for t in trials if t.number != number and key(t) == mine and t.state != TrialState.FAIL
              and (t.state.is_finished() or t.number < number)]
    others = {key(t) for t in trials if t.number != number} - {mine}
    return bool(rivals) or len(others) >= budget


def objective(run: Callable[[optuna.Trial, str], float], budget: int) -> Callable[[optuna.Trial], float]:
    """Optuna's objective around `run(trial, key)`: surplus trials end at once; errors are recorded."""
    def wrapped(trial: optuna.Trial) -> float:
        trials = counted(trial.study.get_trials(deepcopy=False))
        mine = key(next(t for t in trials if t.number == trial.number))
        if _surplus(trial.number, mine, trials, budget):
            trial.set_user_attr(SURPLUS, True)
            raise optuna.TrialPruned("another worker holds this trial")
        try:
            return run(trial, mine)
        except optuna.TrialPruned:
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            raise
    return wrapped


def requeue_failed(study: optuna.Study) -> int:
    """Queue again every failed trial whose key nothing else holds; how many."""
    trials = counted(study.get_trials(deepcopy=False))
    held = {key(t) for t in trials if t.state != TrialState.FAIL}
    queued = 0
    for trial in trials:
        if trial.state == TrialState.FAIL and key(trial) not in held:
            _stable(lambda: RetryHeartbeatStaleTrialCallback()(study, trial))  # same params, attributes, key
            held.add(key(trial))
            queued += 1
    return queued


def work(study: optuna.Study, run: Callable[[optuna.Trial, str], float], budget: int, poll_s: float = POLL_S,
         ) -> None:
    """Take trials until `budget` keys are taken, then wait until no other worker holds a running one
    (failing and queueing again those whose worker died)."""
    requeue_failed(study)
    task = objective(run, budget)
    while True:
        _stable(fail_stale_trials, study)
        trials = counted(study.get_trials(deepcopy=False))
        if len({key(t) for t in trials}) < budget or any(t.state == TrialState.WAITING for t in trials):
            study.optimize(task, n_trials=1, catch=(Exception,), gc_after_trial=False)
        elif any(t.state == TrialState.RUNNING for t in trials):
            time.sleep(poll_s)
        else:
            return


def outcome(study: optuna.Study) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """(the trial that finished for each key, complete or pruned, in trial order; the last failure of each
    key that never finished)."""
    finished: dict[str, FrozenTrial] = {}
    failed: dict[str, FrozenTrial] = {}
    for trial in counted(study.get_trials(deepcopy=False)):
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            finished.setdefault(key(trial), trial)
        elif trial.state == TrialState.FAIL:
            failed[key(trial)] = trial
    return list(finished.values()), [t for k, t in failed.items() if k not in finished]
