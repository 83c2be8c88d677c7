//! The single writer thread and its group commit.
//!
//! Concurrent commands queue here; the thread takes everything waiting (up to
//! [`GROUP_MAX`]), runs each job in its own savepoint inside one
//! `BEGIN IMMEDIATE … COMMIT`, and only then answers the callers. One fsync
//! serves the whole group, and no caller hears "ok" before its write is durable.
//!
//! Some errors make SQLite roll back the whole transaction, not only the
//! job's savepoint (`SQLITE_FULL`, an I/O error, a trigger's
//! `RAISE(ROLLBACK, …)`). The writer checks after every job: if the
//! transaction is gone, the jobs run before in the group are answered as
//! failed and not written (safe to retry), and the jobs not yet run start a
//! fresh transaction. It must never answer "failed" for a write that
//! commits, nor "ok" for one that was rolled back.

use std::collections::VecDeque;
use std::sync::{Arc, mpsc};

use rusqlite::Connection;
use tally_core::StoreError;
use tokio::sync::{oneshot, watch};

use crate::is_busy;

/// Why a job's write was not kept although the job itself did not fail.
#[derive(Debug, thiserror::Error)]
enum GroupError {
    /// A SQLite failure that sank a whole group (its BEGIN, SAVEPOINT or
    /// COMMIT): every job of the group is answered with it, the source kept.
    #[error("group commit failed: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    /// SQLite rolled back the group's transaction while running another job
    /// of it: this job's changes went with it. Nothing was written: retry.
    #[error("SQLite rolled back the group commit's transaction during another write; this write was not kept")]
    RolledBack,
}

impl GroupError {
    fn to_store_error(&self) -> StoreError {
        match self {
            Self::Sqlite(source) => {
                let error = Box::new(Self::Sqlite(Arc::clone(source)));
                if is_busy(source) {
                    StoreError::Unavailable(error)
                } else {
                    StoreError::Backend(error)
                }
            }
            Self::RolledBack => StoreError::Unavailable(Box::new(Self::RolledBack)),
        }
    }
}

/// Most jobs committed in one transaction.
const GROUP_MAX: usize = 512;

/// Answers a job's caller, given the group's commit error if the commit failed.
type Answer = Box<dyn FnOnce(Option<&GroupError>) + Send>;

/// What a job asks for once its savepoint ran: keep or undo its changes, and
/// how to answer its caller once the group's commit is known.
struct JobOutcome {
    keep: bool,
    answer: Answer,
}

/// A queued write: runs on the writer's connection, or is told why it cannot.
type Job = Box<dyn FnOnce(Result<&Connection, &GroupError>) -> JobOutcome + Send>;

/// Handle to the writer thread.
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn start(conn: Connection, committed: watch::Sender<u64>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tally-sqlite-writer".into())
            .spawn(move || run(conn, queue, committed))?;
        Ok(Self { jobs })
    }

    /// Queues `write` and waits until its group is committed.
    pub(crate) async fn submit<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => write(conn),
                Err(e) => Err(e.to_store_error()),
            };
            JobOutcome {
                keep: result.is_ok(),
                answer: Box::new(move |commit_error| {
                    let result = match (result, commit_error) {
                        (Ok(_), Some(e)) => Err(e.to_store_error()),
                        (result, _) => result,
                    };
                    let _ = reply.send(result);
                }),
            }
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Backend("the SQLite writer thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Backend("the SQLite writer thread dropped a write".into()))?
    }
}

fn run(conn: Connection, queue: mpsc::Receiver<Job>, committed: watch::Sender<u64>) {
    let mut commits = 0u64;
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&conn, group);
        commits += 1;
        committed.send_replace(commits);
    }
}

/// Runs one group, in as many transactions as SQLite's rollbacks force,
/// then answers every job.
fn commit_group(conn: &Connection, group: Vec<Job>) {
    let mut waiting: VecDeque<Job> = group.into();
    // Each pass runs at least one job, so this ends.
    while !waiting.is_empty() {
        commit_some(conn, &mut waiting);
    }
}

/// Runs jobs from `waiting` in one transaction until it is empty or SQLite
/// rolls the transaction back, then answers the jobs it ran.
fn commit_some(conn: &Connection, waiting: &mut VecDeque<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let error = GroupError::Sqlite(Arc::new(e));
        for job in waiting.drain(..) {
            (job(Err(&error)).answer)(None);
        }
        return;
    }
    let mut answers = Vec::with_capacity(waiting.len());
    while let Some(job) = waiting.pop_front() {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            (job(Err(&GroupError::Sqlite(Arc::new(e)))).answer)(None);
            continue;
        }
        let outcome = job(Ok(conn));
        if conn.is_autocommit() {
            // The whole transaction is gone, this job's changes and its
            // predecessors' with it. A SAVEPOINT now would open a new
            // transaction that its RELEASE commits: the jobs left must not
            // run in this one.
            answers.push(outcome.answer);
            for answer in answers {
                answer(Some(&GroupError::RolledBack));
            }
            return;
        }
        if !outcome.keep {
            let _ = conn.execute_batch("ROLLBACK TO job");
        }
        let _ = conn.execute_batch("RELEASE job");
        answers.push(outcome.answer);
    }
    let commit_error = conn
        .execute_batch("COMMIT")
        .err()
        .map(|e| GroupError::Sqlite(Arc::new(e)));
    if commit_error.is_some() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for answer in answers {
        answer(commit_error.as_ref());
    }
}
