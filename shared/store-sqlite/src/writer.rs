//! The single writer thread and its group commit.
//!
//! Concurrent commands queue here; the thread takes everything waiting (up to
//! [`GROUP_MAX`]), runs each job in its own savepoint inside one
//! `BEGIN IMMEDIATE … COMMIT`, and only then answers the callers. One fsync
//! serves the whole group, and no caller hears "ok" before its write is durable.

use std::sync::{Arc, mpsc};

use rusqlite::Connection;
use tally_core::StoreError;
use tokio::sync::{oneshot, watch};

use crate::is_busy;

/// A SQLite failure that sank a whole group (its BEGIN, SAVEPOINT or
/// COMMIT): every job of the group is answered with it, the source kept.
#[derive(Debug, thiserror::Error)]
#[error("group commit failed: {0}")]
struct GroupError(Arc<rusqlite::Error>);

impl GroupError {
    fn to_store_error(&self) -> StoreError {
        let error = Box::new(GroupError(Arc::clone(&self.0)));
        if is_busy(&self.0) {
            StoreError::Unavailable(error)
        } else {
            StoreError::Backend(error)
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

/// Runs one group in one transaction, then answers every job.
fn commit_group(conn: &Connection, group: Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let error = GroupError(Arc::new(e));
        for job in group {
            (job(Err(&error)).answer)(None);
        }
        return;
    }
    let mut answers = Vec::with_capacity(group.len());
    for job in group {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            (job(Err(&GroupError(Arc::new(e)))).answer)(None);
            continue;
        }
        let outcome = job(Ok(conn));
        if !outcome.keep {
            let _ = conn.execute_batch("ROLLBACK TO job");
        }
        let _ = conn.execute_batch("RELEASE job");
        answers.push(outcome.answer);
    }
    let commit_error = conn.execute_batch("COMMIT").err().map(|e| GroupError(Arc::new(e)));
    if commit_error.is_some() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    for answer in answers {
        answer(commit_error.as_ref());
    }
}
