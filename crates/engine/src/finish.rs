//! How a job ends: a pure decision over what the handler returned, why its
//! cancel token fired (if it did), and what the run looked like afterwards.
//! The completer ([`crate::completer`]) carries it out; every branch of the
//! job state machine is here, unit-tested, with no IO.

use crate::HandlerError;
use crate::handler::UnitResult;
use opsledger_core::{Failure, UnitOutcome};
use opsledger_store::StoreError;
use std::time::Duration;

/// Why a handler's cancel token fired.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stop {
    /// It did not: the handler returned on its own.
    None,
    /// The process is shutting down.
    Shutdown,
    /// A heartbeat found the job no longer ours (rescued, re-claimed).
    LeaseLost,
    /// A heartbeat found the run closed (cancelled, reconciled, force-closed).
    RunClosed,
    /// The handler showed no progress for its type's stall timeout: it is
    /// taken as hung and its attempt ends as a transient failure.
    Stalled,
}

/// What a handler returned, as the decision needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Returned {
    /// A run handler returned `Ok`.
    RunDone,
    /// A unit handler returned its unit's result.
    Unit(UnitResult),
    /// It failed; `retry_after` set when the failure is transient.
    Failed {
        failure: Failure,
        retry_after: Option<Duration>,
    },
    /// One of its fenced writes found the lease lost.
    LeaseLost,
    /// One of its writes found the run no longer running.
    RunClosed,
    /// It stopped on its cancel token with nothing to report.
    Stopped,
}

impl Returned {
    /// A run handler's return.
    pub fn of_run(result: Result<(), HandlerError>) -> Returned {
        match result {
            Ok(()) => Returned::RunDone,
            Err(e) => Returned::of_error(e),
        }
    }

    /// A unit handler's return.
    pub fn of_unit(result: Result<UnitResult, HandlerError>) -> Returned {
        match result {
            Ok(r) => Returned::Unit(r),
            Err(e) => Returned::of_error(e),
        }
    }

    fn of_error(e: HandlerError) -> Returned {
        match e {
            HandlerError::Store(StoreError::LeaseLost { .. }) => Returned::LeaseLost,
            HandlerError::Store(StoreError::RunNotRunning { .. }) => Returned::RunClosed,
            HandlerError::Stopped => Returned::Stopped,
            e => Returned::Failed {
                failure: e.failure(),
                retry_after: e.retry_after(),
            },
        }
    }
}

/// A run job's run after its handler returned (read by the executor only
/// when the handler returned `Ok`: no other decision depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAfter {
    /// Not completed (or gone: then `open` is false).
    pub open: bool,
    /// `total` is set: a fan-out parent planned its units.
    pub planned: bool,
}

impl RunAfter {
    /// For a handler that did not return `Ok`: its run was not read.
    pub const NOT_READ: RunAfter = RunAfter {
        open: true,
        planned: false,
    };
}

/// Everything the decision reads.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishInput {
    pub returned: Returned,
    pub stop: Stop,
    /// The job's attempt was its last.
    pub last_attempt: bool,
    /// The run's type fans out into unit jobs.
    pub fan_out: bool,
    /// For a run job: its run after the handler returned; `None` for unit jobs.
    pub run_after: Option<RunAfter>,
    /// The run handler closed its run through its context.
    pub closed_run: bool,
    /// The run handler (a composite's) handed its run to child runs through
    /// its context: the last child's close closes the run.
    pub children_planned: bool,
}

/// What to do with the job.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// Someone else owns the job now: write nothing.
    Nothing,
    /// Give the job back without spending an attempt (shutdown before the work was done).
    Release,
    /// The run closed under the job: end it `cancelled`.
    Cancel,
    /// Another attempt, no sooner than `asked`.
    Retry { failure: Failure, asked: Duration },
    /// Commit the unit's result with its job's end (then complete the parent
    /// if that was its last unit).
    CommitUnit(UnitResult),
    /// The run job's work is done: end it `completed`; for a fan-out parent,
    /// complete the run if its units are all processed (zero units included).
    CompleteRunJob { fan_out: bool },
    /// The run job failed for good: end it `failed`, then close the run as
    /// failed — asking its adapter first when `reconcile` (work that landed
    /// is not thrown away), unless a job can still move it.
    FailRunJob { failure: Failure, reconcile: bool },
}

/// The decision.
pub fn decide(input: FinishInput) -> Finish {
    if input.stop == Stop::LeaseLost || input.returned == Returned::LeaseLost {
        return Finish::Nothing;
    }
    match input.run_after {
        None => decide_unit(input),
        Some(run) => decide_run(input, run),
    }
}

/// What the stop signal calls for when the work was not done.
fn stopped(input: &FinishInput) -> Option<Finish> {
    match input.stop {
        Stop::Shutdown => Some(Finish::Release),
        Stop::RunClosed => Some(Finish::Cancel),
        Stop::Stalled => {
            let failure = Failure::new(
                "handler_stalled",
                "the handler showed no progress for its type's stall timeout and was cancelled",
            );
            Some(if !input.last_attempt {
                Finish::Retry {
                    failure,
                    asked: Duration::ZERO,
                }
            } else if input.run_after.is_none() {
                failed_unit(failure)
            } else {
                Finish::FailRunJob {
                    failure,
                    reconcile: true,
                }
            })
        }
        Stop::None | Stop::LeaseLost => None,
    }
}

fn failed_unit(failure: Failure) -> Finish {
    Finish::CommitUnit(UnitResult {
        outcome: UnitOutcome::Failed,
        failure: Some(failure),
        artifact: None,
    })
}

fn decide_unit(input: FinishInput) -> Finish {
    let stop = stopped(&input);
    match input.returned {
        // The result is the work: commit it whatever stopped the handler
        // after it was produced (a closed run refuses it; the completer then
        // cancels the job).
        Returned::Unit(result) => Finish::CommitUnit(result),
        Returned::RunClosed => Finish::Cancel,
        Returned::Stopped => stop.unwrap_or_else(|| {
            failed_unit(Failure::new(
                "handler_left_unit_open",
                "the unit handler stopped without a result",
            ))
        }),
        Returned::Failed { failure, retry_after } => {
            if let Some(f) = stop {
                return f;
            }
            match retry_after {
                Some(asked) if !input.last_attempt => Finish::Retry { failure, asked },
                _ => failed_unit(failure),
            }
        }
        Returned::RunDone | Returned::LeaseLost => Finish::Nothing,
    }
}

fn decide_run(input: FinishInput, run: RunAfter) -> Finish {
    // A stop signal that raced with work already done (the handler closed its
    // run, or planned its units) does not undo it.
    let work_done = input.returned == Returned::RunDone
        && (input.closed_run || input.children_planned || (input.fan_out && run.open && run.planned));
    if !work_done && let Some(f) = stopped(&input) {
        return f;
    }
    match input.returned {
        Returned::RunDone if !run.open => Finish::CompleteRunJob { fan_out: false },
        Returned::RunDone if input.fan_out => Finish::CompleteRunJob { fan_out: true },
        // Its children carry the work now; their last close closes the run.
        Returned::RunDone if input.children_planned => Finish::CompleteRunJob { fan_out: false },
        Returned::RunDone => Finish::FailRunJob {
            failure: Failure::new(
                "handler_left_run_open",
                "the handler returned without completing the run",
            ),
            reconcile: false,
        },
        Returned::RunClosed => Finish::Cancel,
        Returned::Stopped => Finish::FailRunJob {
            failure: Failure::new("handler_stopped", "the handler stopped before finishing"),
            reconcile: true,
        },
        Returned::Failed { failure, retry_after } => match retry_after {
            Some(asked) if !input.last_attempt => Finish::Retry { failure, asked },
            _ => Finish::FailRunJob {
                failure,
                reconcile: true,
            },
        },
        Returned::Unit(_) | Returned::LeaseLost => Finish::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(retry: Option<u64>) -> Returned {
        Returned::Failed {
            failure: Failure::new("x", "boom"),
            retry_after: retry.map(Duration::from_millis),
        }
    }

    fn unit(returned: Returned, stop: Stop, last_attempt: bool) -> Finish {
        decide(FinishInput {
            returned,
            stop,
            last_attempt,
            fan_out: true,
            run_after: None,
            closed_run: false,
            children_planned: false,
        })
    }

    fn run(
        returned: Returned,
        stop: Stop,
        fan_out: bool,
        open: bool,
        planned: bool,
        closed_run: bool,
    ) -> Finish {
        decide(FinishInput {
            returned,
            stop,
            last_attempt: false,
            fan_out,
            run_after: Some(RunAfter { open, planned }),
            closed_run,
            children_planned: false,
        })
    }

    #[test]
    fn a_composite_whose_children_carry_the_work_ends_its_job_and_leaves_its_run_open() {
        for stop in [Stop::None, Stop::Shutdown, Stop::RunClosed] {
            let f = decide(FinishInput {
                returned: Returned::RunDone,
                stop,
                last_attempt: false,
                fan_out: false,
                run_after: Some(RunAfter {
                    open: true,
                    planned: false,
                }),
                closed_run: false,
                children_planned: true,
            });
            assert_eq!(f, Finish::CompleteRunJob { fan_out: false }, "{stop:?}");
        }
        // Without children planned, an open run is a handler that forgot to close it.
        let f = run(Returned::RunDone, Stop::None, false, true, false, false);
        assert!(matches!(f, Finish::FailRunJob { .. }), "{f:?}");
    }

    const STOPS: [Stop; 5] = [
        Stop::None,
        Stop::Shutdown,
        Stop::LeaseLost,
        Stop::RunClosed,
        Stop::Stalled,
    ];

    #[test]
    fn a_lost_lease_writes_nothing_whatever_was_returned() {
        for returned in [
            Returned::Unit(UnitResult::succeeded()),
            fail(None),
            Returned::RunDone,
        ] {
            assert_eq!(unit(returned.clone(), Stop::LeaseLost, false), Finish::Nothing);
            assert_eq!(
                run(returned, Stop::LeaseLost, true, true, true, true),
                Finish::Nothing
            );
        }
        for stop in STOPS {
            assert_eq!(unit(Returned::LeaseLost, stop, false), Finish::Nothing);
            assert_eq!(
                run(Returned::LeaseLost, stop, false, true, false, false),
                Finish::Nothing
            );
        }
    }

    #[test]
    fn a_unit_result_is_committed_even_when_a_stop_raced_with_it() {
        for stop in [Stop::None, Stop::Shutdown, Stop::RunClosed] {
            assert_eq!(
                unit(Returned::Unit(UnitResult::succeeded()), stop, false),
                Finish::CommitUnit(UnitResult::succeeded())
            );
        }
    }

    #[test]
    fn a_stopped_unit_is_released_on_shutdown_cancelled_when_closed_failed_otherwise() {
        assert_eq!(unit(Returned::Stopped, Stop::Shutdown, false), Finish::Release);
        assert_eq!(unit(Returned::Stopped, Stop::RunClosed, false), Finish::Cancel);
        match unit(Returned::Stopped, Stop::None, false) {
            Finish::CommitUnit(r) => {
                assert_eq!(r.outcome, UnitOutcome::Failed);
                assert_eq!(r.failure.unwrap().code, "handler_left_unit_open");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn transient_failures_retry_until_the_last_attempt_then_the_unit_fails() {
        assert!(
            matches!(unit(fail(Some(5)), Stop::None, false), Finish::Retry { asked, .. } if asked == Duration::from_millis(5))
        );
        assert!(
            matches!(unit(fail(Some(5)), Stop::None, true), Finish::CommitUnit(r) if r.outcome == UnitOutcome::Failed)
        );
        assert!(
            matches!(unit(fail(None), Stop::None, false), Finish::CommitUnit(r) if r.outcome == UnitOutcome::Failed)
        );
        // A failure while shutting down is not the unit's fault: given back.
        assert_eq!(unit(fail(None), Stop::Shutdown, false), Finish::Release);
        assert_eq!(unit(Returned::RunClosed, Stop::None, false), Finish::Cancel);
    }

    #[test]
    fn a_run_job_ends_by_its_runs_state() {
        // Closed by its handler.
        assert_eq!(
            run(Returned::RunDone, Stop::None, false, false, false, true),
            Finish::CompleteRunJob { fan_out: false }
        );
        // A fan-out parent that planned its units.
        assert_eq!(
            run(Returned::RunDone, Stop::None, true, true, true, false),
            Finish::CompleteRunJob { fan_out: true }
        );
        // Left open by a non-fan-out handler.
        assert!(matches!(
            run(Returned::RunDone, Stop::None, false, true, false, false),
            Finish::FailRunJob { ref failure, reconcile: false } if failure.code == "handler_left_run_open"
        ));
        // A permanent failure reconciles from proof first.
        assert!(matches!(
            run(fail(None), Stop::None, false, true, false, false),
            Finish::FailRunJob { reconcile: true, .. }
        ));
        assert!(matches!(
            run(fail(Some(1)), Stop::None, false, true, false, false),
            Finish::Retry { .. }
        ));
        assert_eq!(
            run(Returned::RunClosed, Stop::None, false, false, false, false),
            Finish::Cancel
        );
    }

    #[test]
    fn a_stop_that_raced_with_done_run_work_does_not_undo_it() {
        for stop in [Stop::Shutdown, Stop::RunClosed] {
            // The handler closed its run: the job completes.
            assert_eq!(
                run(Returned::RunDone, stop, false, false, false, true),
                Finish::CompleteRunJob { fan_out: false }
            );
            // A fan-out parent planned its units: the job completes.
            assert_eq!(
                run(Returned::RunDone, stop, true, true, true, false),
                Finish::CompleteRunJob { fan_out: true }
            );
        }
        // Not done: shutdown releases, a closed run cancels.
        assert_eq!(
            run(Returned::RunDone, Stop::Shutdown, true, true, false, false),
            Finish::Release
        );
        assert_eq!(
            run(Returned::Stopped, Stop::Shutdown, false, true, false, false),
            Finish::Release
        );
        assert_eq!(
            run(Returned::Stopped, Stop::RunClosed, false, false, false, false),
            Finish::Cancel
        );
        assert_eq!(
            run(fail(None), Stop::Shutdown, false, true, false, false),
            Finish::Release
        );
    }

    #[test]
    fn a_stalled_handler_is_retried_then_fails_but_a_result_it_produced_is_kept() {
        for returned in [Returned::Stopped, fail(None)] {
            let f = unit(returned.clone(), Stop::Stalled, false);
            assert!(
                matches!(&f, Finish::Retry { failure, asked } if failure.code == "handler_stalled" && asked.is_zero()),
                "{f:?}"
            );
            let last = unit(returned.clone(), Stop::Stalled, true);
            assert!(
                matches!(&last, Finish::CommitUnit(r) if r.outcome == UnitOutcome::Failed),
                "{last:?}"
            );
            let f = run(returned, Stop::Stalled, false, true, false, false);
            assert!(matches!(f, Finish::Retry { .. }), "{f:?}");
        }
        // The handler returned its result as the stall fired: the result is the work.
        assert_eq!(
            unit(Returned::Unit(UnitResult::succeeded()), Stop::Stalled, false),
            Finish::CommitUnit(UnitResult::succeeded())
        );
    }
}
