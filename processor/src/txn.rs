//! The life of the engine's Kafka transaction as one state machine, with its legal transitions.
//!
//! ```text
//! Idle ──work──▶ Open ──start_commit──▶ Committing{next: None} ──settle: ok──▶ Idle
//!                 ▲                        │ work (records held)
//!                 │                        ▼
//!                 └──────settle: ok─── Committing{next: Some(held)}
//! Open ──a step fails──▶ Failed ◀──settle: abortable── Committing{..}
//! Committing{..} ──settle: past its deadline──▶ Stuck
//! Failed / Open / Committing / Stuck ──abort(AbortOnly)──▶ Idle
//! Failed / Open / Committing / Stuck ──abort(Rewind)──▶ Rewinding ──rewound──▶ Idle
//! any ──settle: fatal, begin fails, abort fails while rewinding──▶ Fenced (terminal)
//! ```
//!
//! Only this module changes the state; the engine asks it what to do (begin, produce or hold a
//! record, abort the producer's transaction, rebuild and rewind) and does the Kafka calls. The
//! recovery table of ARCHITECTURE.md maps onto it:
//!
//! | Failure | Transition |
//! |---|---|
//! | retriable transaction error | none: retried inside the commit (`with_retries`), the state stays `Committing` |
//! | abortable error (commit, flush, announcement, changelog write) | `Committing`/`Open` → `Failed` → `abort(Rewind)` → `Rewinding` → `Idle` |
//! | commit fails while partitions are revoked | `Committing` → `Failed` → `abort(AbortOnly)` → `Idle` (the partitions' next owner restores them) |
//! | assignment lost (mid-commit or not) | any → `abort(AbortOnly)`: waits for the commit in flight, aborts what is open, drops held records → `Idle` |
//! | fatal (fenced, producer unusable), also while records are held | → `Fenced`: held records dropped, every later step refused, the engine exits |
//! | commit still running past its deadline (a client stuck on a moved coordinator) | `Committing` → `Stuck` ([`CommitThread`]) → `abort(..)`: the producer is replaced (a new one with the same transactional id settles the stuck transaction), no abort call on the stuck one |
//! | crash (`kill -9`) | no transition: the broker aborts the open transaction (`init_transactions` of the restarted instance, or the transaction timeout) |

/// Why a transaction step failed, and what that allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxnFailure {
    /// Abort the transaction; the producer stays usable.
    Abort(String),
    /// The producer is fenced or unusable: the instance must restart.
    Fatal(String),
    /// The Kafka client did not return within the commit's deadline: the producer must be
    /// replaced (its calls may never return), the transaction's outcome is unknown until the
    /// new producer's `init_transactions` has settled it.
    Stuck(String),
}

/// The outcome of a commit and how long it took, in seconds.
pub(crate) type CommitOutcome = (Result<(), TxnFailure>, f64);

/// A commit running elsewhere (a helper thread in the engine, a scripted outcome in tests).
pub(crate) trait InFlight {
    /// Whether the commit has ended (waiting for it would not block).
    fn is_finished(&self) -> bool;
    /// Waits for the commit's outcome.
    fn wait(self) -> CommitOutcome;
}

/// A commit running on a helper thread, with a deadline.
///
/// librdkafka's `send_offsets_to_transaction` can block past its own timeout when the group
/// coordinator it cached went away (a broker restart: confluentinc/librdkafka#5456, #5511),
/// and the engine would then hold its records forever with the commit in flight. Past the
/// deadline the commit counts as stuck: the state becomes `Stuck` and the engine replaces its
/// producer. That is safe at any instant: the new producer (same transactional id) fences the
/// stuck one and completes or aborts its transaction, and the engine then rebuilds its state
/// from the committed changelog and offsets, whichever way it went.
pub(crate) struct CommitThread {
    /// (In a mutex only so the engine stays `Sync`; one owner ever reads it.)
    outcome: std::sync::Mutex<std::sync::mpsc::Receiver<CommitOutcome>>,
    handle: std::thread::JoinHandle<()>,
    started: std::time::Instant,
    deadline: std::time::Duration,
}

impl CommitThread {
    /// Runs `commit` on a thread named `txn-commit`.
    pub(crate) fn spawn(
        deadline: std::time::Duration,
        commit: impl FnOnce() -> Result<(), TxnFailure> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, outcome) = std::sync::mpsc::sync_channel(1);
        let started = std::time::Instant::now();
        let handle = std::thread::Builder::new()
            .name("txn-commit".into())
            .spawn(move || {
                let result = commit();
                // The receiver is gone only if the engine gave up on this commit.
                let _ = tx.send((result, started.elapsed().as_secs_f64()));
            })?;
        Ok(Self {
            outcome: std::sync::Mutex::new(outcome),
            handle,
            started,
            deadline,
        })
    }
}

impl InFlight for CommitThread {
    fn is_finished(&self) -> bool {
        self.handle.is_finished() || self.started.elapsed() >= self.deadline
    }

    fn wait(self) -> CommitOutcome {
        let left = self.deadline.saturating_sub(self.started.elapsed());
        let outcome = match self.outcome.into_inner() {
            Ok(rx) => rx.recv_timeout(left),
            Err(poisoned) => poisoned.into_inner().recv_timeout(left),
        };
        match outcome {
            Ok(outcome) => outcome,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => overdue(self.started, self.deadline),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => (
                Err(TxnFailure::Fatal("commit thread panicked".into())),
                self.started.elapsed().as_secs_f64(),
            ),
        }
    }
}

fn overdue(started: std::time::Instant, deadline: std::time::Duration) -> CommitOutcome {
    let secs = started.elapsed().as_secs_f64();
    let message = format!(
        "the commit was still running after {secs:.1} s (deadline {deadline:?}): the Kafka client is stuck, replacing the producer"
    );
    (Err(TxnFailure::Stuck(message)), secs)
}

/// A record waiting for its transaction to begin.
pub(crate) struct Held {
    pub topic: String,
    pub key: String,
    pub partition: Option<i32>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<rdkafka::message::OwnedHeaders>,
}

/// What a failed transaction leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Rebuild every owned partition from the committed changelog and seek the consumer back
    /// to the committed offsets: the aborted work is redone.
    Rewind,
    /// Only abort: the partitions are being revoked (or were lost), their state is dropped and
    /// their next owner restores it. Rebuilding from inside a rebalance callback could stall
    /// the consumer.
    AbortOnly,
}

/// The transaction's state.
pub(crate) enum Txn<C> {
    /// No work since the last commit and no producer transaction open.
    Idle,
    /// Work pending in the producer's open transaction.
    Open,
    /// The previous transaction commits on `commit`; `next` holds the records of the work done
    /// meanwhile (`None`: no work yet), sent once the commit has ended and the next transaction
    /// has begun.
    Committing { commit: C, next: Option<Vec<Held>> },
    /// A step failed: the producer's transaction must be aborted and nothing of it may commit.
    Failed,
    /// The commit did not return within its deadline: the producer must be replaced, not
    /// called again.
    Stuck,
    /// Aborted; the owned partitions' state is being rebuilt and the consumer rewound.
    Rewinding,
    /// Fenced or the producer is unusable: terminal.
    Fenced,
}

/// A transition the state machine refuses (a bug in the engine, never an input's fault).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("illegal transaction transition: {event} in state {state}")]
pub(crate) struct Illegal {
    pub event: &'static str,
    pub state: &'static str,
}

/// What new work requires of the engine.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WorkStart {
    /// The work continues the current transaction.
    Continue,
    /// A new transaction's work starts and the producer must begin it now.
    Begin,
    /// A new transaction's work starts while the previous one commits: its records are held.
    Hold,
}

/// Where a record goes.
pub(crate) enum Route<'a> {
    /// Into the producer's open transaction.
    Produce,
    /// Into the held records of the next transaction.
    Hold(&'a mut Vec<Held>),
}

/// How a commit in flight ended.
#[derive(Debug)]
pub(crate) enum Settled {
    /// Committed. With `Some`, the next transaction must begin now and send these records.
    Committed {
        seconds: f64,
        begin_with: Option<Vec<Held>>,
    },
    /// Abortable failure: the state is `Failed`, held records are dropped.
    Failed(String),
    /// Fatal failure: the state is `Fenced`.
    Fenced(String),
    /// Past its deadline: the state is `Stuck`, held records are dropped.
    Stuck(String),
}

/// What an abort does with the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProducerStep {
    /// Nothing is open in it (or what was in flight committed).
    Keep,
    /// Abort its open transaction.
    Abort,
    /// It is stuck: replace it (the new one settles its transaction), never call it again.
    Replace,
}

/// What an abort requires of the engine.
#[derive(Debug, PartialEq)]
pub(crate) struct AbortPlan {
    /// What to do with the producer.
    pub producer: ProducerStep,
    /// Rebuild the state and rewind the consumer, then call [`Txn::rewound`].
    pub rewind: bool,
    /// A commit that was in flight ended successfully before the abort.
    pub committed: Option<f64>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("topic", &self.topic)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<C: InFlight> Txn<C> {
    /// The state's name (logs, errors).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Txn::Idle => "Idle",
            Txn::Open => "Open",
            Txn::Committing { next: None, .. } => "Committing",
            Txn::Committing { next: Some(_), .. } => "Committing(holding)",
            Txn::Failed => "Failed",
            Txn::Stuck => "Stuck",
            Txn::Rewinding => "Rewinding",
            Txn::Fenced => "Fenced",
        }
    }

    fn illegal(&self, event: &'static str) -> Illegal {
        Illegal {
            event,
            state: self.name(),
        }
    }

    /// Whether a commit is in flight.
    pub(crate) fn is_committing(&self) -> bool {
        matches!(self, Txn::Committing { .. })
    }

    /// Whether the producer's transaction is open with work a commit can take.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self, Txn::Open)
    }

    /// An input, a timer or an announcement is about to produce work.
    pub(crate) fn work(&mut self) -> Result<WorkStart, Illegal> {
        match self {
            Txn::Open | Txn::Committing { next: Some(_), .. } => Ok(WorkStart::Continue),
            Txn::Idle => {
                *self = Txn::Open;
                Ok(WorkStart::Begin)
            }
            Txn::Committing { next, .. } => {
                *next = Some(Vec::new());
                Ok(WorkStart::Hold)
            }
            Txn::Failed | Txn::Stuck | Txn::Rewinding | Txn::Fenced => Err(self.illegal("work")),
        }
    }

    /// Where the next record of the pending work goes.
    pub(crate) fn route(&mut self) -> Result<Route<'_>, Illegal> {
        match self {
            Txn::Open => Ok(Route::Produce),
            Txn::Committing {
                next: Some(held), ..
            } => Ok(Route::Hold(held)),
            _ => Err(self.illegal("send")),
        }
    }

    /// The open transaction's commit was handed to `commit`.
    pub(crate) fn commit_started(&mut self, commit: C) -> Result<(), Illegal> {
        match self {
            Txn::Open => {
                *self = Txn::Committing { commit, next: None };
                Ok(())
            }
            _ => Err(self.illegal("commit_started")),
        }
    }

    /// A step of the open transaction failed (a produce, an announcement, the group metadata):
    /// it must be aborted.
    pub(crate) fn step_failed(&mut self) -> Result<(), Illegal> {
        match self {
            Txn::Open => {
                *self = Txn::Failed;
                Ok(())
            }
            _ => Err(self.illegal("step_failed")),
        }
    }

    /// Takes the outcome of the commit in flight: waiting for it when `wait`, else only if it
    /// has ended (`None`: no commit in flight, or still running).
    pub(crate) fn settle(&mut self, wait: bool) -> Option<Settled> {
        if !matches!(self, Txn::Committing { commit, .. } if wait || commit.is_finished()) {
            return None;
        }
        let Txn::Committing { commit, next } = std::mem::replace(self, Txn::Failed) else {
            return None;
        };
        let (result, seconds) = commit.wait();
        Some(match result {
            Ok(()) => {
                *self = if next.is_some() { Txn::Open } else { Txn::Idle };
                Settled::Committed {
                    seconds,
                    begin_with: next,
                }
            }
            // The failed transaction is still open in the producer (state `Failed`); the held
            // work is dropped with it: it is redone from the committed offsets.
            Err(TxnFailure::Abort(m)) => Settled::Failed(m),
            Err(TxnFailure::Fatal(m)) => {
                *self = Txn::Fenced;
                Settled::Fenced(m)
            }
            Err(TxnFailure::Stuck(m)) => {
                *self = Txn::Stuck;
                Settled::Stuck(m)
            }
        })
    }

    /// Ends the pending work without committing it: waits for a commit in flight, says whether
    /// the producer has a transaction to abort (or is stuck and must be replaced), drops held
    /// records, and moves to `Rewinding`
    /// (`Recovery::Rewind`) or `Idle`.
    pub(crate) fn abort(&mut self, recovery: Recovery) -> Result<AbortPlan, Illegal> {
        let (producer, committed) = match std::mem::replace(self, Txn::Idle) {
            Txn::Idle => (ProducerStep::Keep, None),
            Txn::Open | Txn::Failed => (ProducerStep::Abort, None),
            Txn::Stuck => (ProducerStep::Replace, None),
            Txn::Committing { commit, .. } => match commit.wait() {
                (Ok(()), secs) => (ProducerStep::Keep, Some(secs)),
                (Err(TxnFailure::Stuck(_)), _) => (ProducerStep::Replace, None),
                // Abortable or not, the producer's transaction did not commit: abort it (a
                // fenced producer refuses, and the engine reports that).
                (Err(_), _) => (ProducerStep::Abort, None),
            },
            state @ (Txn::Rewinding | Txn::Fenced) => {
                *self = state;
                return Err(self.illegal("abort"));
            }
        };
        let rewind = recovery == Recovery::Rewind;
        if rewind {
            *self = Txn::Rewinding;
        }
        Ok(AbortPlan {
            producer,
            rewind,
            committed,
        })
    }

    /// The state was rebuilt and the consumer rewound: ready for new work.
    pub(crate) fn rewound(&mut self) -> Result<(), Illegal> {
        match self {
            Txn::Rewinding => {
                *self = Txn::Idle;
                Ok(())
            }
            _ => Err(self.illegal("rewound")),
        }
    }

    /// The producer is fenced or unusable: nothing of the pending work may commit.
    pub(crate) fn fence(&mut self) {
        *self = Txn::Fenced;
    }
}

#[cfg(test)]
#[path = "txn_tests.rs"]
mod tests;
