//! The transaction state machine driven through every transition, the fault-only ones included,
//! with scripted commits instead of a broker.

use std::cell::Cell;
use std::rc::Rc;

use super::*;

/// A scripted commit: ends with `outcome` once `finished` is set (tests flip it to simulate the
/// helper thread ending); `wait` records that someone waited.
struct Script {
    outcome: CommitOutcome,
    finished: Rc<Cell<bool>>,
    waited: Rc<Cell<bool>>,
}

fn script(outcome: Result<(), TxnFailure>) -> (Script, Rc<Cell<bool>>, Rc<Cell<bool>>) {
    let finished = Rc::new(Cell::new(false));
    let waited = Rc::new(Cell::new(false));
    (
        Script {
            outcome: (outcome, 0.25),
            finished: finished.clone(),
            waited: waited.clone(),
        },
        finished,
        waited,
    )
}

impl InFlight for Script {
    fn is_finished(&self) -> bool {
        self.finished.get()
    }

    fn wait(self) -> CommitOutcome {
        self.waited.set(true);
        self.outcome
    }
}

fn held(key: &str) -> Held {
    Held {
        topic: "t".into(),
        key: key.into(),
        partition: None,
        payload: Some(key.as_bytes().to_vec()),
        headers: None,
    }
}

/// Routes one record: `true` when it must be produced now, `false` when it was held.
fn send(txn: &mut Txn<Script>, key: &str) -> bool {
    match txn.route().expect("send is legal") {
        Route::Produce => true,
        Route::Hold(records) => {
            records.push(held(key));
            false
        }
    }
}

/// Open with one produced record, its commit handed to a scripted outcome.
fn committing(outcome: Result<(), TxnFailure>) -> (Txn<Script>, Rc<Cell<bool>>, Rc<Cell<bool>>) {
    let mut txn = Txn::Idle;
    assert_eq!(txn.work(), Ok(WorkStart::Begin));
    assert!(send(&mut txn, "a"));
    let (s, finished, waited) = script(outcome);
    txn.commit_started(s).unwrap();
    assert_eq!(txn.name(), "Committing");
    (txn, finished, waited)
}

#[test]
fn happy_cycle_idle_open_committing_idle() {
    let (mut txn, finished, _) = committing(Ok(()));
    assert!(
        txn.settle(false).is_none(),
        "still running: nothing to settle"
    );
    assert!(txn.is_committing());
    finished.set(true);
    match txn.settle(false) {
        Some(Settled::Committed {
            seconds,
            begin_with: None,
        }) => assert_eq!(seconds, 0.25),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(txn.name(), "Idle");
    assert!(txn.settle(true).is_none(), "nothing in flight");
}

#[test]
fn work_during_a_commit_is_held_then_begins_the_next_transaction() {
    let (mut txn, _, waited) = committing(Ok(()));
    assert_eq!(txn.work(), Ok(WorkStart::Hold));
    assert_eq!(txn.work(), Ok(WorkStart::Continue));
    assert!(!send(&mut txn, "b"));
    assert!(!send(&mut txn, "c"));
    assert_eq!(txn.name(), "Committing(holding)");
    // A second commit cannot start while one is in flight.
    let (other, _, _) = script(Ok(()));
    assert!(txn.commit_started(other).is_err());
    match txn.settle(true) {
        Some(Settled::Committed {
            begin_with: Some(records),
            ..
        }) => {
            let keys: Vec<_> = records.iter().map(|h| h.key.as_str()).collect();
            assert_eq!(keys, ["b", "c"], "held in order");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(waited.get());
    assert!(txn.is_open());
    assert!(send(&mut txn, "d"), "the next transaction is open: produce");
}

#[test]
fn abortable_commit_failure_fails_then_rewinds_to_idle() {
    let (mut txn, _, _) = committing(Err(TxnFailure::Abort("coordinator moved".into())));
    txn.work().unwrap();
    send(&mut txn, "held");
    match txn.settle(true) {
        Some(Settled::Failed(m)) => assert_eq!(m, "coordinator moved"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(txn.name(), "Failed");
    assert!(txn.work().is_err(), "no work on a failed transaction");
    assert!(txn.route().is_err());
    let plan = txn.abort(Recovery::Rewind).unwrap();
    assert_eq!(
        plan,
        AbortPlan {
            producer: ProducerStep::Abort,
            rewind: true,
            committed: None
        }
    );
    assert_eq!(txn.name(), "Rewinding");
    assert!(txn.work().is_err(), "no work while rewinding");
    assert!(
        txn.abort(Recovery::Rewind).is_err(),
        "one abort per failure"
    );
    txn.rewound().unwrap();
    assert_eq!(txn.name(), "Idle");
    assert!(txn.rewound().is_err());
    assert_eq!(txn.work(), Ok(WorkStart::Begin));
}

#[test]
fn a_failed_step_of_the_open_transaction_aborts_it() {
    let mut txn: Txn<Script> = Txn::Idle;
    assert!(txn.step_failed().is_err(), "nothing open to fail");
    txn.work().unwrap();
    txn.step_failed().unwrap();
    assert_eq!(txn.name(), "Failed");
    assert!(txn.step_failed().is_err());
    let plan = txn.abort(Recovery::Rewind).unwrap();
    assert!(plan.producer == ProducerStep::Abort && plan.rewind);
}

#[test]
fn commit_failing_during_revocation_only_aborts() {
    let (mut txn, _, _) = committing(Err(TxnFailure::Abort("rebalance in progress".into())));
    txn.work().unwrap();
    send(&mut txn, "held");
    assert!(matches!(txn.settle(true), Some(Settled::Failed(_))));
    let plan = txn.abort(Recovery::AbortOnly).unwrap();
    assert_eq!(
        plan,
        AbortPlan {
            producer: ProducerStep::Abort,
            rewind: false,
            committed: None
        }
    );
    assert_eq!(txn.name(), "Idle", "no rebuild: the partitions are dropped");
}

#[test]
fn assignment_lost_mid_commit_waits_for_it_and_drops_held_work() {
    // The commit in flight succeeds: nothing is open in the producer; the held work is dropped.
    let (mut txn, finished, waited) = committing(Ok(()));
    txn.work().unwrap();
    send(&mut txn, "held");
    assert!(!finished.get());
    let plan = txn.abort(Recovery::AbortOnly).unwrap();
    assert!(waited.get(), "the commit in flight is waited for");
    assert_eq!(
        plan,
        AbortPlan {
            producer: ProducerStep::Keep,
            rewind: false,
            committed: Some(0.25)
        }
    );
    assert_eq!(txn.name(), "Idle");
    assert!(txn.settle(true).is_none(), "the held records are gone");

    // The commit in flight fails (stale generation): its transaction is aborted.
    let (mut txn, _, _) = committing(Err(TxnFailure::Abort("stale generation".into())));
    let plan = txn.abort(Recovery::AbortOnly).unwrap();
    assert!(plan.producer == ProducerStep::Abort && !plan.rewind);
    assert_eq!(txn.name(), "Idle");
}

#[test]
fn assignment_lost_with_an_open_transaction_aborts_it() {
    let mut txn: Txn<Script> = Txn::Idle;
    let plan = txn.abort(Recovery::AbortOnly).unwrap();
    assert!(
        plan.producer == ProducerStep::Keep,
        "nothing to abort when idle"
    );
    txn.work().unwrap();
    let plan = txn.abort(Recovery::AbortOnly).unwrap();
    assert!(plan.producer == ProducerStep::Abort);
    assert_eq!(txn.name(), "Idle");
}

#[test]
fn fenced_while_holding_records_drops_them_and_refuses_everything() {
    let (mut txn, finished, _) = committing(Err(TxnFailure::Fatal("fenced".into())));
    txn.work().unwrap();
    send(&mut txn, "held-1");
    send(&mut txn, "held-2");
    finished.set(true);
    match txn.settle(false) {
        Some(Settled::Fenced(m)) => assert_eq!(m, "fenced"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(txn.name(), "Fenced");
    assert!(txn.work().is_err());
    assert!(txn.route().is_err());
    assert!(txn.step_failed().is_err());
    assert!(txn.abort(Recovery::Rewind).is_err());
    assert!(txn.abort(Recovery::AbortOnly).is_err());
    assert_eq!(
        txn.name(),
        "Fenced",
        "a refused abort leaves the state alone"
    );
    assert!(txn.rewound().is_err());
    let (s, _, _) = script(Ok(()));
    assert!(txn.commit_started(s).is_err());
    assert!(txn.settle(true).is_none());
}

#[test]
fn a_fatal_commit_failure_found_by_an_abort_still_aborts_the_producer() {
    let (mut txn, _, _) = committing(Err(TxnFailure::Fatal("producer unusable".into())));
    let plan = txn.abort(Recovery::Rewind).unwrap();
    assert!(
        plan.producer == ProducerStep::Abort,
        "the engine learns from the abort that it is fenced"
    );
    assert_eq!(txn.name(), "Rewinding");
    txn.fence();
    assert_eq!(txn.name(), "Fenced");
}

#[test]
fn records_cannot_be_sent_without_work() {
    let mut txn: Txn<Script> = Txn::Idle;
    assert!(txn.route().is_err());
    let (mut txn, _, _) = committing(Ok(()));
    assert!(
        txn.route().is_err(),
        "committing with no next work: nothing may be sent"
    );
    let (s, _, _) = script(Ok(()));
    let mut idle: Txn<Script> = Txn::Idle;
    assert!(idle.commit_started(s).is_err(), "nothing open to commit");
}

/// A commit with a 100 ms deadline that blocks until the returned sender is dropped.
fn stuck_commit() -> (std::sync::mpsc::Sender<()>, CommitThread) {
    let (release, stuck) = std::sync::mpsc::channel::<()>();
    let commit = CommitThread::spawn(std::time::Duration::from_millis(100), move || {
        let _ = stuck.recv();
        Ok(())
    })
    .unwrap();
    (release, commit)
}

/// A commit thread stuck inside the Kafka client (librdkafka#5456: `send_offsets_to_transaction`
/// ignores its timeout after a coordinator moves) ends as stuck at its deadline instead of
/// leaving the engine committing, with its records held, forever; the abort that follows
/// replaces the producer (never calls the stuck one) and rewinds, or only replaces it when the
/// partitions are going.
#[test]
fn a_commit_stuck_past_its_deadline_replaces_the_producer() {
    for (recovery, after) in [
        (Recovery::Rewind, "Rewinding"),
        (Recovery::AbortOnly, "Idle"),
    ] {
        let (_release, commit) = stuck_commit();
        let mut txn = Txn::Open;
        txn.commit_started(commit).unwrap();
        assert!(matches!(txn.work(), Ok(WorkStart::Hold)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let settled = loop {
            if let Some(s) = txn.settle(false) {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the stuck commit never settled"
            );
            std::thread::yield_now();
        };
        assert!(matches!(settled, Settled::Stuck(m) if m.contains("still running")));
        assert_eq!(txn.name(), "Stuck");
        assert!(txn.work().is_err(), "no work on a stuck producer");
        let plan = txn.abort(recovery).unwrap();
        assert_eq!(
            plan,
            AbortPlan {
                producer: ProducerStep::Replace,
                rewind: recovery == Recovery::Rewind,
                committed: None,
            }
        );
        assert_eq!(txn.name(), after);
    }
}

/// An abort that waits for a commit in flight (the assignment is lost mid-commit) and finds it
/// stuck replaces the producer too.
#[test]
fn an_abort_waiting_on_a_stuck_commit_replaces_the_producer() {
    let (_release, commit) = stuck_commit();
    let mut txn = Txn::Open;
    txn.commit_started(commit).unwrap();
    let plan = txn.abort(Recovery::AbortOnly).unwrap();
    assert!(plan.producer == ProducerStep::Replace, "{plan:?}");
    assert_eq!(txn.name(), "Idle");
}

/// Waiting for a stuck commit (a revocation, shutdown) is bounded by the deadline too, and a
/// commit that ends in time reports its own outcome.
#[test]
fn waiting_for_a_commit_is_bounded_by_its_deadline() {
    let (_release, commit) = stuck_commit();
    let (result, _) = commit.wait();
    assert!(matches!(result, Err(TxnFailure::Stuck(_))), "{result:?}");

    let quick = CommitThread::spawn(std::time::Duration::from_secs(30), || {
        Err(TxnFailure::Abort("x".into()))
    })
    .unwrap();
    assert_eq!(quick.wait().0, Err(TxnFailure::Abort("x".into())));
}
